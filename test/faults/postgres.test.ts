/**
 * Fault run for PostgreSQL (npm run test:faults): under a steady token-exchange load and a trickle of admin
 * writes, PostgreSQL is restarted (fast, then immediate: a crash and WAL recovery), and its connections are
 * blackholed through a TCP proxy (silent partition; connections blackholed once stay dead). Each scenario prints
 * and records its figures in bench/results/faults-postgres-*.json: requests failed, time to recover, tokens
 * released without an audit event (must be 0), acknowledged writes lost (must be 0).
 *
 * By default the run uses a PostgreSQL of its own (the embedded server binaries, in a temporary folder), so that
 * restarting it disturbs nobody else on the machine. CUSTOS_FAULTS_PG=system restarts the machine's cluster with
 * `pg_ctlcluster 15 main restart` instead (root; only on a machine nothing else uses).
 * Custos runs with its default limits (CUSTOS_DB_*), pool 10.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { createLogger } from '../../src/common/logger.js';
import { defaultDatabaseLimits } from '../../src/database/data-source.js';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../../src/database/embedded-postgres.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { createTenant, type TenantFixture } from '../support/factories.js';
import { databaseUrlFor, workerDatabaseName } from '../support/env.js';
import { startTestIdp, type TestIdp } from '../support/idp.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';
import {
  loadFigures,
  readinessRecovery,
  readinessSampler,
  runClock,
  sleep,
  steadyLoad,
  writeResults,
  type Sample,
} from './harness.js';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const SYSTEM = process.env.CUSTOS_FAULTS_PG === 'system';
const RATE = Number(process.env.CUSTOS_FAULTS_RATE ?? 100);
const WRITE_RATE = 5;
const WARM_MS = 5_000;
const BLACKHOLE_MS = 20_000;
const AFTER_MS = 30_000;
const SETTLE_MS = 60_000;
const USERS = 20;

const now = runClock();
let dataDir: string;
/** The embedded server's own data folder (its state file and, when reachable, its cluster). */
let pgDir: string;
let embedded: EmbeddedPostgresHandle | undefined;
let directUrl: string;
let proxy: TcpProxy;
let idp: TestIdp;
let app: TestApp;
let t: TenantFixture;
let authorization: string;
const subjectTokens: string[] = [];
const runId = Math.random().toString(36).slice(2);
const accessToken = (user: number) => `gho_fault_${runId}_${user}`;
const results: Record<string, unknown>[] = [];
const log = createLogger('warn');

async function restartPostgres(mode: 'fast' | 'immediate'): Promise<void> {
  if (SYSTEM) {
    execFileSync('pg_ctlcluster', ['15', 'main', 'restart', '-m', mode], { stdio: 'inherit' });
    return;
  }
  const handle = embedded!;
  if (mode === 'immediate') {
    // SIGQUIT to the postmaster: no checkpoint, crash recovery from the WAL on the next start.
    const pid = Number(fs.readFileSync(path.join(handle.pgdata, 'postmaster.pid'), 'utf8').split('\n')[0]);
    process.kill(pid, 'SIGQUIT');
  }
  await handle.stop();
  embedded = await startEmbeddedPostgres(pgDir, log);
  if (embedded.databaseUrl !== handle.databaseUrl) throw new Error('the restarted server took another port');
}

async function direct<T extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<T[]> {
  const client = new pg.Client({ connectionString: directUrl });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

async function exchange(id: string) {
  const user = Number(id.split('-').pop()) % USERS;
  const res = await app.request('POST', '/oauth/token', {
    payload: new URLSearchParams({
      grant_type: EXCHANGE,
      subject_token: subjectTokens[user],
      subject_token_type: JWT_TYPE,
      audience: 'github',
    }).toString(),
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization,
      'x-request-id': id,
    },
  });
  return { status: res.status, released: res.status === 200 && res.body.access_token === accessToken(user) };
}

async function adminWrite(id: string) {
  const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/users/${id}/connections/openai`, {
    key: t.adminKey,
    body: { type: 'api_key', apiKey: `sk-${id}` },
    headers: { 'x-request-id': id },
  });
  return { status: res.status, released: res.status === 200 || res.status === 201 };
}

/** Runs load through `fault` (which returns once the fault has ended) and records the scenario's figures. */
async function scenario(name: string, fault: () => Promise<void>) {
  const exchanges = steadyLoad(now, RATE, `x-${name}`, exchange);
  const writes = steadyLoad(now, WRITE_RATE, `w-${name}`, adminWrite);
  const readiness = readinessSampler(now, async () => (await app.request('GET', '/readyz')).status);
  await sleep(WARM_MS);
  const faultStart = now();
  await fault();
  const faultEnd = now();
  await sleep(AFTER_MS);
  await Promise.all([exchanges.stop(SETTLE_MS), writes.stop(SETTLE_MS)]);
  await readiness.stop();

  const released = (s: Sample) => s.released;
  const transient = (s: Sample) => s.status === 503;
  const tokens = loadFigures(exchanges.samples, faultStart, faultEnd, released, transient);
  const adminWrites = loadFigures(writes.samples, faultStart, faultEnd, released, transient);
  // Every released token has its committed audit event; every acknowledged write is still there.
  const releasedIds = exchanges.samples.filter(released).map((s) => s.id);
  const audited = await direct<{ request_id: string }>(
    `SELECT DISTINCT request_id FROM audit_events
      WHERE action = 'token.exchange' AND outcome = 'allowed' AND request_id = ANY($1)`,
    [releasedIds],
  );
  const acknowledged = writes.samples.filter(released).map((s) => s.id);
  const stored = await direct<{ user_id: string }>(
    `SELECT user_id FROM connections WHERE tenant_id = $1 AND user_id = ANY($2) AND revoked_at IS NULL`,
    [t.tenantId, acknowledged],
  );
  const figures = {
    scenario: name,
    faultMs: faultEnd - faultStart,
    tokenExchanges: tokens,
    adminWrites,
    readinessRecoveredMs: readinessRecovery(readiness.points, faultEnd),
    readinessUnavailableSamples: readiness.points.filter(([, s]) => s !== 200).length,
    tokensReleasedWithoutAuditEvent: releasedIds.length - audited.length,
    writesAcknowledged: acknowledged.length,
    dataLost: acknowledged.length - stored.length,
  };
  console.log(JSON.stringify(figures, null, 2));
  results.push(figures);
  return figures;
}

function expectHeld(f: Awaited<ReturnType<typeof scenario>>) {
  expect(f.tokenExchanges.hung).toBe(0);
  expect(f.tokenExchanges.unexpected).toBe(0);
  expect(f.adminWrites.hung).toBe(0);
  expect(f.tokensReleasedWithoutAuditEvent).toBe(0);
  expect(f.dataLost).toBe(0);
  expect(f.tokenExchanges.timeToRecoverMs).not.toBeNull();
  expect(f.readinessRecoveredMs).not.toBeNull();
}

beforeAll(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-faults-'));
  if (SYSTEM) {
    directUrl = databaseUrlFor(workerDatabaseName());
  } else {
    pgDir = path.join(dataDir, 'pg');
    embedded = await startEmbeddedPostgres(pgDir, log);
    directUrl = embedded.databaseUrl;
  }
  const u = new URL(directUrl);
  proxy = await startTcpProxy(u.hostname, Number(u.port || 5432));
  const viaProxy = new URL(directUrl);
  viaProxy.port = String(proxy.port);
  idp = await startTestIdp();
  app = await startTestApp({
    DATABASE_URL: viaProxy.toString(),
    CUSTOS_OUTBOUND_ALLOW_HOSTS: idp.hostPort,
    CUSTOS_DB_POOL_SIZE: '10',
    CUSTOS_LOG_LEVEL: 'warn',
  });
  t = await createTenant(app);
  const put = (url: string, body: unknown) => app.request('PUT', url, { key: t.adminKey, body });
  await put(`/v1/tenants/${t.tenantId}/identity-providers/main`, {
    issuer: idp.issuer,
    jwksUri: idp.jwksUri,
    audiences: ['custos'],
    algorithms: ['ES256'],
  });
  for (let i = 0; i < USERS; i++) {
    await put(`/v1/tenants/${t.tenantId}/users/u${i}/connections/github`, {
      type: 'oauth2',
      accessToken: accessToken(i),
    });
    subjectTokens.push(await idp.token({ sub: `u${i}`, exp: Math.floor(Date.now() / 1000) + 7200 }));
  }
  const c = await app.request('POST', `/v1/tenants/${t.tenantId}/connectors`, {
    key: t.adminKey,
    body: {
      name: 'load',
      allowedProviders: ['github'],
      delegation: 'user_token',
      auth: { method: 'client_secret_basic' },
    },
  });
  if (c.status !== 201) throw new Error(c.raw);
  authorization = 'Basic ' + Buffer.from(`${c.body.clientId}:${c.body.clientSecret}`).toString('base64');
}, 120_000);

afterAll(async () => {
  if (results.length > 0) {
    const file = writeResults('postgres', {
      startedAt: new Date(Date.now() - now()).toISOString(),
      postgres: SYSTEM ? 'the machine’s cluster (pg_ctlcluster 15 main)' : 'embedded server of its own',
      load: { tokenExchangesPerSecond: RATE, adminWritesPerSecond: WRITE_RATE, users: USERS },
      limits: {
        ...defaultDatabaseLimits,
        batchTimeoutMs: app.custos.runtime.config.dbBatchTimeoutMs,
        poolSize: 10,
      },
      timeline: { warmMs: WARM_MS, blackholeMs: BLACKHOLE_MS, afterFaultMs: AFTER_MS },
      scenarios: results,
    });
    console.log(`fault figures written to ${file}`);
  }
  proxy?.restore();
  await app?.close();
  await proxy?.close();
  await idp?.close();
  if (embedded) {
    await embedded.stop();
    fs.rmSync(embedded.pgdata, { recursive: true, force: true });
  }
  fs.rmSync(dataDir, { recursive: true, force: true });
}, 120_000);

describe('PostgreSQL faults under steady load', () => {
  it('survives a restart (fast shutdown)', async () => {
    expectHeld(await scenario('restart-fast', () => restartPostgres('fast')));
  }, 600_000);

  it('survives a crash and restart (immediate shutdown, WAL recovery)', async () => {
    expectHeld(await scenario('restart-immediate', () => restartPostgres('immediate')));
  }, 600_000);

  it('survives a silent partition (blackholed connections that stay dead)', async () => {
    const f = await scenario('blackhole', async () => {
      proxy.blackhole();
      await sleep(BLACKHOLE_MS);
      proxy.restore();
    });
    expectHeld(f);
    // A partition longer than the limits must be felt, and answered with 503s.
    expect(f.tokenExchanges.failedByStatus['503']).toBeGreaterThan(0);
  }, 600_000);
});
