/**
 * client_assertions_used: the jti of every private_key_jwt assertion accepted, kept until the assertion
 * expires, so that none is accepted twice on any replica. Every statement on the table is here; the token
 * endpoint embeds INSERT_USED_ASSERTION in its decision read (one round trip), the other routes run it alone.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';

/**
 * Records an assertion as used, returning a row only when it was not used before. Takes the connector id,
 * the jti hash and the expiry as the given parameter placeholders, so a caller can embed it in a CTE.
 */
export const insertUsedAssertion = (connectorId: string, jtiHash: string, expiresAt: string) =>
  `INSERT INTO client_assertions_used (connector_id, jti_hash, expires_at) VALUES (${connectorId}, ${jtiHash}, ${expiresAt})
    ON CONFLICT DO NOTHING RETURNING 1`;

const PRUNE_BATCH = 10_000;

@Injectable()
export class UsedAssertionsRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** True when the assertion was fresh (and is now recorded), false on a replay. */
  async recordFresh(connectorId: string, jtiHash: Buffer, expiresAt: Date): Promise<boolean> {
    const rows: unknown[] = await this.db.query(insertUsedAssertion('$1', '$2', '$3'), [
      connectorId,
      jtiHash,
      expiresAt,
    ]);
    return rows.length > 0;
  }

  /**
   * Forgets assertions that could no longer be accepted anyway; run by a background job. Batches of 10,000
   * until none is left (at most a million per run), so that the table follows the rate of private_key_jwt
   * requests instead of growing past what one batch per run removes.
   */
  async pruneExpired(): Promise<number> {
    let deleted = 0;
    for (let round = 0; round < 100; round++) {
      const res: unknown = await this.db.query(
        `DELETE FROM client_assertions_used WHERE ctid IN (
           SELECT ctid FROM client_assertions_used WHERE expires_at < now() LIMIT ${PRUNE_BATCH})`,
      );
      const n = (res as [unknown, number])[1];
      deleted += n;
      if (n < PRUNE_BATCH) break;
    }
    return deleted;
  }
}
