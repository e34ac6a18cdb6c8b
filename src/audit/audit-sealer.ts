/**
 * The sealer (worker role): links committed events into their chains and signs checkpoints over them
 * (docs/audit-format.md).
 *
 * Commit-safe order: an identity value is not commit order (a transaction that took id 7 may commit after the
 * one that took id 8). Every event records the id of the transaction that inserted it, and the sealer links only
 * events whose transactions are older than the oldest transaction still running (the snapshot's xmin): those
 * have all ended, so nothing can later appear before them. It takes them in (tx_id, id) order after its cursor,
 * in one transaction that writes the links, the chain heads and the new cursor together: a sealer killed at any
 * point has written all of a batch or none of it, and the next run carries on from the cursor. Writers never
 * wait for the sealer and are never serialised by it: they only insert rows.
 *
 * Checkpoints come second, one transaction per chain, signed with the chain's current key (opened through its
 * key backend before the transaction). A chain whose key backend is unreachable keeps its links and is
 * checkpointed on a later run; other chains are not held up. Forwarding to a SIEM (AuditForwarder), when
 * configured, follows each run.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { Counter, Histogram } from 'prom-client';
import { DataSource } from 'typeorm';
import { LOGGER } from '../common/logger.js';
import { Metrics } from '../common/metrics.js';
import { CONFIG, type Config } from '../config/config.js';
import {
  AUDIT_FORMAT,
  chainOf,
  entryHash,
  genesisHead,
  jcs,
  nextHead,
  signCheckpoint,
  type CheckpointBody,
} from './audit-format.js';
import { AuditChainRepository, type NewLink } from './audit-chain.repository.js';
import { AuditCheckpointsRepository } from './audit-checkpoints.repository.js';
import { AuditForwarder } from './audit-forwarder.js';
import { AuditSigningKeys } from './audit-signing-keys.js';
import { AuditRepository } from './audit.repository.js';
import { eventLine } from './event-line.js';

const MAX_BACKOFF_MS = 5 * 60_000;

/** Events hashed between two turns of the event loop. */
const YIELD_EVERY = 100;

/** Events linked per transaction; a bigger backlog takes several. */
export const SEAL_BATCH = 1000;

export interface SealRun {
  linked: number;
  checkpoints: number;
  /** Chains left unsigned this run (their key backend failed). */
  failed: number;
  /** Checkpoints delivered to CUSTOS_AUDIT_FORWARD. */
  forwarded: number;
}

@Injectable()
export class AuditSealer {
  private timer?: NodeJS.Timeout;
  private running?: Promise<SealRun>;
  private stopped = true;
  private readonly lag: Histogram;
  private readonly failures: Counter;
  /** Chains whose last checkpoint attempt failed: how often in a row, and when to try again. */
  private readonly backoff = new Map<string, { failures: number; until: number }>();

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(AuditRepository) private readonly events: AuditRepository,
    @Inject(AuditChainRepository) private readonly chain: AuditChainRepository,
    @Inject(AuditCheckpointsRepository) private readonly checkpoints: AuditCheckpointsRepository,
    @Inject(AuditSigningKeys) private readonly keys: AuditSigningKeys,
    @Inject(AuditForwarder) private readonly forwarder: AuditForwarder,
    @Inject(CONFIG) private readonly config: Config,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(Metrics) metrics: Metrics,
  ) {
    this.lag = new Histogram({
      name: 'custos_audit_seal_lag_seconds',
      help: 'Time from the oldest event a checkpoint covers to the checkpoint being signed.',
      buckets: [0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300],
      registers: [metrics.registry],
    });
    this.failures = new Counter({
      name: 'custos_audit_seal_failures_total',
      help: 'Sealer runs or chain checkpoints that failed (retried on the next run), by stage: link, checkpoint.',
      labelNames: ['stage'] as const,
      registers: [metrics.registry],
    });
  }

  /** Runs every CUSTOS_AUDIT_SEAL_INTERVAL_MS until stop(). */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    const tick = () => {
      if (this.stopped) return;
      this.timer = setTimeout(() => {
        void this.sealOnce()
          .catch(() => undefined)
          .finally(tick);
      }, this.config.auditSealIntervalMs);
      this.timer.unref();
    };
    tick();
  }

  /** Stops the timer and waits for a run in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** One run: links everything committed so far, then checkpoints every chain with unsigned links. */
  sealOnce(): Promise<SealRun> {
    this.running ??= this.run().finally(() => (this.running = undefined));
    return this.running;
  }

  private async run(): Promise<SealRun> {
    const result: SealRun = { linked: 0, checkpoints: 0, failed: 0, forwarded: 0 };
    try {
      for (;;) {
        const n = await this.linkBatch();
        result.linked += n;
        if (n < SEAL_BATCH) break;
      }
    } catch (err) {
      this.failures.inc({ stage: 'link' });
      this.logger.warn(
        { error: (err as Error).name, reason: (err as Error).message },
        'audit sealing failed; will retry',
      );
    }
    const now = Date.now();
    for (const { chain } of await this.chain.pendingChains().catch(() => [])) {
      const backoff = this.backoff.get(chain);
      if (backoff && backoff.until > now) continue;
      try {
        if (await this.checkpoint(chain)) result.checkpoints++;
        if (backoff) {
          this.backoff.delete(chain);
          this.logger.info({ chain, failures: backoff.failures }, 'audit checkpoints are signed again');
        }
      } catch (err) {
        result.failed++;
        this.failures.inc({ stage: 'checkpoint' });
        // A chain whose key backend is down or misconfigured is retried less and less often (up to every five
        // minutes), and logged at the first failure and then at every doubling, not every second.
        const failures = (backoff?.failures ?? 0) + 1;
        this.backoff.set(chain, {
          failures,
          until: Date.now() + Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(failures, 20)),
        });
        if ((failures & (failures - 1)) === 0) {
          this.logger.warn(
            { chain, failures, error: (err as Error).name, reason: (err as Error).message },
            'could not sign an audit checkpoint; will retry',
          );
        }
      }
    }
    // Forwarding comes last and fails on its own: a SIEM that is down never holds up sealing.
    if (this.forwarder.enabled) result.forwarded = await this.forwarder.forward().catch(() => 0);
    return result;
  }

  /** Links the next batch of committed events; returns how many (0 when another process holds the lock). */
  private linkBatch(): Promise<number> {
    return this.db.transaction(async (m) => {
      if (!(await this.chain.tryLock(m))) return 0;
      const horizon = await this.chain.horizon(m);
      const cursor = await this.chain.cursor(m);
      const rows = await this.events.sealBatch(m, cursor.lastTx, cursor.lastId, horizon, SEAL_BATCH);
      if (rows.length === 0) return 0;
      const chains = [...new Set(rows.map((r) => chainOf(r.tenant_id)))];
      const heads = new Map<string, { tenantId: string | null; pos: number; head: Buffer }>();
      for (const h of await this.chain.headsForUpdate(m, chains)) {
        heads.set(h.chain, { tenantId: h.tenant_id, pos: Number(h.pos), head: h.head });
      }
      const links: NewLink[] = [];
      for (const [i, row] of rows.entries()) {
        // Hashing a batch takes tens of milliseconds; in a process that also serves the token endpoint
        // (role all), requests get their turn in between.
        if (i > 0 && i % YIELD_EVERY === 0) await new Promise((r) => setImmediate(r));
        const chain = chainOf(row.tenant_id);
        let h = heads.get(chain);
        if (!h) {
          h = { tenantId: row.tenant_id, pos: 0, head: genesisHead(chain) };
          heads.set(chain, h);
        }
        h.pos += 1;
        h.head = nextHead(h.head, entryHash(eventLine(row, h.pos)));
        links.push({ eventId: row.id, chain, pos: h.pos, head: h.head });
      }
      await this.chain.insertLinks(m, links);
      await this.chain.saveHeads(
        m,
        [...heads].map(([chain, h]) => ({ chain, ...h })),
      );
      const last = rows[rows.length - 1];
      await this.chain.saveCursor(m, { lastTx: last.tx_id, lastId: last.id });
      return rows.length;
    });
  }

  /** Signs a checkpoint over the chain's links since its last one; false when another process just did. */
  private async checkpoint(chain: string): Promise<boolean> {
    const { kid, key } = await this.keys.signingKey(chain);
    const sealed = await this.db.transaction(async (m) => {
      const h = await this.chain.headForUpdate(m, chain);
      if (!h || BigInt(h.pos) <= BigInt(h.checkpointed_pos)) return null;
      const firstPos = Number(h.checkpointed_pos) + 1;
      const lastPos = Number(h.pos);
      const facts = await this.chain.rangeFacts(m, chain, String(firstPos), h.pos);
      const seq = Number(h.checkpoint_seq) + 1;
      const sealedAt = new Date();
      const body: CheckpointBody = {
        kind: 'checkpoint',
        format: AUDIT_FORMAT,
        chain,
        seq,
        firstPos,
        lastPos,
        count: lastPos - firstPos + 1,
        firstEventId: facts.firstEventId,
        lastEventId: facts.lastEventId,
        prevHead: (h.checkpoint_head ?? genesisHead(chain)).toString('hex'),
        head: h.head.toString('hex'),
        sealedAt: sealedAt.toISOString(),
        kid,
      };
      const signed = signCheckpoint(body, key);
      await this.checkpoints.insert(m, {
        chain,
        seq,
        tenantId: h.tenant_id,
        firstPos,
        lastPos,
        firstAt: facts.firstAt,
        lastAt: facts.lastAt,
        sealedAt,
        kid,
        body: jcs(body),
        sig: signed.sig,
      });
      await this.chain.markCheckpointed(m, chain, h.pos, seq, h.head);
      return facts.firstAt;
    });
    if (!sealed) return false;
    this.lag.observe(Math.max(0, (Date.now() - sealed.getTime()) / 1000));
    return true;
  }
}
