/**
 * Audit retention (worker role, hourly): creates the coming months' partitions of audit_events, and with
 * CUSTOS_AUDIT_RETENTION_MONTHS removes the months before the current one and the N before it, leaving each
 * chain that lost events a signed truncation record (docs/audit-format.md, "Retention") so that what remains
 * still verifies. Partitions are created by a database function that runs with the schema owner's rights;
 * removal needs the schema owner itself: CUSTOS_MIGRATION_DATABASE_URL when set, otherwise the application's
 * own role (which then must own the schema, as on the embedded default).
 *
 * A removal happens only when everything it removes is sealed and signed, and after re-hashing the removed
 * range from the previous anchor (the genesis, or the last truncation record) and matching every link head and
 * checkpoint head on the way: a range tampered with is never vouched for by a truncation record (the run is
 * refused, logged and audited instead). The removal itself is one transaction as the owner: the truncation
 * records, the removed links and checkpoints, the dropped partitions and the audit event that records it commit
 * together or not at all.
 *
 * Events are removed by the month in which they occurred, but chained in commit-safe order: a transaction that
 * straddles the month boundary can put an event of the old month after one of the new month. Such stragglers are
 * removed with their month, and the truncation record lists their positions and entry hashes, so that the chain
 * still hashes through them.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { Counter } from 'prom-client';
import { DataSource, type QueryRunner } from 'typeorm';
import { LOGGER } from '../common/logger.js';
import { Metrics } from '../common/metrics.js';
import { CONFIG, type Config } from '../config/config.js';
import { maintenanceDataSource } from '../database/data-source.js';
import {
  AUDIT_FORMAT,
  entryHash,
  genesisHead,
  jcs,
  nextHead,
  signTruncation,
  type RemovedEntry,
  type TruncationBody,
  type TruncationLine,
} from './audit-format.js';
import { AuditChainRepository, SEAL_LOCK } from './audit-chain.repository.js';
import { AuditRetentionRepository, type ChainLoss } from './audit-retention.repository.js';
import { AuditSigningKeys } from './audit-signing-keys.js';
import { AuditService, systemActor } from './audit.service.js';
import { eventLine } from './event-line.js';

/** pg_try_advisory_lock key: one retention run at a time across processes (see SEAL_LOCK for the others). */
const RETENTION_LOCK = 727274004;

/** Months of partitions created ahead of the current one. */
export const PARTITIONS_AHEAD = 3;

const PAGE = 2000;

/** The first instant kept when keeping the current month and `months` before it. */
export function retentionCutoff(now: Date, months: number): Date {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - months, 1));
}

export interface RetentionRun {
  cutoff: string;
  /** Partitions dropped. */
  partitions: string[];
  /** Events removed. */
  events: number;
  /** Chains that got a truncation record. */
  chains: number;
}

export type RetentionOutcome =
  | { status: 'applied'; run: RetentionRun }
  | { status: 'nothing' }
  | { status: 'busy' }
  | { status: 'waiting'; reason: string }
  | { status: 'refused'; reason: string };

/** The removed range of a chain does not hash to what was sealed: tampered with, or damaged. */
class IntegrityProblem extends Error {
  constructor(
    message: string,
    readonly eventId: string | null,
  ) {
    super(message);
  }
}

interface ChainPlan {
  chain: string;
  tenantId: string | null;
  seq: number;
  throughPos: number;
  head: Buffer;
  removed: RemovedEntry[];
  nextSeq: number;
  events: number;
}

@Injectable()
export class AuditRetention {
  private readonly removedEvents: Counter;
  private warnedOwner = false;

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(AuditRetentionRepository) private readonly repo: AuditRetentionRepository,
    @Inject(AuditChainRepository) private readonly chain: AuditChainRepository,
    @Inject(AuditSigningKeys) private readonly keys: AuditSigningKeys,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(CONFIG) private readonly config: Config,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(Metrics) metrics: Metrics,
  ) {
    this.removedEvents = new Counter({
      name: 'custos_audit_retention_removed_events_total',
      help: 'Audit events removed by retention (CUSTOS_AUDIT_RETENTION_MONTHS).',
      registers: [metrics.registry],
    });
  }

  /** The hourly job: partitions ahead, then retention when configured. Never throws for want of ownership. */
  async maintain(now = new Date()): Promise<void> {
    try {
      await this.ensurePartitions();
      const months = this.config.auditRetentionMonths;
      if (months !== undefined) {
        const outcome = await this.apply(retentionCutoff(now, months));
        if (outcome.status === 'waiting') {
          this.logger.info({ reason: outcome.reason }, 'audit retention waits for the sealer');
        }
      }
    } catch (err) {
      if ((err as { code?: string }).code === '42501') {
        if (!this.warnedOwner) {
          this.warnedOwner = true;
          this.logger.warn(
            'CUSTOS_AUDIT_RETENTION_MONTHS is set but audit retention needs the schema owner: set CUSTOS_MIGRATION_DATABASE_URL for the worker; nothing is removed until then',
          );
        }
        return;
      }
      throw err;
    }
  }

  /**
   * Creates this month's partition and the next PARTITIONS_AHEAD months' where missing; returns how many. The
   * database function runs with the schema owner's rights, so the application's own role is enough.
   */
  async ensurePartitions(): Promise<number> {
    const [{ n }] = await this.db.query<{ n: number }[]>('SELECT custos_audit_ensure_partitions($1) AS n', [
      PARTITIONS_AHEAD,
    ]);
    if (n > 0) this.logger.info({ created: n }, 'audit partitions created');
    return n;
  }

  /** Removes every event that occurred before `cutoff` (the first instant of a month, UTC). */
  apply(cutoff: Date): Promise<RetentionOutcome> {
    if (
      cutoff.getUTCDate() !== 1 ||
      cutoff.getTime() !== Date.UTC(cutoff.getUTCFullYear(), cutoff.getUTCMonth(), 1)
    ) {
      throw new Error('an audit retention cutoff is the first instant of a month (UTC)');
    }
    return this.asOwner(async (owner) => {
      const qr = owner.createQueryRunner();
      await qr.connect();
      try {
        const [{ locked }] = (await qr.query('SELECT pg_try_advisory_lock($1) AS locked', [
          RETENTION_LOCK,
        ])) as { locked: boolean }[];
        if (!locked) return { status: 'busy' };
        try {
          return await this.applyLocked(qr, cutoff);
        } finally {
          await qr.query('SELECT pg_advisory_unlock($1)', [RETENTION_LOCK]).catch(() => undefined);
        }
      } finally {
        await qr.release();
      }
    });
  }

  private async applyLocked(qr: QueryRunner, cutoff: Date): Promise<RetentionOutcome> {
    const m = qr.manager;
    if (!(await this.repo.ownsAuditTrail(m))) {
      throw Object.assign(new Error('audit retention needs the schema owner'), { code: '42501' });
    }
    const partitions = await this.repo.partitionsBefore(m, cutoff);
    if (!(await this.repo.anyBefore(m, cutoff))) {
      if (partitions.length === 0) return { status: 'nothing' };
      // Empty partitions of months past retention (created ahead, never written to): dropped quietly.
      await qr.startTransaction();
      try {
        await this.repo.removeEvents(m, cutoff, partitions);
        await qr.commitTransaction();
      } catch (err) {
        await qr.rollbackTransaction();
        throw err;
      }
      return { status: 'applied', run: { cutoff: cutoff.toISOString(), partitions, events: 0, chains: 0 } };
    }
    const unlinked = await this.repo.unlinkedBefore(m, cutoff);
    if (unlinked !== undefined) {
      return { status: 'waiting', reason: `event ${unlinked} before the cutoff is not sealed yet` };
    }
    const losses = await this.repo.losses(m, cutoff);
    const unsigned = losses.find((l) => BigInt(l.max_pos) > BigInt(l.checkpointed_pos));
    if (unsigned) {
      return {
        status: 'waiting',
        reason: `chain ${unsigned.chain} has events before the cutoff not signed yet`,
      };
    }

    const plans: ChainPlan[] = [];
    try {
      for (const loss of losses) plans.push(await this.plan(loss, cutoff));
    } catch (err) {
      if (!(err instanceof IntegrityProblem)) throw err;
      this.logger.error(
        { cutoff: cutoff.toISOString(), eventId: err.eventId, reason: err.message },
        'audit retention refused: the range to remove does not match its seal',
      );
      await this.audit.record({
        tenantId: null,
        action: 'audit.retention.refused',
        outcome: 'failed',
        actor: systemActor,
        details: { cutoff: cutoff.toISOString(), eventId: err.eventId, reason: err.message },
      });
      return { status: 'refused', reason: err.message };
    }

    // Signing keys are opened (through each chain's key backend) before the owner's transaction starts.
    const truncatedAt = new Date();
    const signed: { plan: ChainPlan; line: TruncationLine }[] = [];
    for (const plan of plans) {
      const { kid, key } = await this.keys.signingKey(plan.chain, truncatedAt);
      const body: TruncationBody = {
        kind: 'truncation',
        format: AUDIT_FORMAT,
        chain: plan.chain,
        seq: plan.seq,
        cutoff: cutoff.toISOString(),
        throughPos: plan.throughPos,
        head: plan.head.toString('hex'),
        removed: plan.removed,
        nextSeq: plan.nextSeq,
        truncatedAt: truncatedAt.toISOString(),
        kid,
      };
      signed.push({ plan, line: signTruncation(body, key) });
    }

    const events = plans.reduce((n, p) => n + p.events, 0);
    await qr.startTransaction();
    try {
      await qr.query('SET LOCAL statement_timeout = 0');
      // The sealer links in transactions under this lock: none is half-way while links are removed.
      await qr.query('SELECT pg_advisory_xact_lock($1)', [SEAL_LOCK]);
      // And signs checkpoints in transactions that lock their chain's head first: holding every head, this
      // transaction never waits on one that waits on it (dropping a partition needs audit_events to itself).
      await this.repo.lockHeads(m);
      for (const { plan, line } of signed) {
        const { sig, ...body } = line;
        await this.repo.insertTruncation(m, {
          chain: plan.chain,
          seq: plan.seq,
          tenantId: plan.tenantId,
          throughPos: plan.throughPos,
          nextSeq: plan.nextSeq,
          cutoff,
          truncatedAt,
          kid: body.kid,
          body: jcs(body),
          sig,
        });
        await this.repo.removeFromChain(
          m,
          plan.chain,
          plan.throughPos,
          plan.removed.map((r) => r.pos),
        );
      }
      await this.repo.removeEvents(m, cutoff, partitions);
      await this.audit.record(
        {
          tenantId: null,
          action: 'audit.retention.applied',
          outcome: 'allowed',
          actor: systemActor,
          details: { cutoff: cutoff.toISOString(), partitions, events, chains: plans.length },
        },
        m,
      );
      await qr.commitTransaction();
    } catch (err) {
      await qr.rollbackTransaction().catch(() => undefined);
      throw err;
    }
    this.removedEvents.inc(events);
    const run: RetentionRun = { cutoff: cutoff.toISOString(), partitions, events, chains: plans.length };
    this.logger.info(run, 'audit events removed by retention');
    return { status: 'applied', run };
  }

  /**
   * What removing a chain's events before the cutoff leaves: re-hashes the chain from its last anchor through
   * the last removed position, checking every link head and checkpoint head, and finds the new anchor (the
   * last position before the first event kept) and the stragglers past it.
   */
  private async plan(loss: ChainLoss, cutoff: Date): Promise<ChainPlan> {
    const chain = loss.chain;
    const maxPos = Number(loss.max_pos);
    const previous = await this.repo.latest(chain);
    let anchorPos = 0;
    let head = genesisHead(chain);
    const earlier = new Map<number, string>();
    if (previous) {
      const body = JSON.parse(previous.body) as TruncationBody;
      anchorPos = body.throughPos;
      head = Buffer.from(body.head, 'hex');
      for (const r of body.removed) earlier.set(r.pos, r.entry);
    }
    const checkpointHeads = await this.repo.checkpointHeads(chain, anchorPos, maxPos);
    const cutoffMs = cutoff.getTime();
    let pos = anchorPos;
    let throughPos: number | null = null;
    let throughHead = head;
    const removed: RemovedEntry[] = [];

    const advance = (to: number, eventId: string | null) => {
      // Positions before `to` without a row can only be stragglers an earlier truncation removed.
      while (pos + 1 < to) {
        pos += 1;
        const entry = earlier.get(pos);
        if (entry === undefined) {
          throw new IntegrityProblem(`position ${pos} of ${chain} is missing`, eventId);
        }
        head = nextHead(head, Buffer.from(entry, 'hex'));
        checkCheckpoint();
      }
    };
    const checkCheckpoint = () => {
      const stated = checkpointHeads.get(pos);
      if (stated !== undefined && stated !== head.toString('hex')) {
        throw new IntegrityProblem(
          `${chain} does not hash to the head of the checkpoint ending at position ${pos}`,
          null,
        );
      }
    };

    let from = anchorPos + 1;
    while (from <= maxPos) {
      const rows = await this.chain.linkedEvents(chain, String(from), String(maxPos), PAGE);
      if (rows.length === 0) break;
      for (const row of rows) {
        const rowPos = Number(row.pos);
        advance(rowPos, row.id);
        const before = head;
        const entry = entryHash(eventLine(row, rowPos));
        pos = rowPos;
        head = nextHead(head, entry);
        if (!head.equals(row.link_head)) {
          throw new IntegrityProblem(`event ${row.id} (position ${rowPos}) does not match its seal`, row.id);
        }
        checkCheckpoint();
        const goes = Date.parse(row.occurred_at) < cutoffMs;
        if (!goes && throughPos === null) {
          throughPos = rowPos - 1;
          throughHead = before;
        } else if (goes && throughPos !== null) {
          removed.push({ pos: rowPos, entry: entry.toString('hex') });
        }
      }
      from = Number(rows[rows.length - 1].pos) + 1;
    }
    advance(maxPos + 1, null);
    if (throughPos === null) {
      throughPos = pos;
      throughHead = head;
    }
    const cut = throughPos;
    // Stragglers an earlier truncation listed past the new anchor stay listed.
    for (const [p, entry] of earlier) if (p > cut) removed.push({ pos: p, entry });
    removed.sort((a, b) => a.pos - b.pos);
    const nextSeq = (await this.repo.firstCheckpointAfter(chain, cut)) ?? Number(loss.checkpoint_seq) + 1;
    return {
      chain,
      tenantId: loss.tenant_id,
      seq: previous ? Number(previous.seq) + 1 : 1,
      throughPos: cut,
      head: throughHead,
      removed,
      nextSeq,
      events: Number(loss.events),
    };
  }

  /** Runs `fn` on a data source as the schema owner, without statement time limits. */
  private async asOwner<T>(fn: (owner: DataSource) => Promise<T>): Promise<T> {
    const owner = await maintenanceDataSource(this.db, this.config.migrationDatabaseUrl, 1);
    try {
      return await fn(owner);
    } finally {
      await owner.destroy();
    }
  }
}
