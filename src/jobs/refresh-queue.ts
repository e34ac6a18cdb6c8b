/**
 * Refresh-ahead jobs on BullMQ. Each job is one connection's next refresh, delayed until its due time and
 * deduplicated by connection, row version and attempt (`refreshJobId`). The worker runs them under the
 * process's refresh limiter; a job whose provider has no free slot goes back to the delayed set instead
 * of holding a worker slot, so a provider outage cannot starve the others.
 *
 * Redis holds only copies: the sweeper (a timer in every worker process, not a Redis-held schedule, so it
 * survives a wiped Redis) reads the due times from PostgreSQL and re-creates any job that is missing. So the
 * queue starts without Redis, adds nothing while Redis is away, and sweeps as soon as it is back.
 */
import type { Job, Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Gauge, type Registry } from 'prom-client';
import { closeBullMq, connectRedis, errorReporterOf, whenReady } from '../common/redis.js';
import { refreshJobId, type DueRefresh, type RefreshLimiter, type RefreshScheduler } from './refresh-jobs.js';

export const REFRESH_QUEUE = 'refresh';
/** How long a job waits in the worker for its provider's slot before it goes back to the delayed set. */
const SLOT_WAIT_MS = 1000;
const ADD_CHUNK = 1000;
/**
 * How long shutdown waits for refreshes in flight while Redis answers: a provider call has a 10 s deadline, and
 * a refresh abandoned after the provider rotated the refresh token leaves the connection `needs_reauth`
 * (docs/connectors.md, "Background refresh", crash safety).
 */
const IN_FLIGHT_GRACE_MS = 15_000;
/** How long a scrape of /metrics waits for the queue's counts: a slow or absent Redis must not hold it up. */
const DEPTH_WAIT_MS = 500;

type QueueCounts = Awaited<ReturnType<RefreshQueue['counts']>>;

export interface RefreshJobData {
  c: string;
  t: string;
  p: string;
}

export interface RefreshQueueOptions {
  redisUrl: string;
  prefix: string;
  log: Logger;
  /** Worker jobs in flight at once (this process). */
  concurrency: number;
  /** A job's lock and stalled-job check, in ms: a job held by a process that died is retried after this. */
  lockMs: number;
  /** Where to report the queue's depth (/metrics). */
  metrics?: Registry;
}

export class RefreshQueue implements RefreshScheduler {
  private connection?: Redis;
  private workerConnection?: Redis;
  private queue?: Queue<RefreshJobData>;
  private worker?: Worker<RefreshJobData>;
  private sweepTimer?: NodeJS.Timeout;
  private sweeping?: Promise<void>;
  private sweepNow?: () => void;
  private inFlight = 0;
  /**
   * Jobs this process has added, by id, with their due time: a sweep skips them instead of re-adding
   * thousands of jobs every period. Forgotten two minutes after their due time (so a job lost some other
   * way is re-added then), and all at once when the sentinel key shows that Redis lost its data.
   */
  private readonly added = new Map<string, number>();
  private sentinel = '';
  /** The counts asked of Redis for a scrape and not answered yet: later scrapes wait for it, not ask again. */
  private counting?: Promise<QueueCounts | undefined>;

  constructor(private readonly opts: RefreshQueueOptions) {
    if (opts.metrics) this.reportDepth(opts.metrics);
  }

  /**
   * Connects; with `work`, also processes jobs with `run` under `limiter`. Waits a moment at most for Redis:
   * without it, the queue connects in the background and works once Redis answers.
   */
  async start(work?: {
    run: (d: RefreshJobData) => Promise<unknown>;
    limiter: RefreshLimiter;
  }): Promise<void> {
    const { Queue, Worker, DelayedError } = await import('bullmq');
    const { redisUrl: url, log } = this.opts;
    const connection = await connectRedis({
      url,
      purpose: 'refresh queue',
      log,
      options: { maxRetriesPerRequest: null },
    });
    this.connection = connection;
    this.queue = new Queue<RefreshJobData>(REFRESH_QUEUE, { connection, prefix: this.opts.prefix });
    this.queue.on('error', errorReporterOf(connection));
    this.sentinel = `${this.opts.prefix}:${REFRESH_QUEUE}:custos-sentinel`;
    // Back after an outage (or up for the first time): what was not added meanwhile, or what Redis lost, is
    // re-created from PostgreSQL now rather than at the next period.
    connection.on('ready', () => this.sweepNow?.());
    if (work) {
      const { run, limiter } = work;
      this.workerConnection = await connectRedis({
        url,
        purpose: 'refresh worker',
        log,
        options: { maxRetriesPerRequest: null },
      });
      this.worker = new Worker<RefreshJobData>(
        REFRESH_QUEUE,
        async (job: Job<RefreshJobData>, token?: string) => {
          if (!(await limiter.acquire(job.data.p, SLOT_WAIT_MS))) {
            // The provider's slots are taken (slow or down): try again shortly, without holding this slot.
            await job.moveToDelayed(Date.now() + SLOT_WAIT_MS + Math.floor(Math.random() * 2000), token);
            throw new DelayedError();
          }
          this.inFlight++;
          try {
            await run(job.data);
          } finally {
            this.inFlight--;
            limiter.release(job.data.p);
          }
        },
        {
          connection: this.workerConnection,
          prefix: this.opts.prefix,
          concurrency: this.opts.concurrency,
          lockDuration: this.opts.lockMs,
          stalledInterval: this.opts.lockMs,
        },
      );
      this.worker.on('failed', (j, err) =>
        log.warn({ jobId: j?.id, err: { name: err.name } }, 'refresh job failed'),
      );
      // Its blocking connection is BullMQ's own copy of ours: its errors come here.
      this.worker.on('error', errorReporterOf(this.workerConnection));
    }
    await whenReady(connection);
  }

  /**
   * Adds the jobs; one that already exists (same connection, version and attempt) is left alone. While Redis
   * is away, adds nothing: waiting would pile up the calls, and the sweep re-creates the jobs once it is back.
   */
  async schedule(items: DueRefresh[]): Promise<void> {
    if (!this.queue) throw new Error('refresh queue not started');
    if (this.connection?.status !== 'ready') return;
    const now = Date.now();
    for (let i = 0; i < items.length; i += ADD_CHUNK) {
      const chunk = items.slice(i, i + ADD_CHUNK);
      await this.queue.addBulk(
        chunk.map((d) => ({
          name: 'refresh',
          data: { c: d.connectionId, t: d.tenantId, p: d.provider },
          opts: {
            jobId: refreshJobId(d),
            delay: Math.max(0, d.dueAt.getTime() - now),
            removeOnComplete: true,
            removeOnFail: true,
          },
        })),
      );
      for (const d of chunk) this.added.set(refreshJobId(d), d.dueAt.getTime());
    }
  }

  /** What a sweep must add: everything when Redis lost its data, else what this process has not added. */
  private async missing(items: DueRefresh[]): Promise<DueRefresh[]> {
    const now = Date.now();
    for (const [id, due] of this.added) if (due + 120_000 < now) this.added.delete(id);
    // The sentinel lives as long as Redis keeps its data: gone means every job may be gone too.
    if ((await this.connection!.set(this.sentinel, '1', 'NX')) === 'OK') this.added.clear();
    return items.filter((d) => !this.added.has(refreshJobId(d)));
  }

  /**
   * Every `everyMs`, and whenever the connection is back, queues what falls due soon according to PostgreSQL.
   * Idempotent, and run by every worker process: together with job ids, that is what makes a wiped Redis lose
   * nothing. Skipped while Redis is away.
   */
  startSweeper(due: () => Promise<DueRefresh[]>, everyMs: number): void {
    const sweep = async () => {
      const items = await this.missing(await due());
      await this.schedule(items);
    };
    const tick = () => {
      if (this.sweeping || this.connection?.status !== 'ready') return;
      this.sweeping = sweep()
        .catch((err: Error) =>
          this.opts.log.warn({ err: { name: err.name, message: err.message } }, 'refresh sweep failed'),
        )
        .finally(() => (this.sweeping = undefined));
    };
    this.sweepNow = tick;
    tick();
    this.sweepTimer = setInterval(tick, everyMs);
    this.sweepTimer.unref();
  }

  /** Jobs waiting for their due time, and ready to run (tests, diagnostics). */
  async counts(): Promise<{ delayed: number; waiting: number; active: number }> {
    const c = await this.queue!.getJobCounts('delayed', 'waiting', 'active');
    return { delayed: c.delayed ?? 0, waiting: c.waiting ?? 0, active: c.active ?? 0 };
  }

  /**
   * The queue's depth at each scrape, by state. When Redis is not connected, or does not answer within
   * DEPTH_WAIT_MS, the series are left out of that scrape rather than showing a count that may be stale.
   */
  private reportDepth(registry: Registry): void {
    const depth = (): Promise<QueueCounts | undefined> => {
      if (!this.queue || this.connection?.status !== 'ready') return Promise.resolve(undefined);
      this.counting ??= this.counts()
        .catch(() => undefined)
        .finally(() => (this.counting = undefined));
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([
        this.counting,
        new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), DEPTH_WAIT_MS))),
      ]).finally(() => clearTimeout(timer));
    };
    new Gauge({
      name: 'custos_refresh_queue_depth',
      help: `Refresh-ahead jobs in the BullMQ queue by state: delayed (not due yet), waiting (due, not started), active. Absent while Redis does not answer within ${DEPTH_WAIT_MS} ms.`,
      labelNames: ['state'] as const,
      registers: [registry],
      async collect() {
        const counts = await depth();
        this.reset();
        if (!counts) return;
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      },
    });
  }

  async check(): Promise<void> {
    // Not connected: a PING would wait in the offline queue, one more for every probe.
    if (this.connection?.status !== 'ready') throw new Error('redis is not connected');
    if ((await this.connection.ping()) !== 'PONG') throw new Error('redis did not answer PING');
  }

  /** Lets the refreshes in flight finish while Redis answers, within a deadline either way. */
  async stop(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepNow = undefined;
    await closeBullMq({
      worker: this.worker,
      queue: this.queue,
      pending: this.sweeping,
      connections: [this.workerConnection, this.connection],
      graceMs: this.inFlight > 0 ? IN_FLIGHT_GRACE_MS : undefined,
    });
  }
}
