/**
 * Refresh-ahead jobs: the port between whoever learns a connection's next due time (an import, a refresh
 * commit, a failed refresh's backoff, the sweeper) and the queue that fires at that time. With Redis the
 * queue is BullMQ (`refresh-queue.ts`); without it nothing is queued and the in-process sweep reads due
 * times straight from PostgreSQL. Either way PostgreSQL holds the due time: a queued job is only a copy.
 */
import { Injectable } from '@nestjs/common';

/** One connection's next refresh. Nothing secret: ids, the provider key, the row version. */
export interface DueRefresh {
  connectionId: string;
  tenantId: string;
  provider: string;
  /** The row version the due time belongs to; a job for an older version finds nothing to do. */
  version: number;
  /** Failed attempts so far at this version: each retry is its own job. */
  failures: number;
  dueAt: Date;
}

export interface RefreshScheduler {
  schedule(items: DueRefresh[]): Promise<void>;
}

/** The job id: deduplicated by connection, version and attempt. */
export const refreshJobId = (d: Pick<DueRefresh, 'connectionId' | 'version' | 'failures'>) =>
  `${d.connectionId}-v${d.version}-f${d.failures}`;

@Injectable()
export class RefreshJobs {
  private scheduler?: RefreshScheduler;
  private onError: (err: Error) => void = () => undefined;
  private readonly pending: DueRefresh[] = [];

  attach(scheduler: RefreshScheduler, onError: (err: Error) => void): void {
    this.scheduler = scheduler;
    this.onError = onError;
  }

  /**
   * Queues the refreshes; never fails the caller. A lost job costs nothing but time: the sweeper
   * re-creates it from PostgreSQL before it is due.
   */
  schedule(items: DueRefresh[]): void {
    if (!this.scheduler || items.length === 0) return;
    // Items from the same turn of the event loop (a burst of refreshes) go to Redis in one batch.
    const first = this.pending.length === 0;
    this.pending.push(...items);
    if (!first) return;
    setImmediate(() => {
      const batch = this.pending.splice(0);
      this.scheduler!.schedule(batch).catch((err: Error) => this.onError(err));
    });
  }
}

/**
 * Background refreshes in flight in this process: at most `total`, and at most `perProvider` for any one
 * provider, so that a provider whose calls hang until their timeout cannot take every slot.
 */
export class RefreshLimiter {
  private inFlight = 0;
  private readonly byProvider = new Map<string, number>();
  private readonly waiters: { provider: string; resolve: (ok: boolean) => void; timer?: NodeJS.Timeout }[] =
    [];
  /** Most refreshes in flight at once, in all and by provider (benchmarks, tests). */
  peak = 0;
  readonly peakByProvider = new Map<string, number>();

  constructor(
    readonly total: number,
    readonly perProvider: number,
  ) {}

  /** Takes a slot for the provider; false when none came free within `timeoutMs`. */
  acquire(provider: string, timeoutMs = Infinity): Promise<boolean> {
    // Waiters of other providers wait for their own provider's room, never block this one.
    if (this.free(provider) && !this.waiters.some((w) => w.provider === provider)) {
      this.take(provider);
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const waiter: (typeof this.waiters)[number] = { provider, resolve };
      if (Number.isFinite(timeoutMs)) {
        waiter.timer = setTimeout(() => {
          const i = this.waiters.indexOf(waiter);
          if (i >= 0) this.waiters.splice(i, 1);
          resolve(false);
        }, timeoutMs);
      }
      this.waiters.push(waiter);
    });
  }

  release(provider: string): void {
    this.inFlight--;
    const n = (this.byProvider.get(provider) ?? 1) - 1;
    if (n > 0) this.byProvider.set(provider, n);
    else this.byProvider.delete(provider);
    // The oldest waiters whose provider has room go first.
    for (let i = 0; i < this.waiters.length && this.inFlight < this.total;) {
      const w = this.waiters[i];
      if (!this.free(w.provider)) {
        i++;
        continue;
      }
      this.waiters.splice(i, 1);
      if (w.timer) clearTimeout(w.timer);
      this.take(w.provider);
      w.resolve(true);
    }
  }

  resetPeaks(): void {
    this.peak = this.inFlight;
    this.peakByProvider.clear();
  }

  private free(provider: string): boolean {
    return this.inFlight < this.total && (this.byProvider.get(provider) ?? 0) < this.perProvider;
  }

  private take(provider: string): void {
    this.inFlight++;
    const n = (this.byProvider.get(provider) ?? 0) + 1;
    this.byProvider.set(provider, n);
    this.peak = Math.max(this.peak, this.inFlight);
    this.peakByProvider.set(provider, Math.max(this.peakByProvider.get(provider) ?? 0, n));
  }
}
