/**
 * Every statement on pending_revocations: the tokens of revoked connections still to be revoked at the
 * provider (RFC 7009), as sealed envelopes moved from the connection row. Revoking a connection queues them,
 * ProviderRevocationService claims, retries and erases them, and deleting a custom provider drops its own.
 * Deleting a tenant revokes all its connections at once (`revokeAllOfTenant`: the one statement that moves the
 * tokens of every live connection of the tenant and marks the rows revoked, as markRevoked does for one, so that
 * a tenant's thousands of connections cost one round trip; with the two counts of its connections beside it,
 * the only statements here that touch connections) and drops what is still queued when it is shredded.
 */
import { randomUUID } from 'node:crypto';
import { Injectable } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import { returned } from '../database/sql.js';

/** A queued token as the revocation job claims it. */
export interface PendingRevocationRow {
  id: string;
  tenant_id: string;
  connection_id: string;
  provider: string;
  token_type: 'refresh_token' | 'access_token';
  token: Buffer;
  attempts: number;
}

/** A token to queue: its sealed envelope, as it was on the connection row. */
export interface QueuedRevocation {
  tenantId: string;
  connectionId: string;
  provider: string;
  tokenType: string;
  token: Buffer;
  /** The order among the connection's tokens: the refresh token first. */
  position: number;
}

@Injectable()
export class PendingRevocationsRepository {
  /** Queues a token for revocation at the provider. */
  async enqueue(m: EntityManager, r: QueuedRevocation): Promise<void> {
    await m.query(
      `INSERT INTO pending_revocations (id, tenant_id, connection_id, provider, token_type, token, position)
           VALUES ($1, $2, $3, $4, $5, $6, $7)`,
      [randomUUID(), r.tenantId, r.connectionId, r.provider, r.tokenType, r.token, r.position],
    );
  }

  /**
   * Claims the next due token (of one connection, or any), locked until the caller's transaction ends and
   * skipped by other claimers meanwhile. A connection's earliest token comes first: its refresh token before
   * its access token.
   */
  async claimDue(m: EntityManager, connectionId: string | null): Promise<PendingRevocationRow | undefined> {
    const rows: PendingRevocationRow[] = await m.query(
      `SELECT id, tenant_id, connection_id, provider, token_type, token, attempts FROM pending_revocations p
            WHERE next_attempt_at <= now() AND ($1::uuid IS NULL OR connection_id = $1)
              AND NOT EXISTS (SELECT 1 FROM pending_revocations q
                               WHERE q.connection_id = p.connection_id AND q.position < p.position)
            ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED`,
      [connectionId],
    );
    return rows[0];
  }

  /** Erases a token: revoked, or given up on. */
  async delete(m: EntityManager, id: string): Promise<void> {
    await m.query('DELETE FROM pending_revocations WHERE id = $1', [id]);
  }

  /** Counts a failed attempt and holds the next one back by `delaySeconds`. */
  async recordFailure(m: EntityManager, id: string, error: string, delaySeconds: number): Promise<void> {
    await m.query(
      `UPDATE pending_revocations SET attempts = attempts + 1, last_error = $2,
               next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1`,
      [id, error, delaySeconds],
    );
  }

  /** The providers of the tenant's live OAuth connections (those whose tokens could be revoked somewhere). */
  async liveOauthProvidersOfTenant(m: EntityManager, tenantId: string): Promise<string[]> {
    const rows: { provider: string }[] = await m.query(
      `SELECT DISTINCT provider FROM connections
        WHERE tenant_id = $1 AND revoked_at IS NULL AND type = 'oauth2'`,
      [tenantId],
    );
    return rows.map((r) => r.provider);
  }

  /**
   * Revokes every live connection of the tenant (a tenant being deleted), in the caller's transaction: the
   * tokens of OAuth connections to `revocable` providers are queued, refresh token first, as the same sealed
   * envelopes, and every row loses its secrets and becomes a `revoked` tombstone. Returns how many connections
   * were revoked and how many tokens queued.
   */
  async revokeAllOfTenant(
    m: EntityManager,
    tenantId: string,
    revocable: string[],
  ): Promise<{ connections: number; queued: number }> {
    const rows: { connections: number; queued: number }[] = await m.query(
      `WITH live AS (
         SELECT id, provider, type, secret, refresh_token FROM connections
          WHERE tenant_id = $1 AND revoked_at IS NULL FOR UPDATE
       ), queued AS (
         INSERT INTO pending_revocations (id, tenant_id, connection_id, provider, token_type, token, position)
         SELECT gen_random_uuid(), $1, l.id, l.provider, t.token_type, t.token, t.position
           FROM live l
           CROSS JOIN LATERAL (VALUES ('refresh_token', l.refresh_token, 0), ('access_token', l.secret, 1))
                AS t(token_type, token, position)
          WHERE l.type = 'oauth2' AND l.provider = ANY($2::text[]) AND t.token IS NOT NULL
         RETURNING 1
       ), revoked AS (
         UPDATE connections c SET status = 'revoked', secret = NULL, refresh_token = NULL, revoked_at = now(),
                version = c.version + 1, updated_at = now()
           FROM live WHERE c.id = live.id
         RETURNING 1
       )
       SELECT (SELECT count(*) FROM revoked)::int AS connections, (SELECT count(*) FROM queued)::int AS queued`,
      [tenantId, revocable],
    );
    return rows[0];
  }

  /** How many of the tenant's tokens are still queued. */
  async countForTenant(m: EntityManager, tenantId: string): Promise<number> {
    const rows: { n: number }[] = await m.query(
      'SELECT count(*)::int AS n FROM pending_revocations WHERE tenant_id = $1',
      [tenantId],
    );
    return rows[0].n;
  }

  /** How many connection rows (live or tombstones) the tenant has: what shredding it destroys. */
  async connectionsOfTenant(m: EntityManager, tenantId: string): Promise<number> {
    const rows: { n: number }[] = await m.query(
      'SELECT count(*)::int AS n FROM connections WHERE tenant_id = $1',
      [tenantId],
    );
    return rows[0].n;
  }

  /** Drops every token still queued for the tenant (it is being shredded); returns how many. */
  async deleteForTenant(m: EntityManager, tenantId: string): Promise<number> {
    const rows = returned<{ id: string }>(
      await m.query('DELETE FROM pending_revocations WHERE tenant_id = $1 RETURNING id', [tenantId]),
    );
    return rows.length;
  }

  /** Drops every token queued for the tenant's provider (a custom provider being deleted); returns how many. */
  async deleteForProvider(m: EntityManager, tenantId: string, provider: string): Promise<number> {
    const rows = returned<{ id: string }>(
      await m.query('DELETE FROM pending_revocations WHERE tenant_id = $1 AND provider = $2 RETURNING id', [
        tenantId,
        provider,
      ]),
    );
    return rows.length;
  }
}
