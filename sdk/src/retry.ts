/**
 * When and how long to wait before asking Custos again: exponential backoff with full jitter, or Custos's own
 * `Retry-After` (seconds or an HTTP date) when it sends one, never longer than `maxDelayMs`.
 */
import { CustosError } from './errors.js';

export interface RetryOptions {
  /** Attempts in all, the first included. Default 3. */
  attempts?: number;
  /** The first backoff's ceiling; each later one doubles it. Default 200 ms. */
  baseDelayMs?: number;
  /** The longest wait between attempts, `Retry-After` included. Default 5 s. */
  maxDelayMs?: number;
}

export type RetryPolicy = Required<RetryOptions>;

export const DEFAULT_RETRY: RetryPolicy = { attempts: 3, baseDelayMs: 200, maxDelayMs: 5_000 };
export const NO_RETRY: RetryPolicy = { attempts: 1, baseDelayMs: 0, maxDelayMs: 0 };

/** What `onRetry` is told before each wait. */
export interface RetryEvent {
  /** The attempt that just failed (1 for the first). */
  attempt: number;
  /** How long the SDK waits before the next attempt. */
  delayMs: number;
  /** The failure's code: Custos's `error`, or `network_error` / `timeout`. */
  code: string;
  /** Custos's HTTP status, when it answered. */
  status?: number;
}

/** HTTP statuses worth another attempt: throttled, or Custos (or a gateway in front) briefly unavailable. */
const RETRYABLE_STATUSES = new Set([429, 502, 503, 504]);

/** Whether a failure may go away on its own: a network error, a timeout, 429, 502, 503 or 504. */
export function isRetryable(err: unknown): err is CustosError {
  if (!(err instanceof CustosError)) return false;
  if (err.code === 'network_error' || err.code === 'timeout') return true;
  return err.status !== undefined && RETRYABLE_STATUSES.has(err.status);
}

/** A `Retry-After` value (delay-seconds or an HTTP date) in whole seconds; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (value === null || value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d{1,9}$/.test(trimmed)) return Number(trimmed);
  // An HTTP date always names a weekday or month; Date.parse would read a bare number as a year.
  if (!/[A-Za-z]/.test(trimmed)) return undefined;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - now) / 1000));
}

/**
 * The wait after failed attempt number `attempt` (1-based): `Retry-After` when given, else a random time
 * between 0 and `baseDelayMs · 2^(attempt-1)` (full jitter); both capped by `maxDelayMs`.
 */
export function retryDelayMs(
  policy: RetryPolicy,
  attempt: number,
  retryAfterSeconds: number | undefined,
  random: () => number = Math.random,
): number {
  if (retryAfterSeconds !== undefined) return Math.min(retryAfterSeconds * 1000, policy.maxDelayMs);
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * ceiling);
}

/** Waits `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
