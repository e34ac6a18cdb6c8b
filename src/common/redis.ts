/**
 * Every Redis connection Custos opens: the BullMQ queues and workers, the key-cache bus and the rate limiter's
 * shared counters. Redis holds only copies and signals, so no connection may hold up start-up or shutdown: a
 * connection is made in the background and retried for as long as the process runs, start-up waits for it a
 * moment at most, an outage is logged once (then once a minute) instead of at every attempt, and a close that
 * does not finish in time drops the connection.
 *
 * ioredis is imported when the first connection is made: the embedded default, without Redis, never loads it.
 */
import type { Queue, Worker } from 'bullmq';
import type { Redis, RedisOptions } from 'ioredis';
import type { Logger } from 'pino';

/** How long start-up waits for Redis to answer before it goes on without it. */
export const START_WAIT_MS = 2_000;
/** How long a graceful close (QUIT, BullMQ's close) may take before the connections are dropped. */
const STOP_WAIT_MS = 2_000;
const CONNECT_TIMEOUT_MS = 5_000;
/** Idle time before TCP keepalive probes: a Redis that vanished without a reset is noticed in seconds, not hours. */
const KEEPALIVE_MS = 10_000;
/** Reconnect delays double from the first to the last, then stay there. */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 5_000;
/** While an outage lasts, each kind of error is logged at most once per this. */
const ERROR_LOG_EVERY_MS = 60_000;

/** What differs between uses; how to connect, retry and keep alive is the same for every connection. */
export type RedisUseOptions = Omit<RedisOptions, 'lazyConnect' | 'keepAlive' | 'retryStrategy'>;

export interface RedisConnectionOptions {
  /** May hold a password: never logged. */
  url: string;
  /** Names the connection in logs: `jobs`, `refresh worker`, `key cache bus (publish)`, ... */
  purpose: string;
  log: Logger;
  options?: RedisUseOptions;
}

/** Each connection's error log, for the BullMQ objects built on it. */
const errorLogs = new WeakMap<Redis, RedisErrorLog>();

/** The delay before reconnect attempt `attempt` (1, 2, ...): doubling, at most `RETRY_MAX_MS`, never giving up. */
export function reconnectDelay(attempt: number): number {
  return Math.min(RETRY_FIRST_MS * 2 ** Math.min(Math.max(attempt - 1, 0), 16), RETRY_MAX_MS);
}

/**
 * Opens a connection in the background and returns it at once; it is not ready yet (see `whenReady`). Commands
 * sent meanwhile wait or fail as the use's options say.
 *
 * The connection starts at once rather than lazily: BullMQ gives a worker a copy of it (`duplicate()`, which
 * keeps these options) and calls `connect()` on a lazy copy, which rejects at the first refused attempt and
 * leaves that worker unable to fetch a job even after Redis is up.
 */
export async function connectRedis(opts: RedisConnectionOptions): Promise<Redis> {
  const { Redis } = await import('ioredis');
  const client = new Redis(opts.url, {
    connectTimeout: CONNECT_TIMEOUT_MS,
    ...opts.options,
    lazyConnect: false,
    keepAlive: KEEPALIVE_MS,
    retryStrategy: reconnectDelay,
  });
  // Attached before the first attempt can fail (its events come on a later turn of the event loop).
  const errors = new RedisErrorLog(opts.log, opts.purpose);
  client.on('error', errors.report);
  client.on('ready', errors.recovered);
  errorLogs.set(client, errors);
  return client;
}

/**
 * Where the `error` events of a BullMQ queue or worker built on `client` go: that connection's log, so that an
 * outage is one line however many objects (and BullMQ's own copies of the connection) report it.
 */
export function errorReporterOf(client: Redis): (err: Error) => void {
  const errors = errorLogs.get(client);
  if (!errors) throw new Error('not a connection made by connectRedis');
  return errors.report;
}

/**
 * Logs a connection's errors at warn, each kind (name and code) when it first occurs and then at most once a
 * minute: ioredis reports every reconnect attempt. Never the message, which can name the host.
 */
export class RedisErrorLog {
  private readonly logged = new Map<string, number>();

  constructor(
    private readonly log: Logger,
    private readonly purpose: string,
  ) {}

  readonly report = (err: Error): void => {
    // Not `code`: the central redaction takes every `code` field for an OAuth authorization code.
    const reason = (err as NodeJS.ErrnoException).code;
    const kind = `${err.name}:${reason ?? ''}`;
    const now = Date.now();
    const last = this.logged.get(kind);
    if (last !== undefined && now - last < ERROR_LOG_EVERY_MS) return;
    this.logged.set(kind, now);
    this.log.warn({ purpose: this.purpose, err: { name: err.name, reason } }, 'redis connection error');
  };

  /** The connection is up again: says so if an error was logged, and logs the next outage's first error at once. */
  readonly recovered = (): void => {
    if (this.logged.size === 0) return;
    this.logged.clear();
    this.log.info({ purpose: this.purpose }, 'redis connection ready again');
  };
}

/**
 * Resolves true once the connection is ready, false at its first failed attempt or after `ms`: start-up waits
 * for a Redis that answers, and goes on without one that refuses or does not answer.
 */
export function whenReady(client: Redis, ms = START_WAIT_MS): Promise<boolean> {
  if (client.status === 'ready') return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ready: boolean) => {
      clearTimeout(timer);
      client.off('ready', onReady);
      client.off('error', onFailure);
      client.off('end', onFailure);
      resolve(ready);
    };
    const onReady = () => done(true);
    const onFailure = () => done(false);
    const timer = setTimeout(onFailure, ms);
    client.once('ready', onReady);
    client.once('error', onFailure);
    client.once('end', onFailure);
  });
}

/** Whether `p` settled (either way) within `ms`. What it waits for runs on; a rejection is the caller's to log. */
export async function settlesWithin(p: Promise<unknown> | undefined, ms: number): Promise<boolean> {
  if (!p) return true;
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([
    p.then(
      () => true,
      () => true,
    ),
    new Promise<false>((r) => (timer = setTimeout(() => r(false), Math.max(0, ms)))),
  ]);
  clearTimeout(timer);
  return settled;
}

/**
 * QUIT within `ms`, so replies in flight still arrive; a connection that is not ready, or does not answer in
 * time, is dropped instead (a QUIT queued behind commands waiting for Redis would wait as long as they do).
 */
export async function closeRedis(client: Redis | null | undefined, ms = STOP_WAIT_MS): Promise<void> {
  if (!client || client.status === 'end') return;
  if (client.status === 'ready' && (await settlesWithin(client.quit(), ms))) return;
  client.disconnect();
}

/**
 * Closes a BullMQ worker and queue, then drops the connections they were given. A graceful close lets the jobs
 * in flight finish, which needs Redis: while Redis answers it may take `graceMs`; with Redis away the worker is
 * closed by force at once (a job in flight cannot complete anyway; its lock expires and a worker runs it again).
 * Past the deadline the connections are dropped whatever BullMQ still waits for (a worker's close can hang
 * after Redis restarted: taskforcesh/bullmq#4656), the worker's own blocking connection included.
 */
export async function closeBullMq(parts: {
  worker?: Worker;
  queue?: Queue;
  /** Work on the queue that should finish first while Redis answers (a sweep adding jobs). */
  pending?: Promise<unknown>;
  connections: (Redis | undefined)[];
  graceMs?: number;
}): Promise<void> {
  const up = parts.connections.every((c) => !c || c.status === 'ready');
  const until = Date.now() + (up ? (parts.graceMs ?? STOP_WAIT_MS) : 0);
  if (up) await settlesWithin(parts.pending, until - Date.now());
  const closed = await settlesWithin(
    Promise.allSettled([parts.worker?.close(!up), parts.queue?.close()]),
    Math.max(until - Date.now(), STOP_WAIT_MS / 4),
  );
  if (!closed)
    void parts.worker
      ?.getBackend()
      .disconnectBlocking(false)
      .catch(() => undefined);
  for (const c of parts.connections) c?.disconnect();
}
