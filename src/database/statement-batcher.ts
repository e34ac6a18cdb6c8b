/**
 * The engine under the token endpoint's batched statements (decision reads, audit group commit). It gathers the
 * requests of one event-loop turn into one statement and keeps a bounded number of statements in flight, and it
 * holds two promises the batchers above it rely on:
 * - every request settles within its deadline: a request not answered `timeoutMs` after it was made fails with
 *   temporarily_unavailable, whether it was still queued or in a statement the database never answered; a
 *   statement whose requests have all given up frees its slot and is aborted (its connection is dropped);
 * - one request's bad data never fails its neighbours: a statement that the database refuses as data (SQLSTATE
 *   classes 22 and 23) is split in halves and retried until the offending requests are alone, and only they fail.
 *   Connection and server failures fail the whole statement at once: retrying them row by row would only add load.
 */
import { CommonException, CustosException } from '../common/errors.js';

export interface StatementBatcherOptions<I, R> {
  maxBatch: number;
  maxInFlight: number;
  /** A request not answered this long after it was made fails with temporarily_unavailable. */
  timeoutMs: number;
  /**
   * Runs one statement for these items and resolves with one result per item, in order. When `signal` aborts,
   * nobody waits for the answer any more: the connection must be given up, not returned to the pool.
   */
  run(items: I[], signal: AbortSignal): Promise<R[]>;
  /** Told of each request failed by its deadline, and of each row the database refused on its own (metrics). */
  onFailure?(reason: 'timed_out' | 'isolated'): void;
}

interface Pending<I, R> {
  item: I;
  deadline: number;
  settled: boolean;
  resolve(result: R): void;
  reject(err: unknown): void;
}

interface Flight<I, R> {
  members: Pending<I, R>[];
  abort: AbortController;
}

/**
 * Most statements one batch may spend isolating rows the database refused: one bad row among 500 costs about
 * 2·log2(500) ≈ 18; a refusal of every row (a table-wide constraint) is not worth more than this.
 */
const ISOLATION_BUDGET = 64;

/** PostgreSQL refused the statement because of the values in it (data exception, integrity constraint). */
export function isDataError(err: unknown): boolean {
  const code = sqlState(err);
  return code !== undefined && /^2[23]/.test(code);
}

export function sqlState(err: unknown): string | undefined {
  const e = err as { code?: unknown; driverError?: { code?: unknown } } | null;
  const code = e?.code ?? e?.driverError?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** PostgreSQL cannot store NUL, nor a surrogate without its pair (the driver would turn it into U+FFFD). */
export function unstorableText(value: string): boolean {
  return value.includes('\u0000') || /\p{Cs}/u.test(value);
}

/** The text with what PostgreSQL cannot store replaced by U+FFFD. */
export function storableText(value: string): string {
  return value.replaceAll('\u0000', '\ufffd').replace(/\p{Cs}/gu, '\ufffd');
}

function unavailable(cause?: unknown): CustosException {
  const e = new CommonException('temporarily_unavailable', 'The database did not answer in time');
  if (cause !== undefined) e.cause = cause;
  return e;
}

export class StatementBatcher<I, R> {
  private queue: Pending<I, R>[] = [];
  private readonly flights = new Set<Flight<I, R>>();
  private scheduled = false;
  private reaper: NodeJS.Timeout | null = null;
  /** Requests failed by their deadline, and requests failed alone after their batch was split (for tests and metrics). */
  readonly stats = { timedOut: 0, isolated: 0 };

  constructor(private readonly opts: StatementBatcherOptions<I, R>) {}

  submit(item: I): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, deadline: Date.now() + this.opts.timeoutMs, settled: false, resolve, reject });
      this.schedule();
      this.armReaper();
    });
  }

  /** Requests queued or in flight (for readiness and tests). */
  get pending(): number {
    let n = this.queue.length;
    for (const f of this.flights) n += f.members.filter((m) => !m.settled).length;
    return n;
  }

  private schedule(): void {
    if (this.scheduled || this.flights.size >= this.opts.maxInFlight || this.queue.length === 0) return;
    this.scheduled = true;
    // Let the requests of this turn of the event loop join the batch.
    setImmediate(() => {
      this.scheduled = false;
      this.dispatch();
    });
  }

  private dispatch(): void {
    if (this.flights.size >= this.opts.maxInFlight || this.queue.length === 0) return;
    const flight: Flight<I, R> = {
      members: this.queue.splice(0, this.opts.maxBatch),
      abort: new AbortController(),
    };
    this.flights.add(flight);
    void this.execute(flight, flight.members, { left: ISOLATION_BUDGET }).finally(() => {
      this.flights.delete(flight);
      this.schedule();
    });
    this.schedule();
  }

  /** `refused`: the data error of the larger batch these members were split from. */
  private async execute(
    flight: Flight<I, R>,
    members: Pending<I, R>[],
    budget: { left: number },
    refused?: unknown,
  ) {
    const live = members.filter((m) => !m.settled);
    if (live.length === 0) return;
    if (refused !== undefined && budget.left <= 0) {
      // Out of statements to spend on isolation: the rest fail with the refusal they were part of.
      for (const m of live) this.fail(m, refused);
      return;
    }
    const signal = flight.abort.signal;
    let results: R[];
    try {
      budget.left--;
      results = await this.opts.run(
        live.map((m) => m.item),
        signal,
      );
    } catch (err) {
      if (signal.aborted) {
        for (const m of live) this.fail(m, unavailable(err));
        return;
      }
      if (live.length > 1 && isDataError(err) && budget.left > 0) {
        const half = Math.ceil(live.length / 2);
        await this.execute(flight, live.slice(0, half), budget, err);
        await this.execute(flight, live.slice(half), budget, err);
        return;
      }
      if (live.length === 1 && isDataError(err)) {
        this.stats.isolated++;
        this.opts.onFailure?.('isolated');
      }
      for (const m of live) this.fail(m, err);
      return;
    }
    live.forEach((m, i) => {
      if (m.settled) return;
      m.settled = true;
      m.resolve(results[i]);
    });
  }

  private fail(m: Pending<I, R>, err: unknown): void {
    if (m.settled) return;
    m.settled = true;
    m.reject(err);
  }

  /** One timer, set for the earliest deadline of any request still waiting. */
  private armReaper(): void {
    if (this.reaper) return;
    let earliest = this.queue[0]?.deadline ?? Infinity;
    for (const f of this.flights) {
      for (const m of f.members) if (!m.settled && m.deadline < earliest) earliest = m.deadline;
    }
    if (earliest === Infinity) return;
    this.reaper = setTimeout(() => this.reap(), Math.max(0, earliest - Date.now()));
    this.reaper.unref();
  }

  private reap(): void {
    this.reaper = null;
    const now = Date.now();
    // Deadlines grow along the queue: the expired requests are at its head.
    while (this.queue.length > 0 && this.queue[0].deadline <= now) {
      this.stats.timedOut++;
      this.opts.onFailure?.('timed_out');
      this.fail(this.queue.shift()!, unavailable());
    }
    for (const f of this.flights) {
      for (const m of f.members) {
        if (!m.settled && m.deadline <= now) {
          this.stats.timedOut++;
          this.opts.onFailure?.('timed_out');
          this.fail(m, unavailable());
        }
      }
      if (f.members.every((m) => m.settled)) {
        // Nobody waits for this statement any more: free its slot and drop its connection.
        this.flights.delete(f);
        f.abort.abort();
      }
    }
    this.schedule();
    this.armReaper();
  }
}
