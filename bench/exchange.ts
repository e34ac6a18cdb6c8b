/**
 * Token-exchange benchmark: `npm run bench:exchange`.
 *
 * Starts Custos from the production build (dist/, in its own process) against the local PostgreSQL (a
 * fresh database), seeds over the admin API a tenant, an identity provider (JWKS on loopback), a connector
 * and BENCH_CONNECTIONS connections (default 10,000),
 * then drives POST /oauth/token with autocannon (in a child process) at concurrency 10 and 50, cycling
 * through BENCH_USERS distinct users' tokens (default 1,000). In the same run it measures the floor: a bare
 * node:http server doing one SELECT and one group-committed audit INSERT per request (bench/floor.ts).
 * Prints req/s, p50, p99, peak RSS and SQL round trips per request, and writes bench/results/*.json. The set-up
 * is bench/exchange-setup.ts, which bench/audit.ts shares.
 *
 * Environment: BENCH_DATABASE_URL (admin URL of a PostgreSQL server; default the local one),
 * BENCH_CONNECTIONS, BENCH_USERS, BENCH_DURATION (seconds per run, default 15).
 */
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { RootKeyring } from '../src/common/root-keyring.js';
import { generateAdminKey } from '../src/identity/admin-keys.service.js';
import {
  createDatabase,
  runLoad,
  seedExchange,
  startCustos,
  startIdentityProvider,
  type LoadRequest,
} from './exchange-setup.js';
import { log, machineInfo } from './lib.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10_000);
const USERS = Math.min(Number(process.env.BENCH_USERS ?? 1_000), CONNECTIONS);
const DURATION = Number(process.env.BENCH_DURATION ?? 15);
const POOL = 10;
/** The user tokens' lifetime, as in the recorded results (a run is far shorter). */
const TOKEN_LIFETIME_S = 3600;

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
  const database = await createDatabase(`custos_bench_${process.pid}`);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-'));
  const cleanups: (() => Promise<unknown>)[] = [
    () => database.drop(),
    async () => fs.rmSync(dataDir, { recursive: true, force: true }),
  ];
  try {
    const idp = await startIdentityProvider();
    cleanups.unshift(() => idp.close());

    const bootstrapKey = generateAdminKey();
    const custos = await startCustos({
      databaseUrl: database.url,
      dataDir,
      rootKeys: RootKeyring.generateSpec(),
      bootstrapKey,
      outboundHosts: idp.host,
      poolSize: POOL,
    });
    cleanups.unshift(() => custos.stop());
    const url = custos.url;

    log(`seeding a tenant, an identity provider, a connector and ${CONNECTIONS} connections`);
    const seed = await seedExchange(url, bootstrapKey, idp, CONNECTIONS, USERS, TOKEN_LIFETIME_S);
    const custosRequests = seed.requests;
    const floorRequests: LoadRequest[] = seed.userIds.map((user) => ({
      method: 'POST',
      path: '/',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ tenant_id: seed.tenantId, user_id: user, audience: 'github' }).toString(),
    }));

    log(`warming up (every user token verified once, caches filled)`);
    await runLoad({ url, connections: 10, durationSeconds: 5, requests: custosRequests });
    const auditRows = () => countAuditEvents(database.url);

    const results: Record<string, unknown>[] = [];
    for (const concurrency of [10, 50]) {
      const before = await custos.stats();
      const auditBefore = await auditRows();
      let peakRss = before.rss;
      const sampler = setInterval(() => {
        void custos.stats().then((s) => (peakRss = Math.max(peakRss, s.rss)));
      }, 250);
      log(`custos: concurrency ${concurrency} for ${DURATION}s`);
      const r = await runLoad({
        url,
        connections: concurrency,
        durationSeconds: DURATION,
        requests: custosRequests,
      });
      clearInterval(sampler);
      const after = await custos.stats();
      if (process.env.BENCH_VERBOSE) {
        log(`memory after c=${concurrency}: ${JSON.stringify((after as { memory?: unknown }).memory)}`);
        // With BENCH_SERVER_NODE_OPTIONS=--expose-gc: what stays after a full collection.
        custos.process.send('gc');
        await new Promise((r) => setTimeout(r, 500));
        log(`memory after gc: ${JSON.stringify(((await custos.stats()) as { memory?: unknown }).memory)}`);
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
    const floor = fork(path.join(here, 'floor.ts'), [database.url, String(POOL)], {
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
      machine: machineInfo(),
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
