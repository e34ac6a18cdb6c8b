/**
 * The job runner port: BullMQ when REDIS_URL is set, in-process otherwise. Jobs are named, periodic and
 * idempotent; their due state lives in PostgreSQL, so losing Redis loses nothing.
 */
// Loaded only when Redis is configured: they cost memory that the embedded default does not need.
import type { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import {
  closeBullMq,
  connectRedis,
  errorReporterOf,
  settlesWithin,
  START_WAIT_MS,
  whenReady,
} from '../common/redis.js';

export type JobHandler = () => Promise<void>;

export interface JobRunner {
  readonly kind: 'bullmq' | 'in-process';
  register(name: string, everyMs: number, handler: JobHandler): void;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Readiness: the runner's backing store answers. */
  check(): Promise<void>;
}

export const JOB_RUNNER = Symbol('JOB_RUNNER');

interface Registered {
  name: string;
  everyMs: number;
  handler: JobHandler;
}

export class InProcessJobRunner implements JobRunner {
  readonly kind = 'in-process';
  private readonly jobs: Registered[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly running = new Set<string>();

  constructor(private readonly log: Logger) {}

  register(name: string, everyMs: number, handler: JobHandler): void {
    this.jobs.push({ name, everyMs, handler });
  }

  async start(): Promise<void> {
    for (const job of this.jobs) {
      const t = setInterval(() => void this.runOnce(job), job.everyMs);
      t.unref();
      this.timers.push(t);
    }
  }

  /** Runs a job now unless it is already running (no overlap). */
  async runOnce(job: Registered): Promise<void> {
    if (this.running.has(job.name)) return;
    this.running.add(job.name);
    try {
      await job.handler();
    } catch (err) {
      this.log.error(
        { job: job.name, err: { name: (err as Error).name, message: (err as Error).message } },
        'job failed',
      );
    } finally {
      this.running.delete(job.name);
    }
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers.length = 0;
    while (this.running.size > 0) await new Promise((r) => setTimeout(r, 20));
  }

  async check(): Promise<void> {}
}

export class BullMqJobRunner implements JobRunner {
  readonly kind = 'bullmq';
  private readonly jobs = new Map<string, Registered>();
  private connection?: Redis;
  private queue?: Queue;
  private worker?: Worker;
  private workerConnection?: Redis;
  private watchdog?: NodeJS.Timeout;
  private checking?: Promise<void>;

  constructor(
    private readonly redisUrl: string,
    private readonly log: Logger,
    private readonly queueName = 'maintenance',
    private readonly prefix = 'custos',
    /** How often the schedules are checked and re-created when Redis lost them. */
    private readonly watchdogMs = 30_000,
  ) {}

  register(name: string, everyMs: number, handler: JobHandler): void {
    this.jobs.set(name, { name, everyMs, handler });
  }

  /**
   * With Redis there, returns once the schedules exist; without it (refused, or no answer within a moment),
   * returns anyway: the connections keep trying, and the schedules are made once Redis answers.
   */
  async start(): Promise<void> {
    const { Queue, Worker } = await import('bullmq');
    const options = { maxRetriesPerRequest: null, enableOfflineQueue: true };
    const connection = await connectRedis({ url: this.redisUrl, purpose: 'jobs', log: this.log, options });
    this.connection = connection;
    this.queue = new Queue(this.queueName, { connection, prefix: this.prefix });
    this.queue.on('error', errorReporterOf(connection));
    // Redis holds only copies of the schedules: when it loses them (a FLUSHALL, a failover to an empty
    // replica, a restart), they come back as soon as it is back, and within one watchdog period anyway.
    connection.on('ready', () => void this.checkSchedules());
    this.watchdog = setInterval(() => void this.checkSchedules(), this.watchdogMs);
    this.watchdog.unref();
    // BullMQ does not close connections it was given: this one is ours to close in stop().
    this.workerConnection = await connectRedis({
      url: this.redisUrl,
      purpose: 'jobs worker',
      log: this.log,
      options,
    });
    this.worker = new Worker(
      this.queueName,
      async (j) => {
        const job = this.jobs.get(j.name);
        if (job) await job.handler();
      },
      { connection: this.workerConnection, prefix: this.prefix, concurrency: 1 },
    );
    this.worker.on('failed', (j, err) =>
      this.log.error({ job: j?.name, err: { name: err.name } }, 'job failed'),
    );
    // Its blocking connection is BullMQ's own copy of ours: its errors come here.
    this.worker.on('error', errorReporterOf(this.workerConnection));
    if (await whenReady(connection)) await settlesWithin(this.checkSchedules(), START_WAIT_MS);
  }

  /**
   * Re-creates the schedules Redis lost. One check at a time, and none while Redis is away: its commands
   * would wait for Redis, one more for every period.
   */
  private checkSchedules(): Promise<void> {
    if (this.checking) return this.checking;
    if (this.connection?.status !== 'ready') return Promise.resolve();
    this.checking = this.ensureSchedulers()
      .catch((err: Error) => this.log.warn({ err: { name: err.name } }, 'could not check job schedules'))
      .finally(() => (this.checking = undefined));
    return this.checking;
  }

  private async ensureSchedulers(): Promise<void> {
    for (const job of this.jobs.values()) {
      if (await this.queue!.getJobScheduler(job.name)) continue;
      await this.queue!.upsertJobScheduler(
        job.name,
        { every: job.everyMs },
        { name: job.name, opts: { removeOnComplete: 100, removeOnFail: 100 } },
      );
    }
  }

  /** Lets a job in flight finish while Redis answers, within a deadline either way. */
  async stop(): Promise<void> {
    if (this.watchdog) clearInterval(this.watchdog);
    await closeBullMq({
      worker: this.worker,
      queue: this.queue,
      pending: this.checking,
      connections: [this.workerConnection, this.connection],
    });
  }

  async check(): Promise<void> {
    if (!this.connection) throw new Error('job runner not started');
    // Not connected: a PING would wait in the offline queue, one more for every probe.
    if (this.connection.status !== 'ready') throw new Error('redis is not connected');
    const pong = await this.connection.ping();
    if (pong !== 'PONG') throw new Error('redis did not answer PING');
  }

  /** Names of the schedulers registered in Redis (for tests and diagnostics). */
  async schedulers(): Promise<string[]> {
    const list = await this.queue?.getJobSchedulers();
    return (list ?? []).map((s) => s.key);
  }
}
