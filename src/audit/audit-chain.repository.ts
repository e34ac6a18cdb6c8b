/**
 * Every statement on the chain's tables: audit_chain (each sealed event's position and the head after it,
 * append-only), audit_chain_heads (where each chain stands) and audit_seal_state (the sealer's cursor), plus
 * the export's read of links joined with their events.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { sealColumns, type SealRow } from './audit.repository.js';

export interface SealCursor {
  lastTx: string;
  lastId: string;
}

export interface ChainHeadRow {
  chain: string;
  tenant_id: string | null;
  pos: string;
  head: Buffer;
  checkpointed_pos: string;
  checkpoint_seq: string;
  checkpoint_head: Buffer | null;
}

export interface NewLink {
  eventId: string;
  chain: string;
  pos: number;
  head: Buffer;
}

export type LinkedEventRow = SealRow & { pos: string; link_head: Buffer };

/**
 * pg_try_advisory_xact_lock key: one linking transaction at a time across processes. Distinct from the other
 * advisory locks' keys (727274001 migrations, 727274002 the first admin key).
 */
export const SEAL_LOCK = 727274003;

@Injectable()
export class AuditChainRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** Takes the sealer's lock for this transaction if no other process holds it. */
  async tryLock(m: EntityManager): Promise<boolean> {
    const [{ locked }] = await m.query<{ locked: boolean }[]>(
      'SELECT pg_try_advisory_xact_lock($1) AS locked',
      [SEAL_LOCK],
    );
    return locked === true;
  }

  /** The oldest transaction id still running anywhere in the cluster (the snapshot's xmin). */
  async horizon(m: EntityManager): Promise<string> {
    const [{ h }] = await m.query<{ h: string }[]>(
      `SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS h`,
    );
    return h;
  }

  async cursor(m?: EntityManager): Promise<SealCursor> {
    const [row] = await (m ?? this.db.manager).query<{ last_tx: string; last_id: string }[]>(
      'SELECT last_tx::text AS last_tx, last_id::text AS last_id FROM audit_seal_state WHERE id = 1',
    );
    return { lastTx: row.last_tx, lastId: row.last_id };
  }

  async saveCursor(m: EntityManager, c: SealCursor): Promise<void> {
    await m.query('UPDATE audit_seal_state SET last_tx = $1, last_id = $2 WHERE id = 1', [
      c.lastTx,
      c.lastId,
    ]);
  }

  /** The heads of these chains, locked for this transaction (chains never linked yet are absent). */
  headsForUpdate(m: EntityManager, chains: string[]): Promise<ChainHeadRow[]> {
    return m.query(
      `SELECT chain, tenant_id, pos::text AS pos, head, checkpointed_pos::text AS checkpointed_pos,
              checkpoint_seq::text AS checkpoint_seq, checkpoint_head
         FROM audit_chain_heads WHERE chain = ANY($1::text[]) ORDER BY chain FOR UPDATE`,
      [chains],
    );
  }

  async insertLinks(m: EntityManager, links: NewLink[]): Promise<void> {
    await m.query(
      `INSERT INTO audit_chain (event_id, chain, pos, head)
       SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bytea[])`,
      [
        links.map((l) => l.eventId),
        links.map((l) => l.chain),
        links.map((l) => l.pos),
        links.map((l) => l.head),
      ],
    );
  }

  async saveHeads(
    m: EntityManager,
    heads: { chain: string; tenantId: string | null; pos: number; head: Buffer }[],
  ): Promise<void> {
    await m.query(
      `INSERT INTO audit_chain_heads (chain, tenant_id, pos, head)
       SELECT * FROM unnest($1::text[], $2::uuid[], $3::bigint[], $4::bytea[])
       ON CONFLICT (chain) DO UPDATE SET pos = EXCLUDED.pos, head = EXCLUDED.head`,
      [
        heads.map((h) => h.chain),
        heads.map((h) => h.tenantId),
        heads.map((h) => h.pos),
        heads.map((h) => h.head),
      ],
    );
  }

  /** Chains with links no checkpoint covers yet. */
  pendingChains(): Promise<{ chain: string; tenant_id: string | null }[]> {
    return this.db.query(
      'SELECT chain, tenant_id FROM audit_chain_heads WHERE pos > checkpointed_pos ORDER BY chain',
    );
  }

  async headForUpdate(m: EntityManager, chain: string): Promise<ChainHeadRow | undefined> {
    const [row] = await this.headsForUpdate(m, [chain]);
    return row;
  }

  async markCheckpointed(
    m: EntityManager,
    chain: string,
    pos: string,
    seq: number,
    head: Buffer,
  ): Promise<void> {
    await m.query(
      `UPDATE audit_chain_heads SET checkpointed_pos = $2, checkpoint_seq = $3, checkpoint_head = $4
        WHERE chain = $1`,
      [chain, pos, seq, head],
    );
  }

  /** What a checkpoint over positions [first, last] states about its events. */
  async rangeFacts(
    m: EntityManager,
    chain: string,
    first: string,
    last: string,
  ): Promise<{ firstEventId: string; lastEventId: string; firstAt: Date; lastAt: Date }> {
    const [row] = await m.query<{ first_id: string; last_id: string; first_at: Date; last_at: Date }[]>(
      `SELECT (SELECT event_id::text FROM audit_chain WHERE chain = $1 AND pos = $2) AS first_id,
              (SELECT event_id::text FROM audit_chain WHERE chain = $1 AND pos = $3) AS last_id,
              min(e.occurred_at) AS first_at, max(e.occurred_at) AS last_at
         FROM audit_chain l JOIN audit_events e ON e.id = l.event_id
        WHERE l.chain = $1 AND l.pos BETWEEN $2 AND $3`,
      [chain, first, last],
    );
    return {
      firstEventId: row.first_id,
      lastEventId: row.last_id,
      firstAt: row.first_at,
      lastAt: row.last_at,
    };
  }

  /** Up to `limit` linked events of a chain from position `from` to `to`, in chain order. */
  linkedEvents(chain: string, from: string, to: string, limit: number): Promise<LinkedEventRow[]> {
    return this.db.query(
      `SELECT ${sealColumns('e')}, l.pos::text AS pos, l.head AS link_head
         FROM audit_chain l JOIN audit_events e ON e.id = l.event_id
        WHERE l.chain = $1 AND l.pos BETWEEN $2 AND $3
        ORDER BY l.pos LIMIT $4`,
      [chain, from, to, limit],
    );
  }
}
