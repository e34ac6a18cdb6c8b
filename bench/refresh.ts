/**
 * Background-refresh benchmark: `npm run bench:refresh`.
 *
 * Starts Custos from the production build (dist/, in its own process, role `all`) against the local
 * PostgreSQL (a fresh database), with a local OAuth provider on loopback that rotates refresh tokens (a
 * used refresh token answers invalid_grant, as with real rotating providers) and answers after
 * BENCH_PROVIDER_LATENCY_MS (default 50). Seeds BENCH_CONNECTIONS connections (default 10,000) over the
 * admin API, then makes every one of them due within the next minute: each gets a due time spread evenly
 * over [now, now + 60 s] and a token expiring 60 s after it (the shortest lead Custos uses), with the row
 * version bumped as any real write does. No exchange traffic: only the background refresh runs.
 *
 * Runs twice, once per job mode: BullMQ on the local Redis (refresh-ahead jobs, a fresh key prefix) and
 * in-process (no Redis, the sweep). Reports, per mode: connections refreshed before their token expired,
 * the time from the first due time to the last refresh, lateness after the due time (p50, p99, max), the
 * peak number of refresh calls in flight at the provider, provider calls (exactly one per connection
 * means no duplicate refresh), refusals, and the peak RSS of the Custos process. Writes
 * bench/results/refresh-*.json.
 *
 * Environment: BENCH_DATABASE_URL, BENCH_REDIS_URL (default redis://127.0.0.1:6379), BENCH_CONNECTIONS,
 * BENCH_PROVIDER_LATENCY_MS, BENCH_MODES (default "bullmq,in-process"), BENCH_PROFILE (a folder for a CPU
 * profile of the Custos process).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { RootKeyring } from '../src/common/root-keyring.js';
import { generateAdminKey } from '../src/identity/admin-keys.service.js';
import {
  admin,
  adminUrl,
  call,
  createTenant,
  forEachConcurrently,
  freePort,
  log,
  rssOf,
  shippedNodeFlags,
  waitForHealth,
} from './lib.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.dirname(here);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10_000);
const LATENCY_MS = Number(process.env.BENCH_PROVIDER_LATENCY_MS ?? 50);
const MODES = (process.env.BENCH_MODES ?? 'bullmq,in-process').split(',') as ('bullmq' | 'in-process')[];
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const WINDOW_S = 60;
const LEAD_S = 60;
const CLIENT_ID = 'bench-client';
const CLIENT_SECRET = randomBytes(24).toString('base64url');

/** A token endpoint that rotates refresh tokens and counts what it sees. */
class BenchProvider {
  /** Live refresh tokens; a used one is gone (rotation). */
  readonly live = new Set<string>();
  calls = 0;
  refused = 0;
  inFlight = 0;
  peakInFlight = 0;
  private server?: http.Server;
  port = 0;

  issue(): string {
    const t = `rt_${randomBytes(16).toString('base64url')}`;
    this.live.add(t);
    return t;
  }

  resetCounters(): void {
    this.calls = 0;
    this.refused = 0;
    this.peakInFlight = this.inFlight;
  }

  async start(): Promise<void> {
    const expected = Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`);
    this.server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        this.inFlight++;
        this.peakInFlight = Math.max(this.peakInFlight, this.inFlight);
        setTimeout(() => {
          this.inFlight--;
          // Client id and secret are form-urlencoded before base64 (RFC 6749 §2.3.1).
          const [id = '', secret = ''] = Buffer.from(
            (req.headers.authorization ?? '').replace(/^Basic /, ''),
            'base64',
          )
            .toString()
            .split(':')
            .map((p) => decodeURIComponent(p.replace(/\+/g, ' ')));
          const given = Buffer.from(`${id}:${secret}`);
          const form = new URLSearchParams(body);
          const send = (status: number, json: object) =>
            res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(json));
          if (given.length !== expected.length || !timingSafeEqual(given, expected))
            return send(401, { error: 'invalid_client' });
          if (form.get('grant_type') !== 'refresh_token')
            return send(400, { error: 'unsupported_grant_type' });
          this.calls++;
          const used = form.get('refresh_token') ?? '';
          if (!this.live.delete(used)) {
            this.refused++;
            return send(400, { error: 'invalid_grant' });
          }
          send(200, {
            access_token: `at_${randomBytes(16).toString('base64url')}`,
            token_type: 'Bearer',
            expires_in: 3600,
            refresh_token: this.issue(),
          });
        }, LATENCY_MS);
      });
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  stop(): Promise<void> {
    return new Promise((r) => this.server?.close(() => r()) ?? r());
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function startCustos(
  mode: 'bullmq' | 'in-process',
  env: Record<string, string>,
): Promise<{ child: ChildProcess; url: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = fork(path.join(root, 'dist/src/main.js'), [], {
    cwd: root,
    // BENCH_PROFILE=<dir>: a CPU profile of the Custos process, written when it exits.
    execArgv: [
      ...shippedNodeFlags(root),
      ...(process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []),
    ],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    env: {
      ...process.env,
      ...env,
      HOST: '127.0.0.1',
      PORT: String(port),
      CUSTOS_LOG_LEVEL: 'warn',
      REDIS_URL: mode === 'bullmq' ? REDIS_URL : '',
      CUSTOS_QUEUE_PREFIX: `custos-bench-${process.pid}-${Date.now()}`,
    },
  });
  await waitForHealth(url);
  return {
    child,
    url,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

async function main(): Promise<void> {
  const dbName = `custos_bench_refresh_${process.pid}`;
  await admin((c) => c.query(`CREATE DATABASE ${dbName}`));
  const dbUrl = new URL(adminUrl);
  dbUrl.pathname = `/${dbName}`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-'));
  const provider = new BenchProvider();
  await provider.start();
  const db = new pg.Client({ connectionString: dbUrl.toString() });
  const env = {
    DATABASE_URL: dbUrl.toString(),
    CUSTOS_DATA_DIR: dataDir,
    CUSTOS_ROOT_KEYS: RootKeyring.generateSpec(),
    CUSTOS_BOOTSTRAP_ADMIN_KEY: generateAdminKey(),
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `127.0.0.1:${provider.port}`,
  };
  const results: Record<string, unknown>[] = [];
  try {
    await db.connect();
    for (const [index, mode] of MODES.entries()) {
      const custos = await startCustos(mode, env);
      try {
        if (index === 0) await seed(custos.url, env.CUSTOS_BOOTSTRAP_ADMIN_KEY, provider);
        results.push(await measure(mode, db, custos.child.pid!, provider));
      } finally {
        await custos.stop();
      }
    }
  } finally {
    await db.end().catch(() => undefined);
    await provider.stop();
    await admin((c) => c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`));
    fs.rmSync(dataDir, { recursive: true, force: true });
  }

  const report = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    connections: CONNECTIONS,
    providerLatencyMs: LATENCY_MS,
    windowSeconds: WINDOW_S,
    leadSeconds: LEAD_S,
    results,
  };
  const header =
    '| mode | refreshed before expiry | first due → last refresh s | lateness p50 / p99 / max s | peak in flight at provider | provider calls | refused | peak RSS MiB |';
  const lines = results.map(
    (r) =>
      `| ${String(r.mode)} | ${String(r.refreshedBeforeExpiry)} / ${CONNECTIONS} | ${String(r.spanSeconds)} | ${String(r.latenessP50)} / ${String(r.latenessP99)} / ${String(r.latenessMax)} | ${String(r.peakProviderInFlight)} | ${String(r.providerCalls)} | ${String(r.refused)} | ${String(r.peakRssMiB)} |`,
  );
  process.stdout.write(`\n${header}\n|${'---|'.repeat(8)}\n${lines.join('\n')}\n`);
  fs.mkdirSync(path.join(here, 'results'), { recursive: true });
  const file = path.join(here, 'results', `refresh-${report.date.replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
  log(`results written to ${path.relative(process.cwd(), file)}`);
}

async function seed(url: string, bootstrapKey: string, provider: BenchProvider): Promise<void> {
  log(`seeding a tenant, a rotating OAuth provider and ${CONNECTIONS} connections`);
  const tenant = await createTenant(url, bootstrapKey, 'bench', { name: 'bench admin', role: 'admin' });
  const adminKey = tenant.key;
  const base = `http://127.0.0.1:${provider.port}`;
  await call(url, 'PUT', `/v1/tenants/${tenant.id}/providers/benchprov`, adminKey, {
    key: 'benchprov',
    name: 'Bench provider',
    authMode: 'oauth2',
    oauth2: {
      authorizationUrl: `${base}/authorize`,
      tokenUrl: `${base}/token`,
      scopes: ['read'],
      rotatesRefreshToken: true,
    },
  });
  await call(url, 'PUT', `/v1/tenants/${tenant.id}/providers/benchprov/app`, adminKey, {
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
  });
  const expiresAt = new Date(Date.now() + 6 * 3600_000).toISOString();
  await forEachConcurrently(CONNECTIONS, 16, (i) =>
    call(url, 'PUT', `/v1/tenants/${tenant.id}/users/user-${i}/connections/benchprov`, adminKey, {
      type: 'oauth2',
      accessToken: `at_seed_${randomBytes(12).toString('base64url')}`,
      refreshToken: provider.issue(),
      scopes: ['read'],
      expiresAt,
    }),
  );
}

async function measure(
  mode: string,
  db: pg.Client,
  pid: number,
  provider: BenchProvider,
): Promise<Record<string, unknown>> {
  provider.resetCounters();
  // Every connection falls due within the next minute, evenly spread, its token expiring LEAD_S later.
  const armed = await db.query<{ id: string; version: number; due: Date; expires: Date }>(
    `WITH spread AS (
       SELECT id, now() + make_interval(secs => 2 + $1 * (row_number() OVER (ORDER BY random()) - 1) / count(*) OVER ()) AS due
         FROM connections WHERE status = 'active')
     UPDATE connections c SET refresh_due_at = s.due, expires_at = s.due + make_interval(secs => $2),
            refresh_failures = 0, refresh_retry_at = NULL, version = c.version + 1
       FROM spread s WHERE c.id = s.id
     RETURNING c.id, c.version, c.refresh_due_at AS due, c.expires_at AS expires`,
    [WINDOW_S, LEAD_S],
  );
  const byId = new Map(armed.rows.map((r) => [r.id, r]));
  const firstDue = Math.min(...armed.rows.map((r) => r.due.getTime()));
  log(`${mode}: ${armed.rowCount} connections due over the next ${WINDOW_S} s`);
  let peakRss = rssOf(pid);
  const deadline = Date.now() + (WINDOW_S + LEAD_S + 30) * 1000;
  let done = 0;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    peakRss = Math.max(peakRss, rssOf(pid));
    done = (
      await db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM connections c JOIN unnest($1::uuid[], $2::int[]) AS a(id, v) ON a.id = c.id
          WHERE c.version > a.v`,
        [armed.rows.map((a) => a.id), armed.rows.map((a) => a.version)],
      )
    ).rows[0].n;
    if (done >= armed.rowCount!) break;
  }
  const rows = await db.query<{ id: string; updated_at: Date; status: string }>(
    `SELECT id, updated_at, status FROM connections WHERE id = ANY($1)`,
    [armed.rows.map((a) => a.id)],
  );
  let beforeExpiry = 0;
  let lastRefresh = 0;
  const lateness: number[] = [];
  for (const r of rows.rows) {
    const a = byId.get(r.id)!;
    if (r.updated_at.getTime() <= a.due.getTime()) continue; // never refreshed
    lateness.push((r.updated_at.getTime() - a.due.getTime()) / 1000);
    lastRefresh = Math.max(lastRefresh, r.updated_at.getTime());
    if (r.updated_at.getTime() < a.expires.getTime()) beforeExpiry++;
  }
  lateness.sort((x, y) => x - y);
  const round = (n: number) => Math.round(n * 100) / 100;
  const result = {
    mode,
    refreshed: done,
    refreshedBeforeExpiry: beforeExpiry,
    needsReauth: rows.rows.filter((r) => r.status === 'needs_reauth').length,
    spanSeconds: round((lastRefresh - firstDue) / 1000),
    latenessP50: round(percentile(lateness, 50)),
    latenessP99: round(percentile(lateness, 99)),
    latenessMax: round(lateness[lateness.length - 1] ?? NaN),
    peakProviderInFlight: provider.peakInFlight,
    providerCalls: provider.calls,
    refused: provider.refused,
    peakRssMiB: Math.round(peakRss / 2 ** 20),
  };
  log(`${mode}: ${JSON.stringify(result)}`);
  return result;
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
