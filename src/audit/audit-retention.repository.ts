/**
 * Every statement on audit_truncations (append-only), and retention's reads and removals: which of
 * audit_events' partitions hold months past the cutoff, what each chain loses, and, as the schema owner in one
 * transaction, the removal itself (the only statements anywhere that delete audit rows: the owner lifts the
 * append-only triggers for that transaction alone, which no other session ever sees).
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';

export interface TruncationRow {
  chain: string;
  seq: string;
  through_pos: string;
  body: string;
  sig: string;
}

export interface NewTruncation {
  chain: string;
  seq: number;
  tenantId: string | null;
  throughPos: number;
  nextSeq: number;
  cutoff: Date;
  truncatedAt: Date;
  kid: string;
  body: string;
  sig: string;
}

export interface ChainLoss {
  chain: string;
  tenant_id: string | null;
  /** The highest position of an event that occurred before the cutoff. */
  max_pos: string;
  events: string;
  checkpointed_pos: string;
  checkpoint_seq: string;
}

/** Monthly partitions are named audit_events_YYYY_MM (migration AuditPartitions). */
const PARTITION_NAME = /^audit_events_(\d{4})_(\d{2})$/;

@Injectable()
export class AuditRetentionRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** The chain's latest truncation record, if it has one. */
  async latest(chain: string): Promise<TruncationRow | undefined> {
    const [row] = await this.db.query<TruncationRow[]>(
      `SELECT chain, seq::text AS seq, through_pos::text AS through_pos, body, sig
         FROM audit_truncations WHERE chain = $1 ORDER BY seq DESC LIMIT 1`,
      [chain],
    );
    return row;
  }

  /** Whether the connection's role owns audit_events (and may lift its triggers and drop its partitions). */
  async ownsAuditTrail(m: EntityManager): Promise<boolean> {
    const [{ owns }] = await m.query<{ owns: boolean }[]>(
      `SELECT pg_has_role(current_user, c.relowner, 'USAGE') AS owns FROM pg_class c
        WHERE c.oid = to_regclass('audit_events')`,
    );
    return owns;
  }

  /** audit_events' monthly partitions that end on or before the cutoff (all of their events precede it). */
  async partitionsBefore(m: EntityManager, cutoff: Date): Promise<string[]> {
    const rows = await m.query<{ name: string }[]>(
      `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass('audit_events') ORDER BY c.relname`,
    );
    return rows
      .map((r) => r.name)
      .filter((name) => {
        const match = PARTITION_NAME.exec(name);
        return match !== null && Date.UTC(Number(match[1]), Number(match[2]), 1) <= cutoff.getTime();
      });
  }

  /** Whether any event occurred before the cutoff (in any partition, the default one included). */
  async anyBefore(m: EntityManager, cutoff: Date): Promise<boolean> {
    const [{ any }] = await m.query<{ any: boolean }[]>(
      'SELECT EXISTS (SELECT 1 FROM audit_events WHERE occurred_at < $1) AS any',
      [cutoff],
    );
    return any;
  }

  /** An event before the cutoff that the sealer has not linked (retention waits for it), if any. */
  async unlinkedBefore(m: EntityManager, cutoff: Date): Promise<string | undefined> {
    const [row] = await m.query<{ id: string }[]>(
      `SELECT e.id::text AS id FROM audit_events e
        WHERE e.occurred_at < $1 AND NOT EXISTS (SELECT 1 FROM audit_chain l WHERE l.event_id = e.id) LIMIT 1`,
      [cutoff],
    );
    return row?.id;
  }

  /** Per chain, what removing the events before the cutoff takes away. */
  losses(m: EntityManager, cutoff: Date): Promise<ChainLoss[]> {
    return m.query(
      `SELECT l.chain, h.tenant_id, max(l.pos)::text AS max_pos, count(*)::text AS events,
              h.checkpointed_pos::text AS checkpointed_pos, h.checkpoint_seq::text AS checkpoint_seq
         FROM audit_events e JOIN audit_chain l ON l.event_id = e.id JOIN audit_chain_heads h ON h.chain = l.chain
        WHERE e.occurred_at < $1
        GROUP BY l.chain, h.tenant_id, h.checkpointed_pos, h.checkpoint_seq ORDER BY l.chain`,
      [cutoff],
    );
  }

  /** The heads a chain's checkpoints state, by their last position, for positions in (after, through]. */
  async checkpointHeads(chain: string, after: number, through: number): Promise<Map<number, string>> {
    const rows = await this.db.query<{ last_pos: string; body: string }[]>(
      `SELECT last_pos::text AS last_pos, body FROM audit_checkpoints
        WHERE chain = $1 AND last_pos > $2 AND last_pos <= $3`,
      [chain, after, through],
    );
    return new Map(rows.map((r) => [Number(r.last_pos), (JSON.parse(r.body) as { head: string }).head]));
  }

  /** The seq of the chain's first checkpoint that covers a position after `pos`, if one exists. */
  async firstCheckpointAfter(chain: string, pos: number): Promise<number | undefined> {
    const [row] = await this.db.query<{ seq: string | null }[]>(
      'SELECT min(seq)::text AS seq FROM audit_checkpoints WHERE chain = $1 AND last_pos > $2',
      [chain, pos],
    );
    return row.seq === null ? undefined : Number(row.seq);
  }

  /** Every chain head, locked for the caller's transaction (the sealer's checkpoints wait). */
  async lockHeads(m: EntityManager): Promise<void> {
    await m.query('SELECT chain FROM audit_chain_heads ORDER BY chain FOR UPDATE');
  }

  async insertTruncation(m: EntityManager, t: NewTruncation): Promise<void> {
    await m.query(
      `INSERT INTO audit_truncations
         (chain, seq, tenant_id, through_pos, next_seq, cutoff, truncated_at, kid, body, sig)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
      [t.chain, t.seq, t.tenantId, t.throughPos, t.nextSeq, t.cutoff, t.truncatedAt, t.kid, t.body, t.sig],
    );
  }

  /**
   * As the schema owner, inside its transaction: removes a chain's links at positions up to `throughPos` and at
   * `removed`, and the checkpoints that covered only positions up to `throughPos`.
   */
  async removeFromChain(
    m: EntityManager,
    chain: string,
    throughPos: number,
    removed: number[],
  ): Promise<void> {
    await m.query('ALTER TABLE audit_chain DISABLE TRIGGER audit_chain_no_update_delete');
    await m.query('DELETE FROM audit_chain WHERE chain = $1 AND (pos <= $2 OR pos = ANY($3::bigint[]))', [
      chain,
      throughPos,
      removed,
    ]);
    await m.query('ALTER TABLE audit_chain ENABLE TRIGGER audit_chain_no_update_delete');
    await m.query('ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_no_update_delete');
    await m.query('DELETE FROM audit_checkpoints WHERE chain = $1 AND last_pos <= $2', [chain, throughPos]);
    await m.query('ALTER TABLE audit_checkpoints ENABLE TRIGGER audit_checkpoints_no_update_delete');
  }

  /**
   * As the schema owner, inside its transaction: removes the events before the cutoff, by dropping the month
   * partitions named and deleting from the default partition (events whose month had no partition yet).
   */
  async removeEvents(m: EntityManager, cutoff: Date, partitions: string[]): Promise<void> {
    // audit_events before any of its partitions, as every INSERT takes them: a writer that holds audit_events
    // and routes a row to the default partition is waited for, never deadlocked with. Held to the commit,
    // which follows at once: writers wait only for this last step.
    await m.query('LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE');
    await m.query('ALTER TABLE audit_events_default DISABLE TRIGGER audit_events_no_update_delete');
    await m.query('DELETE FROM audit_events_default WHERE occurred_at < $1', [cutoff]);
    await m.query('ALTER TABLE audit_events_default ENABLE TRIGGER audit_events_no_update_delete');
    for (const name of partitions) {
      if (!PARTITION_NAME.test(name)) throw new Error(`not an audit partition: ${name}`);
      await m.query(`DROP TABLE "${name}"`);
    }
  }
}
