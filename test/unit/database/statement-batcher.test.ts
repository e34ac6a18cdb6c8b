/** The engine under the token endpoint's batchers: deadlines, freed slots and isolation of bad rows. */
import { CustosException } from '../../../src/common/errors.js';
import { StatementBatcher } from '../../../src/database/statement-batcher.js';

const dataError = (code = '22021') => Object.assign(new Error('bad data'), { code });

describe('StatementBatcher', () => {
  it('fails queued and in-flight requests of a statement that never answers, aborts it and frees its slot', async () => {
    let hang = true;
    const aborted: boolean[] = [];
    const batcher = new StatementBatcher<number, number>({
      maxBatch: 2,
      maxInFlight: 1,
      timeoutMs: 50,
      run: (items, signal) =>
        hang
          ? new Promise<number[]>(() => {
              signal.addEventListener('abort', () => aborted.push(true));
            })
          : Promise.resolve(items.map((i) => i * 10)),
    });
    // Two fill the only slot and hang; the other three wait in the queue behind them.
    const stuck = await Promise.allSettled([1, 2, 3, 4, 5].map((i) => batcher.submit(i)));
    for (const r of stuck) {
      expect(r.status).toBe('rejected');
      const err = (r as PromiseRejectedResult).reason;
      expect(err).toBeInstanceOf(CustosException);
      expect((err as CustosException).code).toBe('temporarily_unavailable');
    }
    expect(aborted.length).toBeGreaterThan(0);
    hang = false;
    await expect(batcher.submit(6)).resolves.toBe(60);
    expect(batcher.pending).toBe(0);
  });

  it('splits a batch the database refuses as data until only the offending items fail', async () => {
    const statements: number[][] = [];
    const batcher = new StatementBatcher<number, number>({
      maxBatch: 100,
      maxInFlight: 1,
      timeoutMs: 10_000,
      run: async (items) => {
        statements.push(items);
        if (items.includes(13) || items.includes(77)) throw dataError();
        return items;
      },
    });
    const results = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => batcher.submit(i)));
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [i] : []));
    expect(failed).toEqual([13, 77]);
    expect((results[13] as PromiseRejectedResult).reason.code).toBe('22021');
    expect(batcher.stats.isolated).toBe(2);
    // Far fewer statements than one per item.
    expect(statements.length).toBeLessThan(30);
  });

  it('fails the whole batch at once for an error that is not about the data', async () => {
    let statements = 0;
    const batcher = new StatementBatcher<number, number>({
      maxBatch: 100,
      maxInFlight: 1,
      timeoutMs: 10_000,
      run: async () => {
        statements++;
        throw Object.assign(new Error('terminating connection'), { code: '57P01' });
      },
    });
    const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => batcher.submit(i)));
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    expect(statements).toBe(1);
  });

  it('bounds the statements spent when the database refuses every row', async () => {
    let statements = 0;
    const batcher = new StatementBatcher<number, number>({
      maxBatch: 500,
      maxInFlight: 1,
      timeoutMs: 10_000,
      run: async () => {
        statements++;
        throw dataError('23514');
      },
    });
    const results = await Promise.allSettled(Array.from({ length: 500 }, (_, i) => batcher.submit(i)));
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    expect(statements).toBeLessThanOrEqual(64);
  });
});
