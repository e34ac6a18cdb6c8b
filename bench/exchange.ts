/**
 * Token-exchange benchmark: `npm run bench:exchange`.
 *
 * Starts Custos from the production build (dist/, in its own process) against the local PostgreSQL (a
 * fresh database), seeds over the admin API a tenant, an identity provider (JWKS on loopback), a connector
 * and BENCH_CONNECTIONS connections (default 10,000),
 * then drives POST /oauth/token with autocannon (in a child process) at concurrency 10 and 50, cycling
 * through BENCH_USERS distinct users' tokens (default 1,000). In the same run it measures the floor: a bare
 * node:http server doing one SELECT and one group-committed audit INSERT per request (bench/floor.ts).
 * Prints req/s, p50, p99, peak RSS and SQL round trips per request, and writes bench/results/*.json.
 *
 * Environment: BENCH_DATABASE_URL (admin URL of a PostgreSQL server; default the local one),
 * BENCH_CONNECTIONS, BENCH_USERS, BENCH_DURATION (seconds per run, default 15).
 */
import { fork, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import pg from 'pg';
import { RootKeyring } from '../src/common/root-keyring.js';
import { generateAdminKey } from '../src/identity/admin-keys.service.js';
import { admin, adminUrl, call, freePort, log, shippedNodeFlags, waitForHealth } from './lib.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.dirname(here);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10_000);
const USERS = Math.min(Number(process.env.BENCH_USERS ?? 1_000), CONNECTIONS);
const DURATION = Number(process.env.BENCH_DURATION ?? 15);
const POOL = 10;
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

interface LoadResult {
  requests: { average: number };
  latency: { p50: number; p99: number; average: number };
  non2xx: number;
  errors: number;
  timeouts: number;
  '2xx': number;
}

function runLoad(job: object): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'load.ts')], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`load generator exited with ${code}`));
      else resolve(JSON.parse(out) as LoadResult);
    });
    child.stdin.end(JSON.stringify(job));
  });
}

async function countAuditEvents(dbUrl: string): Promise<number> {
  const c = new pg.Client({ connectionString: dbUrl });
  await c.connect();
  try {
    const r = await c.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM audit_events WHERE action = 'token.exchange'`,
    );
    return r.rows[0].n;
  } finally {
    await c.end();
  }
}

async function main(): Promise<void> {
  const dbName = `custos_bench_${process.pid}`;
  await admin((c) => c.query(`CREATE DATABASE ${dbName}`));
  const dbUrl = new URL(adminUrl);
  dbUrl.pathname = `/${dbName}`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-'));
  const cleanups: (() => Promise<unknown>)[] = [
    // BENCH_KEEP_DATABASE=1 keeps the seeded database for EXPLAIN and the like.
    () =>
      process.env.BENCH_KEEP_DATABASE === '1'
        ? Promise.resolve(log(`kept database ${dbName}`))
        : admin((c) => c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)),
    async () => fs.rmSync(dataDir, { recursive: true, force: true }),
  ];
  try {
    // Identity provider: an ES256 key and its JWKS on loopback.
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'bench', alg: 'ES256', use: 'sig' };
    const jwksServer = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
    cleanups.unshift(() => new Promise((r) => jwksServer.close(r)));
    const jwksPort = (jwksServer.address() as AddressInfo).port;
    const issuer = `http://127.0.0.1:${jwksPort}/`;

    // Custos as in production: the compiled build in its own process (`npm run build` runs first).
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const bootstrapKey = generateAdminKey();
    const server = fork(path.join(root, 'dist/src/main.js'), [], {
      cwd: root,
      execArgv: [
        ...shippedNodeFlags(root),
        '--import',
        path.join(here, 'count-queries.mjs'),
        // BENCH_PROFILE=<dir>: a CPU profile of the Custos process, written when it exits.
        ...(process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []),
      ],
      // Production logging (a line per request at info level) is kept and discarded.
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      env: {
        ...process.env,
        // BENCH_SERVER_NODE_OPTIONS: V8 flags for the Custos process (e.g. --max-semi-space-size=4).
        NODE_OPTIONS: process.env.BENCH_SERVER_NODE_OPTIONS ?? '',
        DATABASE_URL: dbUrl.toString(),
        HOST: '127.0.0.1',
        PORT: String(port),
        CUSTOS_DATA_DIR: dataDir,
        CUSTOS_ROOT_KEYS: RootKeyring.generateSpec(),
        CUSTOS_BOOTSTRAP_ADMIN_KEY: bootstrapKey,
        CUSTOS_OUTBOUND_ALLOW_HOSTS: `127.0.0.1:${jwksPort}`,
        CUSTOS_DB_POOL_SIZE: String(POOL),
        CUSTOS_LOG_LEVEL: 'info',
        REDIS_URL: '',
      },
    });
    cleanups.unshift(async () => {
      server.kill('SIGTERM');
      await new Promise((r) => server.once('exit', r));
    });
    await waitForHealth(url);
    const serverStats = () =>
      new Promise<{ statements: number; rss: number }>((resolve) => {
        server.once('message', (m) => resolve(m as { statements: number; rss: number }));
        server.send('stats');
      });

    log(`seeding a tenant, an identity provider, a connector and ${CONNECTIONS} connections`);
    const tenant = await call<{ id: string }>(url, 'POST', '/v1/tenants', bootstrapKey, { name: 'bench' });
    const { key: adminKey } = await call<{ key: string }>(
      url,
      'POST',
      `/v1/tenants/${tenant.id}/admin-keys`,
      bootstrapKey,
      {
        name: 'bench admin',
        role: 'admin',
      },
    );
    await call(url, 'PUT', `/v1/tenants/${tenant.id}/identity-providers/bench-idp`, adminKey, {
      issuer,
      jwksUri: `${issuer}jwks`,
      audiences: ['custos'],
      algorithms: ['ES256'],
    });
    const connector = await call<{ clientId: string; clientSecret: string }>(
      url,
      'POST',
      `/v1/tenants/${tenant.id}/connectors`,
      adminKey,
      {
        name: 'bench connector',
        allowedProviders: ['github'],
        allowedScopes: { github: ['repo', 'read:user'] },
        delegation: 'user_token',
        auth: { method: 'client_secret_basic' },
      },
    );
    const expiresAt = new Date(Date.now() + 6 * 3600_000).toISOString();
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < CONNECTIONS) {
          const i = next++;
          await call(url, 'PUT', `/v1/tenants/${tenant.id}/users/user-${i}/connections/github`, adminKey, {
            type: 'oauth2',
            accessToken: `gho_bench_${i}_${randomUUID()}`,
            refreshToken: `ghr_bench_${i}_${randomUUID()}`,
            scopes: ['repo', 'read:user'],
            expiresAt,
          });
        }
      }),
    );

    const basic =
      'Basic ' +
      Buffer.from(
        `${encodeURIComponent(connector.clientId)}:${encodeURIComponent(connector.clientSecret)}`,
      ).toString('base64');
    const now = Math.floor(Date.now() / 1000);
    const custosRequests = [];
    const floorRequests = [];
    for (let i = 0; i < USERS; i++) {
      // Users spread over the whole table, not only its first rows.
      const user = `user-${Math.floor((i * CONNECTIONS) / USERS)}`;
      const token = await new SignJWT({ azp: 'bench-agent' })
        .setProtectedHeader({ alg: 'ES256', kid: 'bench' })
        .setIssuer(issuer)
        .setAudience('custos')
        .setSubject(user)
        .setIssuedAt(now)
        .setExpirationTime(now + 3600)
        .sign(privateKey);
      custosRequests.push({
        method: 'POST' as const,
        path: '/oauth/token',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic },
        body: new URLSearchParams({
          grant_type: EXCHANGE,
          subject_token: token,
          subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
          audience: 'github',
          scope: 'repo',
        }).toString(),
      });
      floorRequests.push({
        method: 'POST' as const,
        path: '/',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ tenant_id: tenant.id, user_id: user, audience: 'github' }).toString(),
      });
    }

    log(`warming up (every user token verified once, caches filled)`);
    await runLoad({ url, connections: 10, durationSeconds: 5, requests: custosRequests });
    const auditRows = () => countAuditEvents(dbUrl.toString());

    const results: Record<string, unknown>[] = [];
    for (const concurrency of [10, 50]) {
      const before = await serverStats();
      const auditBefore = await auditRows();
      let peakRss = before.rss;
      const sampler = setInterval(() => {
        void serverStats().then((s) => (peakRss = Math.max(peakRss, s.rss)));
      }, 250);
      log(`custos: concurrency ${concurrency} for ${DURATION}s`);
      const r = await runLoad({
        url,
        connections: concurrency,
        durationSeconds: DURATION,
        requests: custosRequests,
      });
      clearInterval(sampler);
      const after = await serverStats();
      if (process.env.BENCH_VERBOSE) {
        log(`memory after c=${concurrency}: ${JSON.stringify((after as { memory?: unknown }).memory)}`);
        // With BENCH_SERVER_NODE_OPTIONS=--expose-gc: what stays after a full collection.
        server.send('gc');
        await new Promise((r) => setTimeout(r, 500));
        log(`memory after gc: ${JSON.stringify(((await serverStats()) as { memory?: unknown }).memory)}`);
      }
      const total = r['2xx'] + r.non2xx;
      const audited = (await auditRows()) - auditBefore;
      results.push({
        server: 'custos',
        concurrency,
        reqPerSec: Math.round(r.requests.average),
        p50Ms: r.latency.p50,
        p99Ms: r.latency.p99,
        non2xx: r.non2xx,
        errors: r.errors + r.timeouts,
        peakRssMiB: Math.round(peakRss / 2 ** 20),
        sqlRoundTripsPerRequest: +((after.statements - before.statements) / total).toFixed(3),
        // Every answered request has its committed audit event (responses in flight at the end may add a few).
        auditEventsPerRequest: +(audited / total).toFixed(3),
      });
    }

    log('starting the floor server');
    const floor = fork(path.join(here, 'floor.ts'), [dbUrl.toString(), String(POOL)], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    });
    cleanups.unshift(async () => floor.kill());
    const floorPort = await new Promise<number>((resolve) => {
      floor.stdout!.once('data', (c: Buffer) => resolve((JSON.parse(c.toString()) as { port: number }).port));
    });
    const floorStats = () =>
      new Promise<{ queries: number; rss: number }>((resolve) => {
        floor.once('message', (m) => resolve(m as { queries: number; rss: number }));
        floor.send('stats');
      });
    const floorUrl = `http://127.0.0.1:${floorPort}`;
    await runLoad({ url: floorUrl, connections: 10, durationSeconds: 3, requests: floorRequests });
    for (const concurrency of [10, 50]) {
      const before = await floorStats();
      log(`floor: concurrency ${concurrency} for ${DURATION}s`);
      const r = await runLoad({
        url: floorUrl,
        connections: concurrency,
        durationSeconds: DURATION,
        requests: floorRequests,
      });
      const after = await floorStats();
      const total = r['2xx'] + r.non2xx;
      results.push({
        server: 'floor (node:http, 1 SELECT + group-committed INSERT)',
        concurrency,
        reqPerSec: Math.round(r.requests.average),
        p50Ms: r.latency.p50,
        p99Ms: r.latency.p99,
        non2xx: r.non2xx,
        errors: r.errors + r.timeouts,
        peakRssMiB: Math.round(after.rss / 2 ** 20),
        sqlRoundTripsPerRequest: +((after.queries - before.queries) / total).toFixed(3),
      });
    }

    const summary = [10, 50].map((c) => {
      const mine = results.find((r) => r.server === 'custos' && r.concurrency === c)!;
      const base = results.find((r) => r.server !== 'custos' && r.concurrency === c)!;
      return {
        concurrency: c,
        percentOfFloor: Math.round((100 * (mine.reqPerSec as number)) / (base.reqPerSec as number)),
      };
    });
    const report = {
      date: new Date().toISOString(),
      machine: {
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model,
        memGiB: Math.round(os.totalmem() / 2 ** 30),
        node: process.version,
      },
      settings: { connections: CONNECTIONS, usersInLoad: USERS, durationSeconds: DURATION, poolSize: POOL },
      results,
      summary,
    };
    const header = '| server | c | req/s | p50 ms | p99 ms | non-2xx | peak RSS MiB | SQL round trips/req |';
    const lines = results.map(
      (r) =>
        `| ${String(r.server)} | ${String(r.concurrency)} | ${String(r.reqPerSec)} | ${String(r.p50Ms)} | ${String(r.p99Ms)} | ${String(r.non2xx)} | ${String(r.peakRssMiB)} | ${String(r.sqlRoundTripsPerRequest)} |`,
    );
    process.stdout.write(
      [header, '| --- | --- | --- | --- | --- | --- | --- | --- |', ...lines].join('\n') + '\n',
    );
    process.stdout.write(
      summary.map((s) => `c=${s.concurrency}: ${s.percentOfFloor}% of the floor`).join('\n') + '\n',
    );
    fs.mkdirSync(path.join(here, 'results'), { recursive: true });
    const file = path.join(here, 'results', `exchange-${report.date.replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
    log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    for (const c of cleanups) await c().catch((err: unknown) => log(`cleanup: ${String(err)}`));
  }
}

await main();
process.exit(0);
