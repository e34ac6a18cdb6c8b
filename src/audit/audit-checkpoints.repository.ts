/** Every statement on audit_checkpoints (append-only): the sealer's INSERT and the export's reads. */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';

export interface CheckpointRow {
  chain: string;
  seq: string;
  first_pos: string;
  last_pos: string;
  body: string;
  sig: string;
}

export interface NewCheckpoint {
  chain: string;
  seq: number;
  tenantId: string | null;
  firstPos: number;
  lastPos: number;
  firstAt: Date;
  lastAt: Date;
  sealedAt: Date;
  kid: string;
  body: string;
  sig: string;
}

@Injectable()
export class AuditCheckpointsRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  async insert(m: EntityManager, c: NewCheckpoint): Promise<void> {
    await m.query(
      `INSERT INTO audit_checkpoints
         (chain, seq, tenant_id, first_pos, last_pos, first_at, last_at, sealed_at, kid, body, sig)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
      [
        c.chain,
        c.seq,
        c.tenantId,
        c.firstPos,
        c.lastPos,
        c.firstAt,
        c.lastAt,
        c.sealedAt,
        c.kid,
        c.body,
        c.sig,
      ],
    );
  }

  /**
   * The seq numbers of the first and last of a chain's checkpoints whose events overlap [from, to) (either
   * bound optional). Everything between them is exported, so an export's checkpoints are always consecutive.
   */
  async seqRange(
    chain: string,
    range: { from: Date | null; to: Date | null },
  ): Promise<{ first: string; last: string } | null> {
    const [row] = await this.db.query<{ first: string | null; last: string | null }[]>(
      `SELECT (SELECT min(seq) FROM audit_checkpoints WHERE chain = $1 AND ($2::timestamptz IS NULL OR last_at >= $2))::text AS first,
              (SELECT max(seq) FROM audit_checkpoints WHERE chain = $1 AND ($3::timestamptz IS NULL OR first_at < $3))::text AS last`,
      [chain, range.from, range.to],
    );
    if (row.first === null || row.last === null || BigInt(row.first) > BigInt(row.last)) return null;
    return { first: row.first, last: row.last };
  }

  /** Up to `limit` of a chain's checkpoints with seq in (afterSeq, lastSeq], in seq order. */
  page(chain: string, afterSeq: string, lastSeq: string, limit: number): Promise<CheckpointRow[]> {
    return this.db.query(
      `SELECT chain, seq::text AS seq, first_pos::text AS first_pos, last_pos::text AS last_pos, body, sig
         FROM audit_checkpoints WHERE chain = $1 AND seq > $2::bigint AND seq <= $3::bigint
        ORDER BY seq LIMIT $4`,
      [chain, afterSeq, lastSeq, limit],
    );
  }
}
