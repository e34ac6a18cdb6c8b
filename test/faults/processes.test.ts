/**
 * Fault run for crashes (npm run test:faults): Custos as separate api and worker processes (started from source,
 * sharing PostgreSQL and a private Redis) under a steady token-exchange load and admin writes over HTTP. In each
 * scenario one process stops dead at a named failpoint (CUSTOS_TEST_FAILPOINTS) — the worst moment for what it is
 * doing — is killed with SIGKILL there, and is started again:
 *
 * - `token.after-audit` (api): a release's audit event has committed, the answer has not been sent;
 * - `import.after-commit` (api): a credential import (with a refresh token) has committed, its refresh job is not
 *   queued and the answer not sent;
 * - `refresh.after-provider` (worker): the provider has rotated the refresh token, the new one is not committed;
 * - `key-migration.before-write` (api): a data key was unwrapped by the old backend and wrapped by the new one (an
 *   AWS KMS key on the emulator), the new wrap is not written.
 *
 * Figures: requests failed (a dead process answers nothing: -1, or 503), time to recover, tokens released without
 * an audit event (0), acknowledged writes lost (0), and nothing left stuck: every interrupted refresh is resolved
 * (a lease taken over), every committed import is refreshed, the migration resumes and completes, every credential
 * still opens. In bench/results/faults-processes-*.json.
 */
import { randomBytes } from 'node:crypto';
import { DataKeyService } from '../../src/crypto/data-key.service.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { createTenant, type TenantFixture } from '../support/factories.js';
import { startOAuthProvider, type TestOAuthProvider } from '../support/oauth-provider.js';
import {
  freePort,
  spawnCustos,
  startPrivateRedis,
  type CustosProcess,
  type LogLine,
  type PrivateRedis,
} from '../support/processes.js';
import {
  PUBLIC_URL,
  REDIRECT,
  refreshClient,
  setUpRefreshTenant,
  type RefreshFixture,
} from '../support/refresh-fixture.js';
import { startKmsEmulator, type KmsEmulator } from '../emulators/kms-emulator.js';
import {
  auditedReleases,
  runClock,
  runScenario,
  sleep,
  writeResults,
  type Outcome,
  type Sample,
  type ScenarioRun,
  type Stream,
} from './harness.js';
import { randomAwsCredentials } from '../support/aws.js';

/** Over real HTTP, to processes that share the machine with this one: half the in-process runs' rate. */
const RATE = Number(process.env.CUSTOS_FAULTS_RATE ?? 100) / 2;
const WRITE_RATE = 5;
const IMPORT_RATE = 2;
const WARM_MS = 5_000;
const AFTER_MS = 30_000;
const SETTLE_MS = 60_000;
const BUSY = 20;
/** A crashed refresher's lease is taken over after this (the default is 30 s; shorter so a run sees it). */
const LEASE_SECONDS = 10;
/** Lifetime of the refresh tokens' access tokens imported or connected in the refresh scenarios. */
const SHORT_LIFETIME_SECONDS = 20;
const REFRESHING = 10;
const MIGRATING_USERS = 10;
const EPOCHS = 4;
const PREFIX = `custos-faults-procs-${randomBytes(3).toString('hex')}`;

const now = runClock();
const CLIENT = refreshClient();
const awsCreds = randomAwsCredentials();
let op: TestOAuthProvider;
let redis: PrivateRedis;
let kms: KmsEmulator;
let app: TestApp;
let fx: RefreshFixture;
let apiPort: number;
let apiUrl: string;
let basic: string;
const procs = new Set<CustosProcess>();
const results: Record<string, unknown>[] = [];

const sql = <T = Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> =>
  app.custos.runtime.dataSource.query(text, params);

async function start(name: string, role: 'api' | 'worker', failpoint?: string): Promise<CustosProcess> {
  const config = app.custos.runtime.config;
  const p = await spawnCustos(name, {
    CUSTOS_ROLE: role,
    DATABASE_URL: config.databaseUrl!,
    CUSTOS_MIGRATIONS_RUN: 'false',
    CUSTOS_ROOT_KEYS: config.rootKeys!,
    CUSTOS_BOOTSTRAP_ADMIN_KEY: app.bootstrapKey,
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `${op.hostPort},127.0.0.1:${kms.port}`,
    CUSTOS_DB_POOL_SIZE: '5',
    REDIS_URL: redis.url,
    CUSTOS_QUEUE_PREFIX: PREFIX,
    CUSTOS_REFRESH_LEASE_SECONDS: String(LEASE_SECONDS),
    AWS_EC2_METADATA_DISABLED: 'true',
    ...(role === 'api' ? { PORT: String(apiPort) } : {}),
    ...(failpoint ? { CUSTOS_TEST_FAILPOINTS: failpoint } : {}),
  });
  procs.add(p);
  return p;
}

async function stop(p: CustosProcess): Promise<void> {
  procs.delete(p);
  await p.stop();
}

/** One request to the api process; a refused or reset connection is status -1 with its error code. */
async function call(
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; body: Record<string, unknown> | undefined; error?: string }> {
  try {
    const res = await fetch(`${apiUrl}${path}`, { method, headers: opts.headers, body: opts.body });
    const text = await res.text();
    let body: Record<string, unknown> | undefined;
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = undefined;
    }
    return { status: res.status, body };
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    return { status: -1, body: undefined, error: cause?.code ?? (err as Error).name };
  }
}

const outcome = (r: Awaited<ReturnType<typeof call>>, released: boolean): Outcome => ({
  status: r.status,
  released,
  error: released ? undefined : (r.error ?? (r.body?.error as string | undefined)),
});

function exchanger(basicAuth: string, users: string[], expectedToken?: (user: string) => string) {
  return async (id: string): Promise<Outcome> => {
    const user = users[Number(id.split('-').pop()) % users.length];
    const r = await call('POST', '/oauth/token', {
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: basicAuth,
        'x-request-id': id,
      },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: user,
        subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
        audience: expectedToken ? 'github' : 'inhouse',
      }).toString(),
    });
    const token = r.body?.access_token;
    const released =
      r.status === 200 && typeof token === 'string' && (!expectedToken || token === expectedToken(user));
    return outcome(r, released);
  };
}

const adminHeaders = (t: TenantFixture, id: string) => ({
  authorization: `Bearer ${t.adminKey}`,
  'content-type': 'application/json',
  'x-request-id': id,
});

async function apiKeyWrite(id: string): Promise<Outcome> {
  const r = await call('PUT', `/v1/tenants/${fx.t.tenantId}/users/${id}/connections/openai`, {
    headers: adminHeaders(fx.t, id),
    body: JSON.stringify({ type: 'api_key', apiKey: `sk-${id}` }),
  });
  return outcome(r, r.status === 200 || r.status === 201);
}

/** A dead process answers nothing (-1: refused or reset); a live one in trouble answers 503. */
const crashExplained = (s: Sample) => s.status === -1 || s.status === 503;

interface Crash<E extends object> {
  /** The process that stops at the failpoint, and the one that replaces it. */
  victim: 'api' | 'worker';
  failpoint: string;
  /** Run once the processes are up, before the load starts. */
  prepare?: () => Promise<void>;
  /** Called at once after the kill with the passes stopped at the failpoint (starts the figures' own clocks). */
  afterKill?: (stopped: LogLine[]) => void;
  /** Started when the load has warmed up (the migration's PUT); the failpoint follows. */
  trigger?: () => Promise<void>;
  streams: Stream[];
  /** Extra figures once the load has stopped (processes still running). */
  figures?: (run: ScenarioRun, crash: CrashFigures) => Promise<E>;
}

interface CrashFigures {
  failpointReachedAt: number;
  killedAt: number;
  restartMs: number;
  /** Passes that stopped at the failpoint before the kill, and what they were doing. */
  stoppedAtFailpoint: LogLine[];
}

async function scenario<E extends object = object>(name: string, crash: Crash<E>) {
  const failpointName = crash.failpoint.split('@')[0];
  let [api, worker] = await Promise.all([
    start(`${name}-api`, 'api', crash.victim === 'api' ? crash.failpoint : undefined),
    start(`${name}-worker`, 'worker', crash.victim === 'worker' ? crash.failpoint : undefined),
  ]);
  let crashFigures: CrashFigures | undefined;
  try {
    await crash.prepare?.();
    const run = await runScenario({
      now,
      name,
      warmMs: WARM_MS,
      afterMs: AFTER_MS,
      settleMs: SETTLE_MS,
      readiness: async () => (await call('GET', '/readyz')).status,
      streams: crash.streams,
      fault: async () => {
        await crash.trigger?.();
        const victim = crash.victim === 'api' ? api : worker;
        const reached = await victim.waitForLog(
          (l) => l.msg === 'failpoint reached' && l.failpoint === failpointName,
          90_000,
        );
        // On the run's clock: when the process stopped there, from the log line's own timestamp.
        const reachedAt = now() - (Date.now() - Number(reached.time));
        await victim.kill9();
        procs.delete(victim);
        const killedAt = now();
        const stopped = victim.logs.filter((l) => l.msg === 'failpoint reached');
        crash.afterKill?.(stopped);
        const replacement = await start(`${name}-${crash.victim}-restarted`, crash.victim);
        if (crash.victim === 'api') api = replacement;
        else worker = replacement;
        const listening = now();
        crashFigures = {
          failpointReachedAt: reachedAt,
          killedAt,
          restartMs: listening - killedAt,
          stoppedAtFailpoint: stopped,
        };
        return { start: reachedAt, end: listening };
      },
    });
    const c = crashFigures!;
    // Every release has its audit event; every acknowledged write is there.
    const exchanges = Object.entries(run.samples).filter(([k]) => k.startsWith('x'));
    let releasedWithoutAudit = 0;
    let auditedButUnanswered = 0;
    for (const [, samples] of exchanges) {
      const released = samples.filter((s) => s.released).map((s) => s.id);
      releasedWithoutAudit += released.length - (await auditedReleases(sql, released)).size;
      const unanswered = samples.filter((s) => s.status !== 200).map((s) => s.id);
      auditedButUnanswered += (await auditedReleases(sql, unanswered)).size;
    }
    const writes = run.samples.w;
    const acknowledged = writes.filter((s) => s.released).map((s) => s.id);
    const unacknowledged = writes.filter((s) => !s.released).map((s) => s.id);
    const stored = async (users: string[]) =>
      (
        await sql<{ n: number }>(
          `SELECT count(*)::int AS n FROM connections
            WHERE tenant_id = $1 AND user_id = ANY($2) AND revoked_at IS NULL`,
          [fx.t.tenantId, users],
        )
      )[0].n;
    const figures = {
      scenario: name,
      failpoint: crash.failpoint,
      killed: crash.victim,
      failpointToKillMs: c.killedAt - c.failpointReachedAt,
      restartMs: c.restartMs,
      passesStoppedAtFailpoint: c.stoppedAtFailpoint.length,
      streams: run.figures,
      readinessRecoveredMs: run.readinessRecoveredMs,
      readinessUnavailableSamples: run.readinessUnavailableSamples,
      tokensReleasedWithoutAuditEvent: releasedWithoutAudit,
      auditedButUnanswered,
      writesAcknowledged: acknowledged.length,
      dataLost: acknowledged.length - (await stored(acknowledged)),
      writesCommittedButUnanswered: await stored(unacknowledged),
      ...((crash.figures ? await crash.figures(run, c) : {}) as E),
    };
    console.log(JSON.stringify(figures, null, 2));
    results.push(figures);
    return figures;
  } finally {
    await Promise.all([stop(api), stop(worker)]);
  }
}

function expectHeld(f: Awaited<ReturnType<typeof scenario<object>>>) {
  for (const [stream, figures] of Object.entries(f.streams)) {
    expect({ stream, unexpected: figures.unexpected, hung: figures.hung }).toEqual({
      stream,
      unexpected: 0,
      hung: 0,
    });
    expect({ stream, recovered: figures.timeToRecoverMs !== null }).toEqual({ stream, recovered: true });
  }
  expect(f.tokensReleasedWithoutAuditEvent).toBe(0);
  expect(f.dataLost).toBe(0);
  expect(f.readinessRecoveredMs).not.toBeNull();
}

/** Waits until `done` or `ms`; the time it took, or null. */
async function timeUntil(done: () => Promise<boolean>, ms: number): Promise<number | null> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await done()) return Date.now() - t0;
    await sleep(250);
  }
  return null;
}

/** Of these connections: refreshed, marked needs_reauth (and why), or neither; and those still active but expired. */
async function refreshOutcomes(ids: string[]) {
  const events = await sql<{ connection_id: string; action: string; details: { reason?: string } }>(
    `SELECT connection_id, action, details FROM audit_events
      WHERE connection_id = ANY($1) AND action IN ('connection.refreshed', 'connection.needs_reauth')`,
    [ids],
  );
  const refreshed = new Set(
    events.filter((e) => e.action === 'connection.refreshed').map((e) => e.connection_id),
  );
  const reauth = events.filter((e) => e.action === 'connection.needs_reauth');
  const stuck = await sql<{ id: string }>(
    `SELECT id FROM connections WHERE id = ANY($1) AND status = 'active' AND expires_at < now()`,
    [ids],
  );
  // A lease past its end that nobody took over (a refresh in flight holds a live one).
  const leases = await sql<{ n: number }>(
    `SELECT count(*)::int AS n FROM connections WHERE id = ANY($1) AND refresh_lease_until < now()`,
    [ids],
  );
  return {
    connections: ids.length,
    refreshed: refreshed.size,
    needsReauth: reauth.length,
    needsReauthReasons: reauth.map((e) => e.details.reason),
    neither: ids.filter((id) => !refreshed.has(id) && !reauth.some((e) => e.connection_id === id)).length,
    stuck: stuck.length,
    expiredLeasesHeld: leases[0].n,
  };
}

/** Revokes connections of the load's tenant (so that a scenario's refreshes do not run on into the next). */
async function revokeAll(ids: string[]): Promise<void> {
  for (const id of ids) {
    const res = await app.request('DELETE', `/v1/tenants/${fx.t.tenantId}/connections/${id}`, {
      key: fx.t.adminKey,
    });
    if (res.status >= 300 && res.status !== 404) throw new Error(`revoke ${id}: ${res.status} ${res.raw}`);
  }
}

beforeAll(async () => {
  [op, redis, kms] = await Promise.all([
    startOAuthProvider({
      clients: [{ ...CLIENT, redirect_uris: [REDIRECT] }],
      accessTokenTtlSeconds: SHORT_LIFETIME_SECONDS,
      refreshTokenRotation: true,
    }),
    startPrivateRedis(),
    startKmsEmulator({ credentials: [{ ...awsCreds }] }),
  ]);
  // The run's own instance, for set-up and reads: an api that runs no background work.
  app = await startTestApp({
    CUSTOS_ROLE: 'api',
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `${op.hostPort},127.0.0.1:${kms.port}`,
    REDIS_URL: redis.url,
    CUSTOS_QUEUE_PREFIX: PREFIX,
    CUSTOS_LOG_LEVEL: 'warn',
  });
  fx = await setUpRefreshTenant(app, op, CLIENT);
  // The load's users hold tokens that outlive the run: their exchanges never call the provider.
  for (let i = 0; i < BUSY; i++) await fx.connect(`busy-${i}`, 3600);
  basic = 'Basic ' + Buffer.from(`${fx.connector.clientId}:${fx.connector.clientSecret}`).toString('base64');
  apiPort = await freePort();
  apiUrl = `http://127.0.0.1:${apiPort}`;
}, 180_000);

afterAll(async () => {
  if (results.length > 0) {
    const file = writeResults('processes', {
      startedAt: new Date(Date.now() - now()).toISOString(),
      custos: 'one api and one worker process (started from source with tsx), a private Redis, PostgreSQL',
      load: {
        tokenExchangesPerSecond: RATE,
        adminWritesPerSecond: WRITE_RATE,
        importsWithRefreshTokenPerSecond: IMPORT_RATE,
        busyUsers: BUSY,
      },
      limits: { refreshLeaseSeconds: LEASE_SECONDS, shortTokenLifetimeSeconds: SHORT_LIFETIME_SECONDS },
      timeline: { warmMs: WARM_MS, afterFaultMs: AFTER_MS },
      scenarios: results,
    });
    console.log(`fault figures written to ${file}`);
  }
  await Promise.all([...procs].map((p) => p.stop()));
  await app?.close();
  await redis?.stop();
  await kms?.close();
  await op?.close();
}, 120_000);

const busyUsers = Array.from({ length: BUSY }, (_, i) => `busy-${i}`);
const baseStreams = (): Stream[] => [
  { name: 'x', ratePerSecond: RATE, send: exchanger(basic, busyUsers), expected: crashExplained },
  { name: 'w', ratePerSecond: WRITE_RATE, send: apiKeyWrite, expected: crashExplained },
];

describe('kill -9 at named failpoints under steady load', () => {
  it('api killed after a release’s audit event committed, before the answer: no token without its event', async () => {
    const f = await scenario('api-token-after-audit', {
      victim: 'api',
      // The Nth release: the load has warmed up by then.
      failpoint: `token.after-audit@${Math.round((RATE * WARM_MS) / 1000)}`,
      streams: baseStreams(),
    });
    expectHeld(f);
    // The failpoint really was past the commit: events whose token never left.
    expect(f.auditedButUnanswered).toBeGreaterThan(0);
    expect(f.passesStoppedAtFailpoint).toBeGreaterThan(0);
  }, 600_000);

  it('api killed after an import committed, before its refresh job was queued: the refresh still happens', async () => {
    const imported: string[] = [];
    let stoppedRefreshed: Promise<number | null> = Promise.resolve(null);
    // Real token sets from the provider, one per import, taken in order by the writes.
    const pool: { access_token: string; refresh_token: string }[] = [];
    const needed = Math.ceil(IMPORT_RATE * ((WARM_MS + AFTER_MS) / 1000 + 30));
    for (let i = 0; i < needed; i++) pool.push(await fx.tokensFor(`imp-${i}`));
    const importWrite = async (id: string): Promise<Outcome> => {
      const tokens = pool.shift();
      if (!tokens) return apiKeyWrite(id);
      const r = await call('PUT', `/v1/tenants/${fx.t.tenantId}/users/${id}/connections/inhouse`, {
        headers: adminHeaders(fx.t, id),
        body: JSON.stringify({
          type: 'oauth2',
          accessToken: tokens.access_token,
          refreshToken: tokens.refresh_token,
          scopes: ['repo'],
          expiresAt: new Date(Date.now() + SHORT_LIFETIME_SECONDS * 1000).toISOString(),
        }),
      });
      return outcome(r, r.status === 200 || r.status === 201);
    };
    const f = await scenario('api-import-after-commit', {
      victim: 'api',
      failpoint: `import.after-commit@${Math.round((IMPORT_RATE * WARM_MS) / 1000)}`,
      streams: [
        { name: 'x', ratePerSecond: RATE, send: exchanger(basic, busyUsers), expected: crashExplained },
        { name: 'w', ratePerSecond: IMPORT_RATE, send: importWrite, expected: crashExplained },
      ],
      afterKill: (stopped) => {
        // The import that committed before the kill: its refresh job was never queued; the worker's sweep must
        // find it in PostgreSQL.
        const ids = stopped.map((l) => String(l.connectionId));
        stoppedRefreshed = timeUntil(
          async () => (await refreshOutcomes(ids)).refreshed === ids.length,
          (SHORT_LIFETIME_SECONDS + 60) * 1000,
        );
      },
      figures: async (run, crash) => {
        // Every import that committed (answered or not) is due within its lifetime: wait for all of them.
        const committed = await sql<{ id: string; user_id: string }>(
          `SELECT id, user_id FROM connections
            WHERE tenant_id = $1 AND provider = 'inhouse' AND user_id = ANY($2)`,
          [fx.t.tenantId, run.samples.w.map((s) => s.id)],
        );
        const ids = committed.map((r) => r.id);
        imported.push(...ids);
        const killedAfterCommit = crash.stoppedAtFailpoint.map((l) => String(l.connectionId));
        const refreshedAfterKillMs = await stoppedRefreshed;
        const allRefreshedMs = await timeUntil(
          async () => (await refreshOutcomes(ids)).refreshed === ids.length,
          (SHORT_LIFETIME_SECONDS + 20) * 1000,
        );
        return {
          importsCommitted: ids.length,
          importsRefreshed: await refreshOutcomes(ids),
          importsStoppedAfterCommit: {
            ...(await refreshOutcomes(killedAfterCommit)),
            ids: killedAfterCommit,
          },
          stoppedImportRefreshedWithinMsOfKill: refreshedAfterKillMs,
          allRefreshedWithinMsAfterLoad: allRefreshedMs,
        };
      },
    });
    // They would go on being refreshed through the next scenarios: revoked here.
    await revokeAll(imported);
    expectHeld(f);
    expect(f.writesCommittedButUnanswered).toBeGreaterThan(0);
    expect(f.importsStoppedAfterCommit.refreshed).toBe(f.importsStoppedAfterCommit.connections);
    expect(f.importsRefreshed.refreshed).toBe(f.importsCommitted);
    expect(f.importsRefreshed.stuck).toBe(0);
    expect(f.stoppedImportRefreshedWithinMsOfKill).not.toBeNull();
  }, 600_000);

  it('worker killed between the provider’s answer and the commit: the interruption is resolved, never silent', async () => {
    const refreshing: string[] = [];
    let interruptedResolved: Promise<number | null> = Promise.resolve(null);
    const f = await scenario('worker-refresh-after-provider', {
      victim: 'worker',
      failpoint: 'refresh.after-provider',
      // Connections nobody reads, due one after another from about 10 s in: only the worker refreshes them.
      prepare: async () => {
        for (let i = 0; i < REFRESHING; i++) {
          const c = await fx.connect(`refresh-${now()}-${i}`, SHORT_LIFETIME_SECONDS + 2 * i);
          refreshing.push(c.connectionId);
        }
      },
      streams: baseStreams(),
      afterKill: (stopped) => {
        // The dead worker's leases run out, another refresher takes them over, finds the refresh token rotated
        // away, and says so: needs_reauth "refresh interrupted".
        const ids = stopped.map((l) => String(l.connectionId));
        interruptedResolved = timeUntil(
          async () => (await refreshOutcomes(ids)).needsReauth === ids.length,
          90_000,
        );
      },
      figures: async (_run, crash) => {
        const interrupted = crash.stoppedAtFailpoint.map((l) => String(l.connectionId));
        return {
          interruptedResolvedWithinMsOfKill: await interruptedResolved,
          refreshing: await refreshOutcomes(refreshing),
          interrupted: await refreshOutcomes(interrupted),
        };
      },
    });
    await revokeAll(refreshing);
    expectHeld(f);
    expect(f.interrupted.connections).toBeGreaterThan(0);
    expect(f.interrupted.needsReauth).toBe(f.interrupted.connections);
    expect(f.interrupted.needsReauthReasons.every((r) => r === 'refresh interrupted')).toBe(true);
    expect(f.refreshing.neither).toBe(0);
    expect(f.refreshing.stuck).toBe(0);
    expect(f.refreshing.expiredLeasesHeld).toBe(0);
    expect(f.interruptedResolvedWithinMsOfKill).not.toBeNull();
  }, 600_000);

  it('api killed in a key migration between unwrap and write: the migration resumes and every credential opens', async () => {
    // A managed tenant with credentials under several data-key epochs, about to move to an AWS KMS key.
    const m = await createTenant(app, `faults-migrating-${randomBytes(3).toString('hex')}`);
    const put = async (method: string, url: string, body?: unknown) => {
      const res = await app.request(method, url, { key: m.adminKey, body });
      if (res.status >= 300) throw new Error(`${method} ${url}: ${res.status} ${res.raw}`);
      return res.body;
    };
    const tokenOf = (user: string) => `gho_migrating_${user}_${m.tenantId.slice(0, 8)}`;
    const users = Array.from({ length: MIGRATING_USERS }, (_, i) => `m${i}`);
    for (let i = 0; i < users.length; i++) {
      if (i > 0 && i % Math.ceil(users.length / EPOCHS) === 0) {
        await put('POST', `/v1/tenants/${m.tenantId}/key-backend/rotate`);
      }
      await put('PUT', `/v1/tenants/${m.tenantId}/users/${users[i]}/connections/github`, {
        type: 'oauth2',
        accessToken: tokenOf(users[i]),
      });
    }
    const connector = await put('POST', `/v1/tenants/${m.tenantId}/connectors`, {
      name: 'load',
      allowedProviders: ['github'],
      delegation: 'trusted',
      auth: { method: 'client_secret_basic' },
    });
    const mBasic =
      'Basic ' + Buffer.from(`${connector.clientId}:${connector.clientSecret}`).toString('base64');
    const keys = async () =>
      (
        await sql<{ total: number; on_kms: number }>(
          `SELECT count(*)::int AS total, count(*) FILTER (WHERE backend_type = 'aws-kms')::int AS on_kms
             FROM data_keys WHERE tenant_id = $1`,
          [m.tenantId],
        )
      )[0];
    const before = await keys();
    let configured: Record<string, unknown> | undefined;
    let atKill = keys();
    let completed: Promise<number | null> = Promise.resolve(null);
    const f = await scenario('api-key-migration-before-write', {
      victim: 'api',
      failpoint: 'key-migration.before-write@2',
      streams: [
        ...baseStreams(),
        {
          name: 'x.migrating',
          ratePerSecond: 10,
          send: exchanger(mBasic, users, tokenOf),
          expected: crashExplained,
        },
      ],
      trigger: async () => {
        const r = await call('PUT', `/v1/tenants/${m.tenantId}/key-backend`, {
          headers: adminHeaders(m, 'configure'),
          body: JSON.stringify({
            type: 'aws-kms',
            keyId: kms.createKey({ alias: `alias/faults-${m.tenantId.slice(0, 8)}` }).arn,
            region: 'us-east-1',
            endpoint: kms.url,
            credentials: { ...awsCreds },
          }),
        });
        if (r.status !== 200) throw new Error(`configure: ${r.status} ${JSON.stringify(r.body)}`);
        configured = r.body;
      },
      afterKill: () => {
        atKill = keys();
        // The worker's backstop job (every 30 s) resumes it.
        completed = timeUntil(async () => {
          const k = await keys();
          return k.on_kms === k.total;
        }, 90_000);
      },
      figures: async (_run, crash) => {
        const killed = await atKill;
        const completedMs = await completed;
        const view = (
          await app.request('GET', `/v1/tenants/${m.tenantId}/key-backend`, { key: m.auditorKey })
        ).body;
        // Every credential opens, read through data keys unwrapped afresh.
        app.custos.app.get(DataKeyService).flushTenant(m.tenantId);
        let unreadable = 0;
        for (const user of users) {
          const res = await app.request('POST', '/oauth/token', {
            payload: new URLSearchParams({
              grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
              subject_token: user,
              subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
              audience: 'github',
            }).toString(),
            headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: mBasic },
          });
          if (res.status !== 200 || res.body.access_token !== tokenOf(user)) unreadable++;
        }
        return {
          migration: {
            statusAnsweredToConfigure: configured?.status,
            dataKeysBefore: before.total,
            dataKeys: killed.total,
            onKmsAtKill: killed.on_kms,
            stoppedAt: crash.stoppedAtFailpoint.map((l) => l.dataKeyId),
            completedWithinMsOfKill: completedMs,
            statusAtEnd: view.status,
          },
          credentialsUnreadable: unreadable,
        };
      },
    });
    expectHeld(f);
    expect(f.migration.dataKeysBefore).toBe(EPOCHS);
    expect(f.migration.onKmsAtKill).toBeLessThan(f.migration.dataKeys);
    expect(f.migration.completedWithinMsOfKill).not.toBeNull();
    expect(f.migration.statusAtEnd).toBe('active');
    expect(f.credentialsUnreadable).toBe(0);
  }, 600_000);
});
