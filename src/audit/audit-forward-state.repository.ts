/** Every statement on audit_forward_state: how far each chain has been forwarded. */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';

@Injectable()
export class AuditForwardStateRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /**
   * Chains with checkpoints not forwarded yet, and the last seq forwarded. A chain is first seen here with
   * seq 0, so forwarding switched on later starts at the chain's first checkpoint.
   */
  behind(): Promise<{ chain: string; seq: string }[]> {
    return this.db.query(
      `SELECT h.chain, coalesce(f.seq, 0)::text AS seq
         FROM audit_chain_heads h LEFT JOIN audit_forward_state f ON f.chain = h.chain
        WHERE h.checkpoint_seq > coalesce(f.seq, 0) ORDER BY h.chain`,
    );
  }

  /**
   * Locks the chain's forwarding for this transaction, skipping it when another process holds it; the last
   * seq forwarded, or null when skipped.
   */
  async lock(m: EntityManager, chain: string): Promise<string | null> {
    await m.query(`INSERT INTO audit_forward_state (chain) VALUES ($1) ON CONFLICT (chain) DO NOTHING`, [
      chain,
    ]);
    const rows = await m.query<{ seq: string }[]>(
      `SELECT seq::text AS seq FROM audit_forward_state WHERE chain = $1 FOR UPDATE SKIP LOCKED`,
      [chain],
    );
    return rows[0]?.seq ?? null;
  }

  async advance(m: EntityManager, chain: string, seq: string): Promise<void> {
    await m.query('UPDATE audit_forward_state SET seq = $2 WHERE chain = $1', [chain, seq]);
  }
}
