import { RefreshLimiter, refreshJobId } from '../../../src/jobs/refresh-jobs.js';

describe('RefreshLimiter', () => {
  it('caps refreshes in all and per provider, and hands freed slots to the oldest waiter that fits', async () => {
    const limiter = new RefreshLimiter(3, 2);
    expect(await limiter.acquire('slow')).toBe(true);
    expect(await limiter.acquire('slow')).toBe(true);
    // The provider is full: a third call for it waits, while another provider still gets a slot.
    let third = false;
    const waiting = limiter.acquire('slow').then((ok) => (third = ok));
    expect(await limiter.acquire('fast')).toBe(true);
    // Now the total is full too.
    let fourth = false;
    const alsoWaiting = limiter.acquire('fast').then((ok) => (fourth = ok));
    await Promise.resolve();
    expect([third, fourth]).toEqual([false, false]);
    expect(limiter.peak).toBe(3);
    expect(limiter.peakByProvider.get('slow')).toBe(2);
    // A 'fast' slot frees: the 'slow' waiter is older but its provider is still full, so 'fast' goes.
    limiter.release('fast');
    await alsoWaiting;
    expect([third, fourth]).toEqual([false, true]);
    limiter.release('slow');
    await waiting;
    expect(third).toBe(true);
    expect(limiter.peakByProvider.get('slow')).toBe(2);
  });

  it('gives up after the timeout, so a job can go back to the queue instead of holding a slot', async () => {
    const limiter = new RefreshLimiter(10, 1);
    expect(await limiter.acquire('down')).toBe(true);
    expect(await limiter.acquire('down', 30)).toBe(false);
    // The timed-out waiter is gone: a release does not hand it a slot it no longer waits for.
    limiter.release('down');
    expect(await limiter.acquire('down', 0)).toBe(true);
  });
});

describe('refresh job ids', () => {
  it('deduplicate by connection, version and attempt', () => {
    const a = { connectionId: 'c1', version: 3, failures: 0 };
    expect(refreshJobId(a)).toBe(refreshJobId({ ...a }));
    expect(refreshJobId(a)).not.toBe(refreshJobId({ ...a, version: 4 }));
    expect(refreshJobId(a)).not.toBe(refreshJobId({ ...a, failures: 1 }));
    // BullMQ refuses ':' in custom ids and integer-looking ids.
    expect(refreshJobId(a)).not.toContain(':');
    expect(Number.isNaN(Number(refreshJobId(a)))).toBe(true);
  });
});
