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
  /** The error code of a failed answer, when it had one (`key_unavailable`, `temporarily_unavailable`, ...). */
  error?: string;
}

export interface Outcome {
  status: number;
  released: boolean;
  error?: string;
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
          if (o.error !== undefined) sample.error = o.error;
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
  /** The same, by status and error code (`503 key_unavailable`). */
  failedByError: Record<string, number>;
  /** Answers that are neither a release nor 503 (401/500 would tell a client its credentials are bad). */
  unexpected: number;
  /** Requests still open when the load stopped. */
  hung: number;
  /** Failed requests, as a time span relative to the start of the fault (null when none failed). */
  failedWindowMs: [number, number] | null;
  /** From the end of the fault to the first request after which every request was answered (null: never). */
  timeToRecoverMs: number | null;
  slowestAnswerMs: number;
  /** How long the failed answers took (a circuit breaker's 503 is fast; a timeout's is not); null when none failed. */
  failedAnswerMs: { p50: number; p99: number; max: number } | null;
  /** Failed answers that took a second or more (waited out a deadline instead of failing fast). */
  failedAfterOneSecondOrMore: number;
}

/** The q-quantile (0..1) of `values` (nearest rank); 0 for none. */
export function quantile(values: number[], q: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

export function loadFigures(
  samples: Sample[],
  faultStart: number,
  faultEnd: number,
  ok: (s: Sample) => boolean,
  expected: (s: Sample) => boolean,
): LoadFigures {
  const failedByStatus: Record<string, number> = {};
  const failedByError: Record<string, number> = {};
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
    const byError = s.error === undefined ? String(s.status) : `${s.status} ${s.error}`;
    failedByError[byError] = (failedByError[byError] ?? 0) + 1;
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
    failedByError,
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
    failedAnswerMs:
      failed.length > 0
        ? (() => {
            const ms = failed.map((s) => s.end! - s.start);
            return { p50: quantile(ms, 0.5), p99: quantile(ms, 0.99), max: Math.max(...ms) };
          })()
        : null,
    failedAfterOneSecondOrMore: failed.filter((s) => s.end! - s.start >= 1000).length,
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

/** One kind of traffic of a scenario: its rate, how a request is sent, and which failures the fault explains. */
export interface Stream {
  name: string;
  ratePerSecond: number;
  send: (id: string) => Promise<Outcome>;
  /** A failure the fault explains (default: 503, what an outage must answer); anything else is `unexpected`. */
  expected?: (s: Sample) => boolean;
}

export interface ScenarioRun {
  faultStart: number;
  faultEnd: number;
  samples: Record<string, Sample[]>;
  figures: Record<string, LoadFigures>;
  readinessRecoveredMs: number | null;
  readinessUnavailableSamples: number;
}

/**
 * Runs every stream at its rate for `warmMs`, then `fault` (which returns once the fault has ended, optionally
 * with when it really began and ended, on the run's clock), then `afterMs` more, and computes each stream's figures.
 * Readiness, when given, is sampled all along.
 */
export async function runScenario(opts: {
  now: () => number;
  name: string;
  streams: Stream[];
  readiness?: () => Promise<number>;
  warmMs: number;
  afterMs: number;
  settleMs: number;
  fault: () => Promise<void | { start?: number; end?: number }>;
}): Promise<ScenarioRun> {
  const { now } = opts;
  const loads = opts.streams.map((st) =>
    steadyLoad(now, st.ratePerSecond, `${st.name}-${opts.name}`, st.send),
  );
  const readiness = opts.readiness ? readinessSampler(now, opts.readiness) : undefined;
  await sleep(opts.warmMs);
  let faultStart = now();
  const marks = await opts.fault();
  let faultEnd = now();
  if (marks?.start !== undefined) faultStart = marks.start;
  if (marks?.end !== undefined) faultEnd = marks.end;
  await sleep(opts.afterMs);
  await Promise.all(loads.map((l) => l.stop(opts.settleMs)));
  await readiness?.stop();
  const samples: Record<string, Sample[]> = {};
  const figures: Record<string, LoadFigures> = {};
  opts.streams.forEach((st, i) => {
    samples[st.name] = loads[i].samples;
    figures[st.name] = loadFigures(
      loads[i].samples,
      faultStart,
      faultEnd,
      (x) => x.released,
      st.expected ?? ((x) => x.status === 503),
    );
  });
  return {
    faultStart,
    faultEnd,
    samples,
    figures,
    readinessRecoveredMs: readiness ? readinessRecovery(readiness.points, faultEnd) : null,
    readinessUnavailableSamples: readiness ? readiness.points.filter(([, st]) => st !== 200).length : 0,
  };
}

/** Request ids among `ids` whose `allowed` token.exchange audit event is in the database. */
export async function auditedReleases(
  query: (sql: string, params: unknown[]) => Promise<{ request_id: string }[]>,
  ids: string[],
): Promise<Set<string>> {
  const rows = await query(
    `SELECT DISTINCT request_id FROM audit_events
      WHERE action = 'token.exchange' AND outcome = 'allowed' AND request_id = ANY($1)`,
    [ids],
  );
  return new Set(rows.map((r) => r.request_id));
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
