/**
 * What every fault run (npm run test:faults) shares: a steady open-loop load at a fixed rate, readiness
 * sampling, the figures computed from what was answered, and the result file under bench/results/.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface Sample {
  id: string;
  /** Milliseconds since the run's clock started. */
  start: number;
  end: number | null;
  status: number | null;
  /** A 200 that carried the expected credential. */
  released: boolean;
}

export interface Outcome {
  status: number;
  released: boolean;
}

export interface Load {
  samples: Sample[];
  /** Stops sending and waits up to `settleMs` for requests still open; those left are hung. */
  stop(settleMs: number): Promise<void>;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function runClock(): () => number {
  const t0 = Date.now();
  return () => Date.now() - t0;
}

/** Sends `ratePerSecond` requests a second whatever the answers (open loop), as real traffic does. */
export function steadyLoad(
  now: () => number,
  ratePerSecond: number,
  prefix: string,
  send: (id: string) => Promise<Outcome>,
): Load {
  const samples: Sample[] = [];
  const open = new Set<Promise<void>>();
  let n = 0;
  const t0 = now();
  const tick = setInterval(() => {
    const due = Math.floor(((now() - t0) / 1000) * ratePerSecond);
    while (n < due) {
      const sample: Sample = {
        id: `${prefix}-${n++}`,
        start: now(),
        end: null,
        status: null,
        released: false,
      };
      samples.push(sample);
      const p = send(sample.id)
        .then((o) => {
          sample.status = o.status;
          sample.released = o.released;
        })
        .catch(() => {
          sample.status = -1;
        })
        .finally(() => {
          sample.end = now();
          open.delete(p);
        });
      open.add(p);
    }
  }, 5);
  return {
    samples,
    async stop(settleMs) {
      clearInterval(tick);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...open]),
        new Promise((r) => {
          timer = setTimeout(r, settleMs);
        }),
      ]);
      clearTimeout(timer);
    },
  };
}

/** Samples GET /readyz until stopped: [time, status]. */
export function readinessSampler(now: () => number, check: () => Promise<number>, everyMs = 500) {
  const points: [number, number][] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t = now();
      points.push([t, await check().catch(() => -1)]);
      await sleep(everyMs);
    }
  })();
  return {
    points,
    async stop() {
      running = false;
      await loop;
    },
  };
}

export interface LoadFigures {
  requests: number;
  released: number;
  /** Answers other than a release, by status (-1: the request threw). */
  failedByStatus: Record<string, number>;
  /** Answers that are neither a release nor 503 (401/500 would tell a client its credentials are bad). */
  unexpected: number;
  /** Requests still open when the load stopped. */
  hung: number;
  /** Failed requests, as a time span relative to the start of the fault (null when none failed). */
  failedWindowMs: [number, number] | null;
  /** From the end of the fault to the first request after which every request was answered (null: never). */
  timeToRecoverMs: number | null;
  slowestAnswerMs: number;
}

export function loadFigures(
  samples: Sample[],
  faultStart: number,
  faultEnd: number,
  ok: (s: Sample) => boolean,
  expected: (s: Sample) => boolean,
): LoadFigures {
  const failedByStatus: Record<string, number> = {};
  let hung = 0;
  let unexpected = 0;
  let slowest = 0;
  const failed: Sample[] = [];
  for (const s of samples) {
    if (s.end === null) {
      hung++;
      continue;
    }
    slowest = Math.max(slowest, s.end - s.start);
    if (ok(s)) continue;
    failed.push(s);
    failedByStatus[String(s.status)] = (failedByStatus[String(s.status)] ?? 0) + 1;
    if (!expected(s)) unexpected++;
  }
  // Recovered from the first request after the last failure (all answered ones after it succeeded).
  const sorted = [...samples].sort((a, b) => a.start - b.start);
  let lastBad = -1;
  sorted.forEach((s, i) => {
    if (s.end === null || !ok(s)) lastBad = i;
  });
  const firstGood = sorted[lastBad + 1];
  return {
    requests: samples.length,
    released: samples.filter(ok).length,
    failedByStatus,
    unexpected,
    hung,
    failedWindowMs:
      failed.length > 0
        ? [
            Math.min(...failed.map((s) => s.start)) - faultStart,
            Math.max(...failed.map((s) => s.end!)) - faultStart,
          ]
        : null,
    timeToRecoverMs: firstGood ? Math.max(0, firstGood.start - faultEnd) : null,
    slowestAnswerMs: slowest,
  };
}

/** From the end of the fault to the first ready answer after which readiness stayed ready (null: never). */
export function readinessRecovery(points: [number, number][], faultEnd: number): number | null {
  let lastBad = -1;
  points.forEach(([, status], i) => {
    if (status !== 200) lastBad = i;
  });
  const first = points[lastBad + 1];
  return first ? Math.max(0, first[0] - faultEnd) : null;
}

/** Writes bench/results/faults-<name>-<timestamp>.json and returns its path. */
export function writeResults(name: string, data: Record<string, unknown>): string {
  const dir = path.join(__dirname, '../../bench/results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `faults-${name}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  const machine = {
    node: process.version,
    cpus: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
  };
  fs.writeFileSync(file, JSON.stringify({ run: `faults-${name}`, machine, ...data }, null, 2) + '\n');
  return file;
}
