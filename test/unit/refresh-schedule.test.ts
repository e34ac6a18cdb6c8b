import { parseRetryAfter, refreshDueAt, retryDelayMs } from '../../src/connections/refresh-schedule.js';

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
