import {
  parseRetryAfter,
  refreshDueAt,
  retryDelayMs,
  minRemainingMs,
  refreshDueOnRead,
} from '../../../src/connections/refresh-schedule.js';

const now = new Date('2026-11-22T00:00:00Z');
const at = (seconds: number) => new Date(now.getTime() + seconds * 1000);
const secondsUntil = (d: Date | null) => (d!.getTime() - now.getTime()) / 1000;

describe('refresh due time', () => {
  it('refreshes a 20 s token at about half its life, never later', () => {
    for (const r of [0, 0.5, 0.999]) {
      const due = secondsUntil(refreshDueAt(now, at(20), () => r));
      expect(due).toBeGreaterThanOrEqual(10 - 1e-9);
      expect(due).toBeLessThanOrEqual(11);
    }
  });

  it('leads by 60 s for short-lived tokens and by 10 % for long-lived ones, with ±10 % jitter', () => {
    expect(secondsUntil(refreshDueAt(now, at(300), () => 0.5))).toBeCloseTo(240, 5);
    expect(secondsUntil(refreshDueAt(now, at(3600), () => 0.5))).toBeCloseTo(3240, 5);
    expect(secondsUntil(refreshDueAt(now, at(3600), () => 0))).toBeCloseTo(3600 - 324, 5);
    expect(secondsUntil(refreshDueAt(now, at(3600), () => 1))).toBeCloseTo(3600 - 396, 5);
  });

  it('has no due time for tokens that do not expire, and is due at once for expired ones', () => {
    expect(refreshDueAt(now, null)).toBeNull();
    expect(refreshDueAt(now, at(-5))).toEqual(now);
  });
});

describe('retry delay', () => {
  it('follows Retry-After when the provider sends it (capped at an hour)', () => {
    expect(retryDelayMs(1, 30)).toBe(30_000);
    expect(retryDelayMs(7, 86_400)).toBe(3_600_000);
  });

  it('backs off exponentially with jitter, capped at five minutes', () => {
    expect(retryDelayMs(1, null, () => 0.5)).toBe(5_000);
    expect(retryDelayMs(3, null, () => 0.5)).toBe(20_000);
    expect(retryDelayMs(20, null, () => 0.5)).toBe(300_000);
    expect(retryDelayMs(2, null, () => 0)).toBe(8_000);
    expect(retryDelayMs(2, null, () => 1)).toBe(12_000);
  });

  it('reads Retry-After as seconds or as an HTTP date', () => {
    expect(parseRetryAfter('120')).toBe(120);
    expect(parseRetryAfter(new Date(Date.now() + 30_000).toUTCString())).toBeGreaterThanOrEqual(29);
    expect(parseRetryAfter('soon')).toBeNull();
    expect(parseRetryAfter(undefined)).toBeNull();
  });
});

describe('refreshDueOnRead', () => {
  const now = Date.parse('2030-01-01T00:00:00Z');
  const at = (ms: number) => new Date(now + ms);

  it('follows the due time, not a fixed minute: a one-minute token is not due right after it is issued', () => {
    expect(refreshDueOnRead(at(55_000), at(25_000), now)).toBe(false);
    expect(refreshDueOnRead(at(30_000), at(0), now)).toBe(true);
  });

  it('is due when too little is left to hand the token out, whatever the due time says', () => {
    expect(refreshDueOnRead(at(5_000), at(3_600_000), now)).toBe(true);
  });

  it('falls back to a one-minute margin for a row without a due time', () => {
    expect(refreshDueOnRead(at(59_000), null, now)).toBe(true);
    expect(refreshDueOnRead(at(61_000), null, now)).toBe(false);
  });

  it('never refreshes a token without expiry unless it was scheduled', () => {
    expect(refreshDueOnRead(null, null, now)).toBe(false);
  });

  it('agrees with the schedule for any lifetime: not due at issue, due at the due time', () => {
    for (const lifetime of [2_000, 20_000, 60_000, 600_000, 3_600_000, 86_400_000]) {
      const due = refreshDueAt(new Date(now), new Date(now + lifetime), () => 0.5)!;
      expect(refreshDueOnRead(new Date(now + lifetime), due, now)).toBe(false);
      expect(refreshDueOnRead(new Date(now + lifetime), due, due.getTime())).toBe(true);
    }
  });
});

describe('minRemainingMs', () => {
  it('is 10 s, or half the lead for tokens whose lead is shorter', () => {
    const exp = new Date('2030-01-01T00:01:00Z');
    expect(minRemainingMs(exp, new Date(exp.getTime() - 30_000))).toBe(10_000);
    expect(minRemainingMs(exp, new Date(exp.getTime() - 4_000))).toBe(2_000);
    expect(minRemainingMs(exp, null)).toBe(10_000);
  });
});
