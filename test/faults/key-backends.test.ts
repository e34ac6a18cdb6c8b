/**
 * Fault run for the tenants' key backends (npm run test:faults): three tenants under a steady token-exchange load
 * and admin writes — one on an AWS KMS key, one on a Vault Transit key (the emulators in test/emulators, driven by
 * the real @aws-sdk/client-kms and node-vault clients), one on the managed keyring — with unwrapped data keys
 * cached for only 2 s, so that unwraps really happen under load. One backend at a time is made slow, erroring
 * (5xx), hanging, and restarted. The tenant on it must get 503s (fast ones once the circuit breaker is open), the
 * other two must not see a single failure, and everything must come back after the fault. Figures per tenant in
 * bench/results/faults-key-backends-*.json.
 *
 * Custos runs with its default key-backend limits (CUSTOS_KEY_BACKEND_TIMEOUT_MS 5000, breaker 5 s).
 */
import { randomBytes } from 'node:crypto';
import { startTestApp, type TestApp } from '../support/app.js';
import { createTenant, type TenantFixture } from '../support/factories.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';
import { startKmsEmulator, type KmsEmulator, type KmsEmulatorState } from '../emulators/kms-emulator.js';
import { startVaultEmulator, type VaultEmulator } from '../emulators/vault-emulator.js';
import {
  auditedReleases,
  runClock,
  runScenario,
  sleep,
  writeResults,
  type LoadFigures,
  type Outcome,
  type Sample,
  type Stream,
} from './harness.js';
import { randomAwsCredentials } from '../support/aws.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const RATE = Number(process.env.CUSTOS_FAULTS_RATE ?? 100);
const WRITE_RATE = 2;
const WARM_MS = 5_000;
const FAULT_MS = 10_000;
const AFTER_MS = 20_000;
const SETTLE_MS = 60_000;
const USERS = 10;
const CACHE_TTL_SECONDS = 2;
/** Slow, not failing: well inside the default 5 s deadline of a key-backend call. */
const SLOW_MS = 1_500;

type TenantName = 'kms' | 'vault' | 'managed';
const TENANTS: TenantName[] = ['kms', 'vault', 'managed'];

const now = runClock();
const awsCreds = randomAwsCredentials();
let kms: KmsEmulator;
let vault: VaultEmulator;
/** Custos reaches Vault through this proxy, so that Vault can vanish and come back without losing its keys. */
let vaultProxy: TcpProxy;
let app: TestApp;
const tenants = {} as Record<TenantName, { t: TenantFixture; basic: string }>;
const tokenOf = (tenant: TenantName, user: number) => `gho_${tenant}_${user}_${randomSuffix}`;
const randomSuffix = randomBytes(4).toString('hex');
const results: Record<string, unknown>[] = [];

const sql = <T = Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> =>
  app.custos.runtime.dataSource.query(text, params);

function exchanger(tenant: TenantName) {
  return async (id: string): Promise<Outcome> => {
    const user = Number(id.split('-').pop()) % USERS;
    const res = await app.request('POST', '/oauth/token', {
      payload: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: `u${user}`,
        subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
        audience: 'github',
      }).toString(),
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: tenants[tenant].basic,
        'x-request-id': id,
      },
    });
    const released = res.status === 200 && res.body.access_token === tokenOf(tenant, user);
    return { status: res.status, released, error: released ? undefined : res.body?.error };
  };
}

function writer(tenant: TenantName) {
  return async (id: string): Promise<Outcome> => {
    const { t } = tenants[tenant];
    const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/users/${id}/connections/openai`, {
      key: t.adminKey,
      body: { type: 'api_key', apiKey: `sk-${id}` },
      headers: { 'x-request-id': id },
    });
    return { status: res.status, released: res.status === 200 || res.status === 201, error: res.body?.error };
  };
}

async function restartKms(state?: KmsEmulatorState): Promise<void> {
  const port = kms.port;
  await kms.close();
  kms = await startKmsEmulator({ port, credentials: [{ ...awsCreds }], ...(state ? { state } : {}) });
}

interface TenantFigures {
  tokenExchanges: LoadFigures;
  adminWrites: LoadFigures;
}

async function scenario(affected: 'kms' | 'vault', fault: string, inject: () => Promise<void>) {
  const name = `${affected}-${fault}`;
  // The affected tenant may answer 503 (nothing else); the others must not fail at all.
  const expected = (tenant: TenantName) => (s: Sample) => tenant === affected && s.status === 503;
  const streams: Stream[] = TENANTS.flatMap((tenant) => [
    {
      name: `x.${tenant}`,
      ratePerSecond: RATE / TENANTS.length,
      send: exchanger(tenant),
      expected: expected(tenant),
    },
    { name: `w.${tenant}`, ratePerSecond: WRITE_RATE, send: writer(tenant), expected: expected(tenant) },
  ]);
  const run = await runScenario({
    now,
    name,
    warmMs: WARM_MS,
    afterMs: AFTER_MS,
    settleMs: SETTLE_MS,
    readiness: async () => (await app.request('GET', '/readyz')).status,
    streams,
    fault: inject,
  });
  const perTenant = {} as Record<TenantName, TenantFigures>;
  let releasedWithoutAudit = 0;
  let acknowledgedWrites = 0;
  let lost = 0;
  for (const tenant of TENANTS) {
    perTenant[tenant] = {
      tokenExchanges: run.figures[`x.${tenant}`],
      adminWrites: run.figures[`w.${tenant}`],
    };
    const released = run.samples[`x.${tenant}`].filter((s) => s.released).map((s) => s.id);
    releasedWithoutAudit += released.length - (await auditedReleases(sql, released)).size;
    const acknowledged = run.samples[`w.${tenant}`].filter((s) => s.released).map((s) => s.id);
    const stored = await sql<{ user_id: string }>(
      `SELECT user_id FROM connections WHERE tenant_id = $1 AND user_id = ANY($2) AND revoked_at IS NULL`,
      [tenants[tenant].t.tenantId, acknowledged],
    );
    acknowledgedWrites += acknowledged.length;
    lost += acknowledged.length - stored.length;
  }
  const figures = {
    scenario: name,
    affectedTenant: affected,
    faultMs: run.faultEnd - run.faultStart,
    tenants: perTenant,
    readinessRecoveredMs: run.readinessRecoveredMs,
    readinessUnavailableSamples: run.readinessUnavailableSamples,
    tokensReleasedWithoutAuditEvent: releasedWithoutAudit,
    writesAcknowledged: acknowledgedWrites,
    dataLost: lost,
  };
  console.log(JSON.stringify(figures, null, 2));
  results.push(figures);
  return figures;
}

function expectHeld(f: Awaited<ReturnType<typeof scenario>>) {
  for (const tenant of TENANTS) {
    const { tokenExchanges, adminWrites } = f.tenants[tenant];
    expect({ tenant, unexpected: tokenExchanges.unexpected, hung: tokenExchanges.hung }).toEqual({
      tenant,
      unexpected: 0,
      hung: 0,
    });
    expect({ tenant, unexpected: adminWrites.unexpected, hung: adminWrites.hung }).toEqual({
      tenant,
      unexpected: 0,
      hung: 0,
    });
    // A tenant on another key is not touched at all.
    if (tenant !== f.affectedTenant) {
      expect({
        tenant,
        tokenExchanges: tokenExchanges.failedByStatus,
        adminWrites: adminWrites.failedByStatus,
      }).toEqual({ tenant, tokenExchanges: {}, adminWrites: {} });
    }
    // Everyone is served again after the fault.
    expect({ tenant, recovered: tokenExchanges.timeToRecoverMs !== null }).toEqual({
      tenant,
      recovered: true,
    });
  }
  expect(f.tokensReleasedWithoutAuditEvent).toBe(0);
  expect(f.dataLost).toBe(0);
}

beforeAll(async () => {
  [kms, vault] = await Promise.all([
    startKmsEmulator({ credentials: [{ ...awsCreds }] }),
    startVaultEmulator(),
  ]);
  vaultProxy = await startTcpProxy('127.0.0.1', vault.port);
  app = await startTestApp({
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `127.0.0.1:${kms.port},127.0.0.1:${vaultProxy.port}`,
    CUSTOS_DATA_KEY_CACHE_TTL_SECONDS: String(CACHE_TTL_SECONDS),
    CUSTOS_DB_POOL_SIZE: '10',
    CUSTOS_LOG_LEVEL: 'warn',
  });
  const keyBackend = {
    kms: () => ({
      type: 'aws-kms',
      keyId: kms.createKey({ alias: `alias/faults-${randomSuffix}` }).arn,
      region: 'us-east-1',
      endpoint: kms.url,
      credentials: { ...awsCreds },
    }),
    vault: () => {
      const keyName = `faults-${randomSuffix}`;
      vault.createTransitKey(keyName);
      const roleId = `role-${randomSuffix}`;
      const secretId = randomBytes(24).toString('hex');
      vault.addAppRole(roleId, secretId, ['transit/']);
      return {
        type: 'vault-transit',
        address: `http://127.0.0.1:${vaultProxy.port}`,
        keyName,
        appRole: { roleId, secretId },
      };
    },
  };
  for (const tenant of TENANTS) {
    const t = await createTenant(app, `faults-${tenant}-${randomSuffix}`);
    const call = async (method: string, url: string, body?: unknown) => {
      const res = await app.request(method, url, { key: t.adminKey, body });
      if (res.status >= 300) throw new Error(`${method} ${url}: ${res.status} ${res.raw}`);
      return res.body;
    };
    if (tenant !== 'managed')
      await call('PUT', `/v1/tenants/${t.tenantId}/key-backend`, keyBackend[tenant]());
    for (let i = 0; i < USERS; i++) {
      await call('PUT', `/v1/tenants/${t.tenantId}/users/u${i}/connections/github`, {
        type: 'oauth2',
        accessToken: tokenOf(tenant, i),
      });
    }
    const c = await call('POST', `/v1/tenants/${t.tenantId}/connectors`, {
      name: 'load',
      allowedProviders: ['github'],
      delegation: 'trusted',
      auth: { method: 'client_secret_basic' },
    });
    tenants[tenant] = {
      t,
      basic: 'Basic ' + Buffer.from(`${c.clientId}:${c.clientSecret}`).toString('base64'),
    };
  }
  // Every tenant's keys sit where they were configured: the kms and vault tenants' on their backends.
  const view = async (tenant: TenantName) =>
    (
      await app.request('GET', `/v1/tenants/${tenants[tenant].t.tenantId}/key-backend`, {
        key: tenants[tenant].t.auditorKey,
      })
    ).body;
  for (const tenant of TENANTS) {
    const v = await view(tenant);
    if (v.status !== 'active') throw new Error(`${tenant}: key backend ${v.status}`);
  }
}, 120_000);

afterAll(async () => {
  if (results.length > 0) {
    const config = app.custos.runtime.config;
    const file = writeResults('key-backends', {
      startedAt: new Date(Date.now() - now()).toISOString(),
      backends:
        'test/emulators (KMS, Vault Transit) through @aws-sdk/client-kms and node-vault; managed keyring',
      load: {
        tokenExchangesPerSecond: RATE,
        perTenant: RATE / TENANTS.length,
        adminWritesPerSecondPerTenant: WRITE_RATE,
        usersPerTenant: USERS,
      },
      limits: {
        dataKeyCacheTtlSeconds: config.dataKeyCacheTtlSeconds,
        keyBackendTimeoutMs: config.keyBackendTimeoutMs,
        keyBackendBreakerSeconds: config.keyBackendBreakerSeconds,
      },
      timeline: { warmMs: WARM_MS, faultMs: FAULT_MS, afterFaultMs: AFTER_MS, slowMs: SLOW_MS },
      scenarios: results,
    });
    console.log(`fault figures written to ${file}`);
  }
  await app?.close();
  await vaultProxy?.close();
  await kms?.close();
  await vault?.close();
}, 120_000);

/** Holds a fault for FAULT_MS, then clears it. */
const hold = async (set: () => void, clear: () => void) => {
  set();
  try {
    await sleep(FAULT_MS);
  } finally {
    clear();
  }
};

describe('AWS KMS faults under steady load (one tenant on KMS, one on Vault, one managed)', () => {
  it('slow KMS: its tenant is served, slower; the others are not touched', async () => {
    const f = await scenario('kms', 'slow', () =>
      hold(
        () => (kms.faults.latencyMs = SLOW_MS),
        () => kms.faults.clear(),
      ),
    );
    expectHeld(f);
  }, 600_000);

  it('KMS answering 500: its tenant gets 503s, fast once the breaker is open; the others are not touched', async () => {
    const f = await scenario('kms', 'erroring', () =>
      hold(
        () => {
          kms.faults.errorKind = 'internal';
          kms.faults.errorRate = 1;
        },
        () => kms.faults.clear(),
      ),
    );
    expectHeld(f);
    expect(f.tenants.kms.tokenExchanges.failedByStatus['503']).toBeGreaterThan(0);
  }, 600_000);

  it('hanging KMS: its tenant gets 503s within the deadline; the others are not touched', async () => {
    const f = await scenario('kms', 'hanging', () =>
      hold(
        () => (kms.faults.hang = true),
        () => (kms.faults.hang = false),
      ),
    );
    expectHeld(f);
    expect(f.tenants.kms.tokenExchanges.failedByStatus['503']).toBeGreaterThan(0);
  }, 600_000);

  it('KMS restarted (down, then back with its keys): its tenant recovers; the others are not touched', async () => {
    const f = await scenario('kms', 'restart', async () => {
      const state = kms.snapshot();
      const port = kms.port;
      await kms.close();
      await sleep(FAULT_MS);
      kms = await startKmsEmulator({ port, credentials: [{ ...awsCreds }], state });
    });
    expectHeld(f);
  }, 600_000);

  it('KMS restarted with its state gone, then restored from a snapshot: 503s meanwhile, then recovery', async () => {
    const f = await scenario('kms', 'restart-state-lost', async () => {
      const state = kms.snapshot();
      await restartKms();
      await sleep(FAULT_MS);
      await restartKms(state);
    });
    expectHeld(f);
    expect(f.tenants.kms.tokenExchanges.failedByStatus['503']).toBeGreaterThan(0);
  }, 600_000);
});

describe('Vault Transit faults under steady load (one tenant on KMS, one on Vault, one managed)', () => {
  it('slow Vault: its tenant is served, slower; the others are not touched', async () => {
    const f = await scenario('vault', 'slow', () =>
      hold(
        () => (vault.faults.latencyMs = SLOW_MS),
        () => vault.faults.clear(),
      ),
    );
    expectHeld(f);
  }, 600_000);

  it('Vault answering 500: its tenant gets 503s, fast once the breaker is open; the others are not touched', async () => {
    const f = await scenario('vault', 'erroring', () =>
      hold(
        () => {
          vault.faults.errorKind = 'internal';
          vault.faults.errorRate = 1;
        },
        () => vault.faults.clear(),
      ),
    );
    expectHeld(f);
    expect(f.tenants.vault.tokenExchanges.failedByStatus['503']).toBeGreaterThan(0);
  }, 600_000);

  it('hanging Vault: its tenant gets 503s within the deadline; the others are not touched', async () => {
    const f = await scenario('vault', 'hanging', () =>
      hold(
        () => (vault.faults.hang = true),
        () => (vault.faults.hang = false),
      ),
    );
    expectHeld(f);
    expect(f.tenants.vault.tokenExchanges.failedByStatus['503']).toBeGreaterThan(0);
  }, 600_000);

  it('Vault restarted (connections refused, then sealed, then unsealed): its tenant recovers; the others are not touched', async () => {
    const f = await scenario('vault', 'restart', async () => {
      vaultProxy.cut();
      await sleep(FAULT_MS / 2);
      // Back, but sealed (503 "Vault is sealed") until an operator unseals it.
      vault.faults.errorKind = 'sealed';
      vault.faults.errorRate = 1;
      vaultProxy.restore();
      await sleep(FAULT_MS / 2);
      vault.faults.clear();
    });
    expectHeld(f);
    expect(f.tenants.vault.tokenExchanges.failedByStatus['503']).toBeGreaterThan(0);
  }, 600_000);
});
