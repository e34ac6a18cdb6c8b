/**
 * When a token is refreshed ahead of its expiry, and how long to wait after a failed refresh.
 *
 * Due time: expiry minus a lead of max(60 s, 10 % of the lifetime), but never more than half the lifetime
 * (a 20 s token is refreshed at 10 s), with ±10 % jitter on the lead (before that cap) so that tokens issued
 * together do not all come due together.
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
