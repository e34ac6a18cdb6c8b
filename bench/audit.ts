/**
 * Sealed audit trail benchmark: `node --import tsx bench/audit.ts` after `npm run build`. Parts, in order
 * (BENCH_AUDIT_PARTS, default `lag,rate,probes,month,synthetic`), each BENCH_RUNS times (default 2):
 *
 * - lag: sealing lag at the token endpoint's full load. Custos set up as bench/exchange.ts sets it up
 *   (bench/exchange-setup.ts: dist/ in its own process, a fresh database, 10,000 connections, 1,000 users),
 *   warmed up, then driven at concurrency 50 for BENCH_DURATION seconds, with the sealer at its default
 *   interval and then effectively off (CUSTOS_AUDIT_SEAL_INTERVAL_MS=60000: its first run comes after the
 *   load), each on a freshly started process. Per event of the load, the lag is the sealed_at of the checkpoint
 *   covering it minus its occurred_at (from the database, after the run); with it the histogram
 *   custos_audit_seal_lag_seconds from /metrics (per checkpoint: oldest event to signature), req/s, p99, the
 *   server's CPU time and event-loop delay. The backlog an off run leaves is sealed before the next run, and
 *   timed (catch-up).
 * - rate: the sealer alone, against events written by SQL at each of BENCH_SEAL_RATES events/s.
 * - probes: the event-loop delay while a batch is linked, and sealing held back by another database's
 *   transaction.
 * - month: BENCH_MONTH_EVENTS (100,000) events of one new tenant in one SQL statement while the sealer runs:
 *   the time to link and sign them (catch-up), then GET /v1/tenants/{id}/audit/export (seconds, MB),
 *   verifyExport over the file and `node dist/src/cli.js audit verify` over it.
 * - synthetic: verifyExport and the command line over an export of as many events with one checkpoint per
 *   event (a tenant whose events come less often than the sealer runs), signed with a key of its own.
 *
 * Prints tables and writes bench/results/audit-*.json. Environment: BENCH_DATABASE_URL, BENCH_CONNECTIONS,
 * BENCH_USERS, BENCH_DURATION (seconds per load run, default 40, at most 50 so that the off runs stay off),
 * BENCH_CONCURRENCY (50), BENCH_RUNS (2), BENCH_MONTH_EVENTS, BENCH_SEAL_RATES (default 2000,4000,8000,12000),
 * BENCH_RATE_SECONDS (20), BENCH_AUDIT_PARTS.
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import {
  AUDIT_FORMAT,
  entryHash,
  genesisHead,
  nextHead,
  publicJwk,
  signCheckpoint,
  verifyExport,
  type CheckpointBody,
  type EventLine,
} from '../src/audit/audit-format.js';
import { RootKeyring } from '../src/common/root-keyring.js';
import { generateAdminKey } from '../src/identity/admin-keys.service.js';
import {
  createDatabase,
  root,
  runLoad,
  seedExchange,
  startCustos,
  startIdentityProvider,
  type CustosProcess,
} from './exchange-setup.js';
import { adminUrl, call, createTenant, log, machineInfo, parsePrometheus } from './lib.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10_000);
const USERS = Math.min(Number(process.env.BENCH_USERS ?? 1_000), CONNECTIONS);
const DURATION = Number(process.env.BENCH_DURATION ?? 40);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 50);
const RUNS = Number(process.env.BENCH_RUNS ?? 2);
const MONTH_EVENTS = Number(process.env.BENCH_MONTH_EVENTS ?? 100_000);
const PARTS = (process.env.BENCH_AUDIT_PARTS ?? 'lag,rate,probes,month,synthetic').split(',');
const POOL = 10;
const SEAL_DEFAULT_MS = 1000;
const SEAL_OFF_MS = 60_000;
const TARGET_LAG_S = 5;
const SEAL_RATES = (process.env.BENCH_SEAL_RATES ?? '2000,4000,8000,12000').split(',').map(Number);
const RATE_SECONDS = Number(process.env.BENCH_RATE_SECONDS ?? 20);

if (DURATION > 50)
  throw new Error('BENCH_DURATION above 50 s would let the "off" sealer run during the load');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const seconds = (fromMs: number) => (Date.now() - fromMs) / 1000;
const round = (x: number, digits = 2) => +x.toFixed(digits);

/** CPU seconds (user + system) a process has used so far, from /proc (Linux). */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 a second on Linux).
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Events the sealer has not linked yet (after its cursor) and links no checkpoint covers yet. */
async function backlog(db: pg.Client): Promise<{ unlinked: number; unsigned: number }> {
  const { rows } = await db.query<{ unlinked: number; unsigned: number }>(
    `SELECT (SELECT count(*) FROM audit_events e, audit_seal_state s
              WHERE (e.tx_id, e.id) > (s.last_tx, s.last_id))::int AS unlinked,
            (SELECT coalesce(sum(pos - checkpointed_pos), 0) FROM audit_chain_heads)::int AS unsigned`,
  );
  return rows[0];
}

/** Waits until every committed event is linked and signed; returns the seconds it took. */
async function waitSealed(db: pg.Client, timeoutS = 600): Promise<number> {
  const t = Date.now();
  for (;;) {
    const b = await backlog(db);
    if (b.unlinked === 0 && b.unsigned === 0) return seconds(t);
    if (seconds(t) > timeoutS) throw new Error(`not sealed after ${timeoutS} s: ${JSON.stringify(b)}`);
    await sleep(100);
  }
}

interface LagStats {
  events: number;
  sealedEvents: number;
  p50: number;
  p99: number;
  max: number;
  overTarget: number;
}

/** Per event that occurred in [from, to): sealed_at of the checkpoint covering it minus occurred_at. */
async function lagStats(db: pg.Client, from: Date, to: Date): Promise<LagStats> {
  const { rows } = await db.query<{
    events: number;
    sealed: number;
    p50: number | null;
    p99: number | null;
    max: number | null;
    over: number;
  }>(
    `WITH w AS (SELECT id, occurred_at FROM audit_events WHERE occurred_at >= $1 AND occurred_at < $2),
          lag AS (SELECT extract(epoch FROM c.sealed_at - w.occurred_at)::float8 AS s
                    FROM w JOIN audit_chain l ON l.event_id = w.id
                    JOIN audit_checkpoints c ON c.chain = l.chain AND l.pos BETWEEN c.first_pos AND c.last_pos)
     SELECT (SELECT count(*) FROM w)::int AS events, count(*)::int AS sealed,
            percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS p50,
            percentile_cont(0.99) WITHIN GROUP (ORDER BY s) AS p99, max(s) AS max,
            count(*) FILTER (WHERE s > $3)::int AS over
       FROM lag`,
    [from, to, TARGET_LAG_S],
  );
  const r = rows[0];
  return {
    events: r.events,
    sealedEvents: r.sealed,
    p50: round(r.p50 ?? NaN),
    p99: round(r.p99 ?? NaN),
    max: round(r.max ?? NaN),
    overTarget: r.over,
  };
}

/** custos_audit_seal_lag_seconds from /metrics: cumulative bucket counts by upper bound, count and sum. */
async function scrapeLag(url: string): Promise<{ buckets: Map<string, number>; count: number; sum: number }> {
  const samples = parsePrometheus(await (await fetch(`${url}/metrics`)).text());
  const buckets = new Map<string, number>();
  let count = 0;
  let sum = 0;
  for (const [name, value] of samples) {
    const le = /^custos_audit_seal_lag_seconds_bucket\{.*le="([^"]+)".*\}$/.exec(name)?.[1];
    if (le) buckets.set(le, value);
    else if (name.startsWith('custos_audit_seal_lag_seconds_count')) count = value;
    else if (name.startsWith('custos_audit_seal_lag_seconds_sum')) sum = value;
  }
  return { buckets, count, sum };
}

/**
 * The server's event-loop delay since the previous scrape (prom-client resets its histogram on each): the
 * sealer's hashing runs on the same thread as the token endpoint when the process has both roles.
 */
async function scrapeLoopDelay(url: string): Promise<{ p99Ms: number; maxMs: number }> {
  const samples = parsePrometheus(await (await fetch(`${url}/metrics`)).text());
  const ms = (name: string) => round(1000 * (samples.get(name) ?? NaN), 0);
  return {
    p99Ms: ms('custos_nodejs_eventloop_lag_p99_seconds'),
    maxMs: ms('custos_nodejs_eventloop_lag_max_seconds'),
  };
}

/** The histogram's observations between two scrapes, summarised. */
function histogramBetween(
  a: Awaited<ReturnType<typeof scrapeLag>>,
  b: Awaited<ReturnType<typeof scrapeLag>>,
): {
  checkpoints: number;
  meanS: number;
  p50AtMostS: string;
  p99AtMostS: string;
  buckets: [string, number][];
} {
  const count = b.count - a.count;
  // Cumulative counts by upper bound, smallest bound first ("+Inf" parses as Infinity).
  const buckets = [...b.buckets]
    .map(([le, v]): [string, number] => [le, v - (a.buckets.get(le) ?? 0)])
    .sort(([x], [y]) => Number(x.replace('+Inf', 'Infinity')) - Number(y.replace('+Inf', 'Infinity')));
  // The smallest bucket bound under which the quantile falls: an upper bound, as the histogram allows.
  const bound = (q: number) => buckets.find(([, v]) => v >= q * count)?.[0] ?? 'n/a';
  return {
    checkpoints: count,
    meanS: count ? round((b.sum - a.sum) / count) : NaN,
    p50AtMostS: bound(0.5),
    p99AtMostS: bound(0.99),
    buckets,
  };
}

/**
 * The oldest transaction with a transaction id anywhere on the PostgreSQL server, sampled every 500 ms: the
 * sealer links only events older than it (pg_current_snapshot's xmin is server-wide), so a long transaction in
 * any database, another benchmark's or a test run's, holds sealing back.
 */
function watchOldestTransaction(): { stop: () => Promise<{ maxAgeS: number; database: string | null }> } {
  const c = new pg.Client({ connectionString: adminUrl });
  let maxAgeS = 0;
  let database: string | null = null;
  let stopped = false;
  const loop = (async () => {
    await c.connect();
    while (!stopped) {
      const { rows } = await c.query<{ datname: string | null; age: number }>(
        `SELECT datname, extract(epoch FROM now() - xact_start)::float8 AS age FROM pg_stat_activity
          WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() ORDER BY xact_start LIMIT 1`,
      );
      if (rows[0] && rows[0].age > maxAgeS) ({ age: maxAgeS, datname: database } = rows[0]);
      await sleep(500);
    }
    await c.end();
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return { maxAgeS: round(maxAgeS), database };
    },
  };
}

type Histogram = ReturnType<typeof histogramBetween>;

interface LagRun {
  run: number;
  sealer: 'on' | 'off';
  sealIntervalMs: number;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  non2xx: number;
  errors: number;
  serverCpuSeconds: number;
  serverCpuMsPer1000Requests: number;
  checkpointsSealedDuringLoad: number;
  eventLoopDelay: { p99Ms: number; maxMs: number };
  drainAfterLoadS?: number;
  lag?: LagStats;
  histogram?: Histogram;
  oldestTransaction?: { maxAgeS: number; database: string | null };
  catchUp?: { events: number; seconds: number; eventsPerSecond: number };
}

interface VerifyRun {
  run: number;
  seconds: number;
  ok: boolean;
  events: number;
  checkpoints: number;
  problem?: string;
}

interface CliRun {
  run: number;
  seconds: number;
  exitCode: number | null;
  output: string;
  maxRssMiB?: number;
}

interface MonthReport {
  tableEventsBefore: number;
  catchUp: Record<string, number>;
  exports: { run: number; seconds: number; firstByteS: number; bytes: number; mb: number }[];
  verifies: VerifyRun[];
  clis: CliRun[];
}

interface SyntheticReport {
  bytes: number;
  mb: number;
  writeSeconds: number;
  verifies: VerifyRun[];
  clis: CliRun[];
}

interface Context {
  db: pg.Client;
  idp: Awaited<ReturnType<typeof startIdentityProvider>>;
  start: (sealIntervalMs: number) => Promise<CustosProcess>;
  bootstrapKey: string;
}

async function sealingLag(ctx: Context): Promise<LagRun[]> {
  const { db } = ctx;
  let server = await ctx.start(SEAL_DEFAULT_MS);
  log(`seeding a tenant, an identity provider, a connector and ${CONNECTIONS} connections`);
  const seed = await seedExchange(server.url, ctx.bootstrapKey, ctx.idp, CONNECTIONS, USERS);
  await waitSealed(db);
  await server.stop();

  const results: LagRun[] = [];
  for (let run = 1; run <= RUNS; run++) {
    for (const sealer of ['on', 'off'] as const) {
      server = await ctx.start(sealer === 'on' ? SEAL_DEFAULT_MS : SEAL_OFF_MS);
      const bootedAt = Date.now();
      log(`run ${run}, sealer ${sealer}: warming up`);
      await runLoad({ url: server.url, connections: 10, durationSeconds: 5, requests: seed.requests });
      if (sealer === 'on') await waitSealed(db);
      const metricsBefore = await scrapeLag(server.url);
      await scrapeLoopDelay(server.url);
      const cpuBefore = cpuSeconds(server.process.pid!);
      const oldest = watchOldestTransaction();
      const t0 = new Date();
      log(`run ${run}, sealer ${sealer}: concurrency ${CONCURRENCY} for ${DURATION}s`);
      const r = await runLoad({
        url: server.url,
        connections: CONCURRENCY,
        durationSeconds: DURATION,
        requests: seed.requests,
      });
      const t1 = new Date();
      const cpu = cpuSeconds(server.process.pid!) - cpuBefore;
      const eventLoopDelay = await scrapeLoopDelay(server.url);
      const { rows: sealedDuring } = await db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM audit_checkpoints WHERE sealed_at >= $1 AND sealed_at < $2`,
        [t0, t1],
      );
      const total = r['2xx'] + r.non2xx;
      const row: LagRun = {
        run,
        sealer,
        sealIntervalMs: sealer === 'on' ? SEAL_DEFAULT_MS : SEAL_OFF_MS,
        reqPerSec: Math.round(r.requests.average),
        p50Ms: r.latency.p50,
        p99Ms: r.latency.p99,
        maxMs: r.latency.max,
        non2xx: r.non2xx,
        errors: r.errors + r.timeouts,
        serverCpuSeconds: round(cpu, 1),
        serverCpuMsPer1000Requests: round((1000 * 1000 * cpu) / total, 0),
        checkpointsSealedDuringLoad: sealedDuring[0].n,
        eventLoopDelay,
      };
      if (sealer === 'on') {
        row.drainAfterLoadS = round(await waitSealed(db));
        row.lag = await lagStats(db, t0, t1);
        row.histogram = histogramBetween(metricsBefore, await scrapeLag(server.url));
      }
      row.oldestTransaction = await oldest.stop();
      if (sealer === 'off' && seconds(bootedAt) > SEAL_OFF_MS / 1000) {
        log('warning: the off run lasted longer than the sealer interval; its first run may have come');
      }
      await server.stop();
      if (sealer === 'off') {
        // The next run must start with nothing to seal: this backlog is sealed now, and timed.
        const { unlinked } = await backlog(db);
        server = await ctx.start(SEAL_DEFAULT_MS);
        const catchUpS = await waitSealed(db);
        row.catchUp = {
          events: unlinked,
          seconds: round(catchUpS),
          eventsPerSecond: Math.round(unlinked / catchUpS),
        };
        await server.stop();
      }
      log(JSON.stringify(row));
      results.push(row);
    }
  }
  return results;
}

/** Downloads the export to `file`; seconds to the headers and to the last byte. */
async function downloadExport(
  url: string,
  tenantId: string,
  key: string,
  file: string,
): Promise<{ seconds: number; firstByteS: number; bytes: number }> {
  const t = Date.now();
  const res = await fetch(`${url}/v1/tenants/${tenantId}/audit/export`, {
    headers: { authorization: `Bearer ${key}` },
  });
  if (!res.ok || !res.body) throw new Error(`export: ${res.status} ${await res.text()}`);
  const firstByteS = seconds(t);
  await pipeline(Readable.fromWeb(res.body), fs.createWriteStream(file));
  return { seconds: round(seconds(t)), firstByteS: round(firstByteS, 3), bytes: fs.statSync(file).size };
}

async function timeVerify(
  file: string,
  jwks: unknown,
): Promise<{ seconds: number; ok: boolean; events: number; checkpoints: number; problem?: string }> {
  const t = Date.now();
  const lines = readline.createInterface({ input: fs.createReadStream(file, 'utf8'), crlfDelay: Infinity });
  const result = await verifyExport(lines, jwks);
  return {
    seconds: round(seconds(t)),
    ok: result.ok,
    events: result.summary.events,
    checkpoints: result.summary.checkpoints,
    ...(result.ok ? {} : { problem: result.problem }),
  };
}

/** `custos audit verify` as a user runs it, under /usr/bin/time for its peak RSS when that exists. */
function timeCli(
  file: string,
  jwksFile: string,
): Promise<{ seconds: number; exitCode: number | null; output: string; maxRssMiB?: number }> {
  const args = [path.join(root, 'dist/src/cli.js'), 'audit', 'verify', file, '--jwks', jwksFile];
  const timed = fs.existsSync('/usr/bin/time');
  const t = Date.now();
  const child = timed
    ? spawn('/usr/bin/time', ['-f', 'maxrss_kb=%M', process.execPath, ...args])
    : spawn(process.execPath, args);
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      const rss = /maxrss_kb=(\d+)/.exec(err)?.[1];
      resolve({
        seconds: round(seconds(t)),
        exitCode: code,
        output: (out + err.replace(/maxrss_kb=\d+\n?/, '')).trim().slice(0, 300),
        ...(rss ? { maxRssMiB: Math.round(Number(rss) / 1024) } : {}),
      });
    });
  });
}

function cliHasAuditVerify(): boolean {
  const cli = path.join(root, 'dist/src/cli.js');
  return fs.existsSync(cli) && fs.readFileSync(cli, 'utf8').includes('audit verify');
}

/**
 * An export of `n` events with a checkpoint after every one, signed with a fresh key: the shape of a month of a
 * tenant whose events are rarer than the sealer's runs. Lines as the export writes them; returns the JWKS.
 */
async function writeSyntheticExport(n: number, file: string): Promise<{ keys: unknown[] }> {
  const key = crypto.generateKeyPairSync('ed25519').privateKey;
  const kid = 'bench-synthetic';
  const validFrom = new Date('2026-11-01T00:00:00Z');
  const chain = `tenant:${crypto.randomUUID()}`;
  const out = fs.createWriteStream(file);
  const write = async (s: string) => {
    if (!out.write(s)) await once(out, 'drain');
  };
  await write(
    JSON.stringify({
      kind: 'export',
      format: AUDIT_FORMAT,
      chain,
      from: null,
      to: null,
      exportedAt: new Date().toISOString(),
    }) + '\n',
  );
  let head = genesisHead(chain);
  const step = (30 * 86_400_000) / n;
  let buf = '';
  for (let pos = 1; pos <= n; pos++) {
    const at = new Date(validFrom.getTime() + pos * step);
    const line: EventLine = {
      kind: 'event',
      chain,
      pos,
      id: String(1_000_000 + pos),
      // Microseconds, as the database gives them.
      occurredAt: at.toISOString().replace('Z', '000Z'),
      ...monthEventFields(pos),
    };
    const prev = head;
    head = nextHead(head, entryHash(line));
    const body: CheckpointBody = {
      kind: 'checkpoint',
      format: AUDIT_FORMAT,
      chain,
      seq: pos,
      firstPos: pos,
      lastPos: pos,
      count: 1,
      firstEventId: line.id,
      lastEventId: line.id,
      prevHead: prev.toString('hex'),
      head: head.toString('hex'),
      sealedAt: new Date(at.getTime() + 1000).toISOString(),
      kid,
    };
    buf += JSON.stringify({ ...line, head: head.toString('hex') }) + '\n';
    buf += JSON.stringify(signCheckpoint(body, key)) + '\n';
    if (buf.length > 1 << 20) {
      await write(buf);
      buf = '';
    }
  }
  await write(buf);
  out.end();
  await once(out, 'finish');
  return { keys: [publicJwk(key, kid, validFrom, null)] };
}

/** What a token exchange's event holds (copied from the events the load writes), varied by `i`. */
function monthEventFields(i: number): Omit<EventLine, 'kind' | 'chain' | 'pos' | 'id' | 'occurredAt'> {
  return {
    action: 'token.exchange',
    outcome: 'allowed',
    actor: { type: 'connector', id: '7d7c1b0a-4a1e-4c55-9a0e-2f3c5b8e9d10' },
    subjectUserId: `user-${i % 1000}`,
    connectionId: '0b9f3c2e-8d4a-4f61-b7e2-5a1c9d3e7f20',
    provider: 'github',
    requestId: `req-${i.toString(36)}`,
    details: {
      audience: 'github',
      clientId: 'cus_bench',
      authMethod: 'client_secret_basic',
      grantType: 'token-exchange',
      requestedScopes: ['repo'],
      grantedScopes: ['repo', 'read:user'],
      subjectTokenType: 'jwt',
      trustedAssertion: false,
      issuer: 'http://127.0.0.1:40000/',
    },
  };
}

/**
 * Inserts `n` token-exchange events of a tenant in one statement (one transaction), as occurring now or spread
 * evenly over November 2026.
 */
async function insertEvents(db: pg.Client, tenantId: string, n: number, november: boolean): Promise<void> {
  const f = monthEventFields(0);
  await db.query(
    `INSERT INTO audit_events (tenant_id, occurred_at, action, outcome, actor_type, actor_id, subject_user_id,
                               connection_id, provider, request_id, details)
     SELECT $1, CASE WHEN $10 THEN timestamptz '2026-11-01T00:00:00Z' + g * (interval '30 days' / $2) ELSE now() END,
            $3, $4, $5, $6, 'user-' || (g % 1000), $7, $8, 'req-' || to_hex(g), $9
       FROM generate_series(1, $2) g`,
    [
      tenantId,
      n,
      f.action,
      f.outcome,
      f.actor.type,
      f.actor.id,
      f.connectionId,
      f.provider,
      JSON.stringify(f.details),
      november,
    ],
  );
}

interface ProbeReport {
  /** The server's event-loop delay while the sealer linked a batch of `events` (0: idle runs only). */
  stall: { events: number; run: number; sealedS: number; loopP99Ms: number; loopMaxMs: number }[];
  /** One event committed while a transaction of another database held an xid for `heldS` seconds. */
  horizon: { heldS: number; linkedWhileHeld: boolean; sealedAfterS: number }[];
}

interface RateRun {
  targetPerSecond: number;
  run: number;
  insertedPerSecond: number;
  lag: LagStats;
  drainAfterS: number;
}

/**
 * The sealer alone against a steady stream of events written by SQL (a multi-row INSERT every 50 ms, as the
 * group commit writes them) at each rate of BENCH_SEAL_RATES for BENCH_RATE_SECONDS: the rate it keeps within
 * the lag target when the token endpoint does not compete for the process (the load runs cannot reach these
 * rates on a shared machine).
 */
async function rates(ctx: Context): Promise<RateRun[]> {
  const { db } = ctx;
  const server = await ctx.start(SEAL_DEFAULT_MS);
  const out: RateRun[] = [];
  try {
    const tenant = await call<{ id: string }>(server.url, 'POST', '/v1/tenants', ctx.bootstrapKey, {
      name: 'audit rate',
    });
    await waitSealed(db);
    for (let run = 1; run <= RUNS; run++) {
      for (const rate of SEAL_RATES) {
        log(`rate: ${rate} events/s for ${RATE_SECONDS}s`);
        const t0 = new Date();
        let written = 0;
        while (seconds(t0.getTime()) < RATE_SECONDS) {
          const due = Math.floor(rate * seconds(t0.getTime())) - written;
          if (due > 0) {
            await insertEvents(db, tenant.id, due, false);
            written += due;
          }
          await sleep(50);
        }
        const t1 = new Date();
        const drainAfterS = round(await waitSealed(db));
        const row: RateRun = {
          targetPerSecond: rate,
          run,
          insertedPerSecond: Math.round(written / ((t1.getTime() - t0.getTime()) / 1000)),
          lag: await lagStats(db, t0, t1),
          drainAfterS,
        };
        log(JSON.stringify(row));
        out.push(row);
      }
    }
    return out;
  } finally {
    await server.stop();
  }
}

/**
 * Two effects the load runs mix with everything else, measured alone on an idle server: how long linking a
 * batch holds the event loop (the token endpoint's thread when the process has both roles), and how a
 * transaction in another database on the same PostgreSQL server holds sealing back.
 */
async function probes(ctx: Context): Promise<ProbeReport> {
  const { db } = ctx;
  const server = await ctx.start(SEAL_DEFAULT_MS);
  try {
    const tenant = await call<{ id: string }>(server.url, 'POST', '/v1/tenants', ctx.bootstrapKey, {
      name: 'audit probes',
    });
    await waitSealed(db);
    const report: ProbeReport = { stall: [], horizon: [] };
    for (let run = 1; run <= RUNS; run++) {
      for (const events of [0, 1000, 5000]) {
        await sleep(1500);
        await scrapeLoopDelay(server.url);
        const t = Date.now();
        if (events) await insertEvents(db, tenant.id, events, false);
        const sealedS = await waitSealed(db);
        // At least one more sealer run, so that idle runs are in the baseline too.
        await sleep(1200);
        const d = await scrapeLoopDelay(server.url);
        report.stall.push({
          events,
          run,
          sealedS: round(events ? seconds(t) : sealedS),
          loopP99Ms: d.p99Ms,
          loopMaxMs: d.maxMs,
        });
        log(`stall: ${JSON.stringify(report.stall[report.stall.length - 1])}`);
      }
      const heldS = 10;
      const holder = new pg.Client({ connectionString: adminUrl });
      await holder.connect();
      await holder.query('BEGIN');
      await holder.query('SELECT pg_current_xact_id()');
      const t = Date.now();
      await insertEvents(db, tenant.id, 1, false);
      await sleep(heldS * 1000);
      const linkedWhileHeld = (await backlog(db)).unlinked === 0;
      await holder.query('ROLLBACK');
      await holder.end();
      await waitSealed(db);
      report.horizon.push({ heldS, linkedWhileHeld, sealedAfterS: round(seconds(t)) });
      log(`horizon: ${JSON.stringify(report.horizon[report.horizon.length - 1])}`);
    }
    return report;
  } finally {
    await server.stop();
  }
}

async function month(ctx: Context, tmp: string): Promise<MonthReport> {
  const { db } = ctx;
  const server = await ctx.start(SEAL_DEFAULT_MS);
  try {
    const tenant = await createTenant(server.url, ctx.bootstrapKey, 'audit month', {
      name: 'auditor',
      role: 'auditor',
    });
    const { key } = tenant;
    await waitSealed(db);
    const chain = `tenant:${tenant.id}`;
    const head = async () =>
      (
        await db.query<{ pos: number; checkpointed: number }>(
          `SELECT pos::int AS pos, checkpointed_pos::int AS checkpointed FROM audit_chain_heads WHERE chain = $1`,
          [chain],
        )
      ).rows[0] ?? { pos: 0, checkpointed: 0 };
    const startPos = (await head()).pos;
    const tableBefore = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM audit_events')).rows[0]
      .n;

    log(`inserting ${MONTH_EVENTS} events of one tenant, spread over November, in one statement`);
    let t = Date.now();
    await insertEvents(db, tenant.id, MONTH_EVENTS, true);
    const insertS = seconds(t);
    t = Date.now();
    // Progress of the chain head every 50 ms: when its links and its checkpoint are committed.
    let firstLinkS: number | null = null;
    let linkedS: number | null = null;
    let sealedS: number | null = null;
    const target = startPos + MONTH_EVENTS;
    while (sealedS === null) {
      const h = await head();
      if (firstLinkS === null && h.pos > startPos) firstLinkS = seconds(t);
      if (linkedS === null && h.pos >= target) linkedS = seconds(t);
      if (h.checkpointed >= target) sealedS = seconds(t);
      else if (seconds(t) > 600) throw new Error('the month was not sealed in 10 minutes');
      await sleep(50);
    }
    await waitSealed(db);
    const { rows: cps } = await db.query<{ n: number; biggest: number }>(
      `SELECT count(*)::int AS n, max(last_pos - first_pos + 1)::int AS biggest FROM audit_checkpoints
        WHERE chain = $1`,
      [chain],
    );
    const catchUp = {
      events: MONTH_EVENTS,
      insertSeconds: round(insertS),
      commitToFirstLinkS: round(firstLinkS ?? NaN),
      commitToAllLinkedS: round(linkedS ?? NaN),
      commitToSignedS: round(sealedS),
      eventsPerSecond: Math.round(MONTH_EVENTS / sealedS),
      checkpointsInChain: cps[0].n,
      biggestCheckpoint: cps[0].biggest,
    };
    log(`catch-up: ${JSON.stringify(catchUp)}`);

    const jwksFile = path.join(tmp, 'keys.json');
    const jwks = await (await fetch(`${server.url}/v1/tenants/${tenant.id}/audit/keys`)).json();
    fs.writeFileSync(jwksFile, JSON.stringify(jwks));
    const file = path.join(tmp, 'export.ndjson');
    const exports: MonthReport['exports'] = [];
    const verifies: VerifyRun[] = [];
    const clis: CliRun[] = [];
    for (let run = 1; run <= RUNS; run++) {
      const e = await downloadExport(server.url, tenant.id, key, file);
      exports.push({ run, ...e, mb: round(e.bytes / 1e6, 1) });
      log(`export ${run}: ${JSON.stringify(exports[exports.length - 1])}`);
    }
    for (let run = 1; run <= RUNS; run++) {
      verifies.push({ run, ...(await timeVerify(file, jwks)) });
      log(`verifyExport ${run}: ${JSON.stringify(verifies[verifies.length - 1])}`);
    }
    const cli = cliHasAuditVerify();
    for (let run = 1; cli && run <= RUNS; run++) {
      clis.push({ run, ...(await timeCli(file, jwksFile)) });
      log(`cli ${run}: ${JSON.stringify(clis[clis.length - 1])}`);
    }
    if (!cli) log('dist/src/cli.js has no `audit verify`: not timed');

    return { tableEventsBefore: tableBefore, catchUp, exports, verifies, clis };
  } finally {
    await server.stop();
  }
}

/** verifyExport and the command line over writeSyntheticExport's file (no Custos needed). */
async function synthetic(tmp: string): Promise<SyntheticReport> {
  log(`synthetic export: ${MONTH_EVENTS} events, one checkpoint each`);
  const file = path.join(tmp, 'synthetic.ndjson');
  const jwksFile = path.join(tmp, 'synthetic-keys.json');
  const t = Date.now();
  const jwks = await writeSyntheticExport(MONTH_EVENTS, file);
  fs.writeFileSync(jwksFile, JSON.stringify(jwks));
  const report: SyntheticReport = {
    bytes: fs.statSync(file).size,
    mb: round(fs.statSync(file).size / 1e6, 1),
    writeSeconds: round(seconds(t)),
    verifies: [],
    clis: [],
  };
  const cli = cliHasAuditVerify();
  for (let run = 1; run <= RUNS; run++) {
    report.verifies.push({ run, ...(await timeVerify(file, jwks)) });
    if (cli) report.clis.push({ run, ...(await timeCli(file, jwksFile)) });
  }
  log(`synthetic: ${JSON.stringify(report)}`);
  return report;
}

async function main(): Promise<void> {
  const database = await createDatabase(`custos_bench_audit_${process.pid}`);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-audit-'));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-audit-files-'));
  const db = new pg.Client({ connectionString: database.url });
  const cleanups: (() => Promise<unknown>)[] = [
    () => database.drop(),
    async () => fs.rmSync(dataDir, { recursive: true, force: true }),
    async () => fs.rmSync(tmp, { recursive: true, force: true }),
  ];
  try {
    const idp = await startIdentityProvider();
    cleanups.unshift(() => idp.close());
    const rootKeys = RootKeyring.generateSpec();
    const bootstrapKey = generateAdminKey();
    let current: CustosProcess | undefined;
    cleanups.unshift(async () => current?.stop());
    const ctx: Context = {
      db,
      idp,
      bootstrapKey,
      start: async (sealIntervalMs) => {
        current = await startCustos({
          databaseUrl: database.url,
          dataDir,
          rootKeys,
          bootstrapKey,
          outboundHosts: idp.host,
          poolSize: POOL,
          env: { CUSTOS_AUDIT_SEAL_INTERVAL_MS: String(sealIntervalMs) },
        });
        return current;
      },
    };
    // The first start migrates the database; the benchmark's own client connects after it.
    await (await ctx.start(SEAL_DEFAULT_MS)).stop();
    await db.connect();
    cleanups.unshift(() => db.end());

    const report: {
      date: string;
      lag?: LagRun[];
      rates?: RateRun[];
      probes?: ProbeReport;
      month?: MonthReport;
      synthetic?: SyntheticReport;
    } & Record<string, unknown> = {
      date: new Date().toISOString(),
      machine: {
        ...machineInfo(),
        loadAverageAtStart: os.loadavg().map((x) => round(x)),
      },
      settings: {
        connections: CONNECTIONS,
        usersInLoad: USERS,
        durationSeconds: DURATION,
        concurrency: CONCURRENCY,
        runs: RUNS,
        monthEvents: MONTH_EVENTS,
        poolSize: POOL,
      },
    };
    if (PARTS.includes('lag')) report.lag = await sealingLag(ctx);
    if (PARTS.includes('rate')) report.rates = await rates(ctx);
    if (PARTS.includes('probes')) report.probes = await probes(ctx);
    if (PARTS.includes('month')) report.month = await month(ctx, tmp);
    if (PARTS.includes('synthetic')) report.synthetic = await synthetic(tmp);

    printReport(report);
    fs.mkdirSync(path.join(here, 'results'), { recursive: true });
    const out = path.join(here, 'results', `audit-${report.date.replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
    log(`results written to ${path.relative(process.cwd(), out)}`);
  } finally {
    for (const c of cleanups) await c().catch((err: unknown) => log(`cleanup: ${String(err)}`));
  }
}

function printReport(report: {
  lag?: LagRun[];
  rates?: RateRun[];
  probes?: ProbeReport;
  month?: MonthReport;
  synthetic?: SyntheticReport;
}): void {
  const lines: string[] = [];
  const verify = (prefix: string, v: VerifyRun) =>
    `${prefix}verifyExport ${v.run}: ${v.seconds} s, ok=${v.ok}, ${v.events} events, ${v.checkpoints} checkpoints`;
  const cli = (prefix: string, c: CliRun) =>
    `${prefix}cli audit verify ${c.run}: ${c.seconds} s, exit ${c.exitCode}, peak RSS ${c.maxRssMiB ?? '?'} MiB: ${c.output}`;
  if (report.lag) {
    lines.push(
      `| run | sealer | req/s | p50 ms | p99 ms | server CPU ms/1000 req | event-loop delay p99 / max ms | checkpoints during load | lag p50 / p99 / max s (sealed/events) | events > ${TARGET_LAG_S} s | histogram: checkpoints, mean s, p99 ≤ s | drain s | catch-up |`,
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    );
    for (const r of report.lag) {
      const { lag: l, histogram: h, catchUp: c } = r;
      const cells = [
        r.run,
        r.sealer,
        r.reqPerSec,
        r.p50Ms,
        r.p99Ms,
        r.serverCpuMsPer1000Requests,
        `${r.eventLoopDelay.p99Ms} / ${r.eventLoopDelay.maxMs}`,
        r.checkpointsSealedDuringLoad,
        l ? `${l.p50} / ${l.p99} / ${l.max} (${l.sealedEvents}/${l.events})` : '',
        l ? l.overTarget : '',
        h ? `${h.checkpoints}, ${h.meanS}, ${h.p99AtMostS}` : '',
        r.drainAfterLoadS ?? '',
        c ? `${c.events} events in ${c.seconds} s (${c.eventsPerSecond}/s)` : '',
      ];
      lines.push(`| ${cells.join(' | ')} |`);
    }
  }
  if (report.rates) {
    lines.push(
      '',
      `| run | target events/s | written events/s | lag p50 / p99 / max s | events > ${TARGET_LAG_S} s | drain s |`,
      '| --- | --- | --- | --- | --- | --- |',
    );
    for (const r of report.rates) {
      lines.push(
        `| ${r.run} | ${r.targetPerSecond} | ${r.insertedPerSecond} | ${r.lag.p50} / ${r.lag.p99} / ${r.lag.max} | ${r.lag.overTarget} | ${r.drainAfterS} |`,
      );
    }
  }
  if (report.probes) {
    lines.push('');
    for (const p of report.probes.stall) {
      lines.push(
        `stall: ${p.events} events sealed in ${p.sealedS} s; event-loop delay p99 ${p.loopP99Ms} ms, max ${p.loopMaxMs} ms`,
      );
    }
    for (const h of report.probes.horizon) {
      lines.push(
        `horizon: another database's transaction held ${h.heldS} s; linked meanwhile: ${h.linkedWhileHeld}; sealed after ${h.sealedAfterS} s`,
      );
    }
  }
  const m = report.month;
  if (m) {
    lines.push('', `month catch-up: ${JSON.stringify(m.catchUp)}`);
    for (const e of m.exports) {
      lines.push(`export ${e.run}: ${e.seconds} s, ${e.mb} MB (headers after ${e.firstByteS} s)`);
    }
    for (const v of m.verifies) lines.push(verify('', v));
    for (const c of m.clis) lines.push(cli('', c));
  }
  const syn = report.synthetic;
  if (syn) {
    lines.push(`synthetic export (one checkpoint per event): ${syn.mb} MB`);
    for (const v of syn.verifies) lines.push(verify('  ', v));
    for (const c of syn.clis) lines.push(cli('  ', c));
  }
  process.stdout.write(lines.join('\n') + '\n');
}

await main();
process.exit(0);
