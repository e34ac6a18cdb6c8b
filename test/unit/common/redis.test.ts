/**
 * The Redis connection factory, against a port where nothing listens: connections retry for as long as the process
 * runs with a bounded delay, an outage is logged once with the connection's purpose and never with its URL (which
 * may hold a password), start-up is not held up, and a close stops the retries at once.
 */
import { Writable } from 'node:stream';
import { createLogger } from '../../../src/common/logger.js';
import {
  closeRedis,
  connectRedis,
  reconnectDelay,
  RedisErrorLog,
  settlesWithin,
  whenReady,
} from '../../../src/common/redis.js';
import { freePort } from '../../support/processes.js';

const PASSWORD = 'pw-never-logged-7f3a';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      raw.push(chunk.toString());
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      cb();
    },
  });
  return { log: createLogger('debug', sink), lines, raw };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('reconnectDelay', () => {
  it('doubles from 100 ms up to 5 s, and never gives up', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map(reconnectDelay)).toEqual([100, 200, 400, 800, 1600, 3200, 5000]);
    for (const attempt of [8, 50, 1_000, 1e9]) expect(reconnectDelay(attempt)).toBe(5000);
  });
});

describe('RedisErrorLog', () => {
  const refused = Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:6379'), { code: 'ECONNREFUSED' });

  it('logs each kind of error once while an outage lasts, and the first one again after a recovery', () => {
    const { log, lines } = capture();
    const errors = new RedisErrorLog(log, 'jobs');
    for (let i = 0; i < 20; i++) errors.report(refused);
    errors.report(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' }));
    expect(lines.map((l) => [l.msg, (l.err as { reason: string }).reason])).toEqual([
      ['redis connection error', 'ECONNREFUSED'],
      ['redis connection error', 'ETIMEDOUT'],
    ]);
    errors.recovered();
    errors.recovered();
    errors.report(refused);
    expect(lines.map((l) => l.msg)).toEqual([
      'redis connection error',
      'redis connection error',
      'redis connection ready again',
      'redis connection error',
    ]);
    expect(lines.every((l) => l.purpose === 'jobs')).toBe(true);
  });

  it('logs the error name and code, never its message (it can name the host)', () => {
    const { log, raw } = capture();
    new RedisErrorLog(log, 'jobs').report(refused);
    expect(raw.join('')).not.toContain('10.0.0.1');
  });
});

describe('connectRedis with nothing listening', () => {
  let url: string;
  let port: number;

  beforeAll(async () => {
    port = await freePort();
    url = `redis://custos:${PASSWORD}@127.0.0.1:${port}/0`;
  });

  it('keeps retrying, logs the outage once with its purpose and reason, and never the URL or password', async () => {
    const { log, lines, raw } = capture();
    const client = await connectRedis({ url, purpose: 'refresh queue', log });
    let attempts = 0;
    client.on('error', () => attempts++);
    try {
      // 100 + 200 + 400 ms of backoff: four attempts at least.
      for (let i = 0; i < 100 && attempts < 4; i++) await sleep(50);
      expect(attempts).toBeGreaterThanOrEqual(4);
      const warned = lines.filter((l) => l.msg === 'redis connection error');
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatchObject({
        level: 40,
        purpose: 'refresh queue',
        err: { reason: 'ECONNREFUSED' },
      });
      const all = raw.join('');
      for (const secret of [PASSWORD, url, 'redis://', `:${port}`]) expect(all).not.toContain(secret);
    } finally {
      client.disconnect();
    }
  });

  it('lets start-up go on at the first refused attempt', async () => {
    const { log } = capture();
    const client = await connectRedis({ url, purpose: 'jobs', log });
    try {
      // The deadline is far off: what ends the wait is the refusal.
      const ready = whenReady(client, 60_000);
      expect(await settlesWithin(ready, 2_000)).toBe(true);
      expect(await ready).toBe(false);
    } finally {
      client.disconnect();
    }
  });

  it('stops retrying once closed, and the close does not wait for Redis', async () => {
    const { log } = capture();
    const client = await connectRedis({
      url,
      purpose: 'key cache bus (subscribe)',
      log,
      options: { maxRetriesPerRequest: null },
    });
    // A command waiting for Redis, as a SUBSCRIBE does while it is away: a QUIT would queue behind it.
    void client.subscribe('custos:test').catch(() => undefined);
    let attempts = 0;
    client.on('error', () => attempts++);
    for (let i = 0; i < 100 && attempts < 2; i++) await sleep(50);
    expect(await settlesWithin(closeRedis(client, 60_000), 1_000)).toBe(true);
    const after = attempts;
    await sleep(1_000);
    expect(attempts).toBe(after);
  });
});
