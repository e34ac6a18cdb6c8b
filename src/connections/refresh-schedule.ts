/**
 * When a token is refreshed ahead of its expiry, and how long to wait after a failed refresh.
 *
 * Due time: expiry minus a lead of max(60 s, 10 % of the lifetime), but never more than half the lifetime
 * (a 20 s token is refreshed at 10 s), with ±10 % jitter on the lead (before that cap) so that tokens issued
 * together do not all come due together.
 *
 * On read (the token endpoint, and a refresher re-reading a row it leased): a token is refreshed once that due
 * time has passed, so reads follow the same schedule as the background refresh; a token with less left than
 * min(10 s, half its lead) is not handed out at all. A row without a due time (never scheduled) is due with
 * under a minute left.
 *
 * Retry: exponential backoff with jitter (5 s doubling, capped at 5 minutes), or the provider's
 * `Retry-After` when it sends one (429, 503), capped at an hour.
 */
export function refreshDueAt(now: Date, expiresAt: Date | null, random = Math.random): Date | null {
  if (!expiresAt) return null;
  const lifetime = expiresAt.getTime() - now.getTime();
  if (lifetime <= 0) return now;
  const jittered = Math.max(60_000, lifetime * 0.1) * (0.9 + 0.2 * random());
  return new Date(expiresAt.getTime() - Math.min(jittered, lifetime / 2));
}

export function retryDelayMs(
  failures: number,
  retryAfterSeconds: number | null,
  random = Math.random,
): number {
  if (retryAfterSeconds !== null && retryAfterSeconds >= 0) return Math.min(retryAfterSeconds, 3600) * 1000;
  const base = Math.min(5_000 * 2 ** Math.max(0, failures - 1), 300_000);
  return Math.round(base * (0.8 + 0.4 * random()));
}

/** A `Retry-After` header value (seconds or an HTTP date), in seconds; null when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | null {
  if (!value) return null;
  if (/^\d{1,7}$/.test(value.trim())) return Number(value.trim());
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - now) / 1000));
}

/** Rows without a due time (not scheduled): refreshed on read with less than this left. */
const UNSCHEDULED_READ_MARGIN_MS = 60_000;
/** The most life a token must have left to be handed out (less for tokens whose whole lead is shorter). */
const MAX_MIN_REMAINING_MS = 10_000;

/** The least life a token must have left to be handed out: 10 s, or half its refresh lead when that is shorter. */
export function minRemainingMs(expiresAt: Date, dueAt: Date | null): number {
  if (!dueAt) return MAX_MIN_REMAINING_MS;
  const lead = expiresAt.getTime() - dueAt.getTime();
  return lead > 0 ? Math.min(MAX_MIN_REMAINING_MS, lead / 2) : MAX_MIN_REMAINING_MS;
}

/**
 * Whether a read should refresh the token before using it: its scheduled refresh has come due, it is too
 * close to expiry to hand out, or (a row without a schedule) it has under a minute left.
 */
export function refreshDueOnRead(expiresAt: Date | null, dueAt: Date | null, now = Date.now()): boolean {
  if (!expiresAt) return dueAt !== null && dueAt.getTime() <= now;
  const remaining = expiresAt.getTime() - now;
  if (remaining < minRemainingMs(expiresAt, dueAt)) return true;
  return dueAt ? dueAt.getTime() <= now : remaining < UNSCHEDULED_READ_MARGIN_MS;
}
