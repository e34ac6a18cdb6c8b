/**
 * Bring your own key, end to end: a tenant moves its data keys to an AWS KMS key or a Vault Transit key
 * (protocol-faithful emulators driven by the real @aws-sdk/client-kms and node-vault clients), rotates,
 * flushes, survives a revoked or unreachable key with 503s, and gets everything back when the key returns.
 */
import { randomBytes } from 'node:crypto';
import net, { type AddressInfo } from 'node:net';
import { DisableKeyCommand, EnableKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { ConnectionsService } from '../../../src/connections/connections.service.js';
import { DataKeyService } from '../../../src/crypto/data-key.service.js';
import { KeyBackendService } from '../../../src/crypto/key-backend.service.js';
import { KeyCacheBus } from '../../../src/crypto/key-cache-bus.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import {
  basicAuth,
  createConnector,
  createTenant,
  importUniqueToken,
  uniqueSecret,
  type TenantFixture,
} from '../../support/factories.js';
import { testRedisUrl } from '../../support/env.js';
import { startKmsEmulator, type KmsEmulator } from '../../emulators/kms-emulator.js';
import { startVaultEmulator, type VaultEmulator } from '../../emulators/vault-emulator.js';
import { randomAwsCredentials } from '../../support/aws.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

let app: TestApp;
/** An allow-listed port where nothing listens. */
let deadPort: number;
let kms: KmsEmulator;
let vault: VaultEmulator;
const awsCreds = randomAwsCredentials();

beforeAll(async () => {
  kms = await startKmsEmulator({ credentials: [awsCreds] });
  vault = await startVaultEmulator();
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  deadPort = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  app = await startTestApp({
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `127.0.0.1:${kms.port},127.0.0.1:${vault.port},127.0.0.1:${deadPort}`,
    CUSTOS_KEY_BACKEND_TIMEOUT_MS: '600',
    // A short open period, so that a test can wait it out.
    CUSTOS_KEY_BACKEND_BREAKER_SECONDS: '1',
  });
});
afterAll(async () => {
  await app.close();
  await kms.close();
  await vault.close();
});

const service = () => app.custos.app.get(KeyBackendService);
const dataKeys = () => app.custos.app.get(DataKeyService);
const db = () => app.custos.runtime.dataSource;

interface Backend {
  name: 'aws-kms' | 'vault-transit';
  /** A fresh key at the backend and the configuration that uses it. */
  setup(): Promise<{ config: Record<string, unknown>; disable(): Promise<void>; enable(): Promise<void> }>;
  /** Backend calls that unwrap a data key so far. */
  unwraps(): number;
  /** Secrets that must never appear in responses, rows, events or logs. */
  secrets(config: Record<string, unknown>): string[];
}

// The SDK writes into the credentials object it is given, so every use gets its own copy.
const creds = () => ({ ...awsCreds });
const kmsAdmin = () =>
  new KMSClient({ region: 'us-east-1', endpoint: kms.url, credentials: creds(), maxAttempts: 1 });

const backends: Backend[] = [
  {
    name: 'aws-kms',
    async setup() {
      const key = kms.createKey({ alias: `alias/t-${randomBytes(4).toString('hex')}` });
      return {
        config: {
          type: 'aws-kms',
          keyId: key.arn,
          region: 'us-east-1',
          endpoint: kms.url,
          credentials: awsCreds,
        },
        disable: async () => void (await kmsAdmin().send(new DisableKeyCommand({ KeyId: key.keyId }))),
        enable: async () => void (await kmsAdmin().send(new EnableKeyCommand({ KeyId: key.keyId }))),
      };
    },
    unwraps: () => kms.callsByOp.Decrypt ?? 0,
    secrets: (c) => [(c.credentials as { secretAccessKey: string }).secretAccessKey],
  },
  {
    name: 'vault-transit',
    async setup() {
      const keyName = `custos-${randomBytes(4).toString('hex')}`;
      vault.createTransitKey(keyName);
      const roleId = `role-${randomBytes(6).toString('hex')}`;
      const secretId = randomBytes(24).toString('hex');
      vault.addAppRole(roleId, secretId, ['transit/']);
      return {
        config: { type: 'vault-transit', address: vault.url, keyName, appRole: { roleId, secretId } },
        // The role is removed and its tokens revoked: every call is refused until it is back.
        disable: async () => {
          vault.removeAppRole(roleId);
          vault.revokeAppRoleTokens(roleId);
        },
        enable: async () => vault.addAppRole(roleId, secretId, ['transit/']),
      };
    },
    unwraps: () => vault.callsByOp['transit.decrypt'] ?? 0,
    secrets: (c) => [(c.appRole as { secretId: string }).secretId],
  },
];

/** Reads a credential the way a release does (through the data-key cache, never the opened-secret cache). */
const read = (t: TenantFixture, connectionId: string) =>
  app.custos.app.get(ConnectionsService).openCredential(t.tenantId, connectionId);

async function putBackend(t: TenantFixture, config: Record<string, unknown>) {
  const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/key-backend`, {
    key: t.adminKey,
    body: config,
  });
  return res;
}

describe.each(backends)('$name', (backend) => {
  it('verifies a configuration with a real round trip and refuses a bad one with a clear 400, writing nothing', async () => {
    const t = await createTenant(app);
    const { config } = await backend.setup();
    const cases: [Record<string, unknown>, string][] =
      backend.name === 'aws-kms'
        ? [
            [{ ...config, keyId: 'alias/does-not-exist' }, 'key_backend_not_found'],
            [
              {
                ...config,
                credentials: { ...awsCreds, secretAccessKey: 'wrong' + awsCreds.secretAccessKey },
              },
              'key_backend_denied',
            ],
            [{ ...config, endpoint: 'http://127.0.0.1:1' }, 'outbound_url_refused'],
          ]
        : [
            [{ ...config, keyName: 'no-such-key' }, 'key_backend_not_found'],
            [{ ...config, appRole: { roleId: 'nobody', secretId: 'nothing-here' } }, 'key_backend_denied'],
            [{ ...config, address: `http://127.0.0.1:${deadPort}` }, 'key_backend_unreachable'],
            [{ ...config, address: 'http://169.254.169.254' }, 'outbound_url_refused'],
            [
              {
                type: 'vault-transit',
                address: vault.url,
                keyName: 'k',
                token: 'a',
                appRole: { roleId: 'r', secretId: 's' },
              },
              'validation_failed',
            ],
          ];
    for (const [body, code] of cases) {
      const res = await putBackend(t, body);
      expect({ code: res.body.error, status: res.status }).toEqual({ code, status: 400 });
    }
    const view = await app.request('GET', `/v1/tenants/${t.tenantId}/key-backend`, { key: t.auditorKey });
    expect(view.body.type).toBe('managed');
    expect(
      (
        await db().query('SELECT count(*)::int AS n FROM tenant_key_backends WHERE tenant_id = $1', [
          t.tenantId,
        ])
      )[0].n,
    ).toBe(0);
  });

  it('moves a tenant from managed to its own key and back without losing a credential, and never shows the credentials', async () => {
    const t = await createTenant(app);
    const { config } = await backend.setup();
    const before = [await importUniqueToken(app, t, 'u1'), await importUniqueToken(app, t, 'u2')];
    await service().rotateTenantKey({ type: 'system', id: null }, t.tenantId); // a second epoch to move
    before.push(await importUniqueToken(app, t, 'u3'));

    const res = await putBackend(t, config);
    expect(res.status).toBe(200);
    expect(res.body.type).toBe(backend.name);
    await service().settled(t.tenantId);
    const view = await app.request('GET', `/v1/tenants/${t.tenantId}/key-backend`, { key: t.adminKey });
    // The two epochs moved, and a third, on the new backend, for secrets written from now on.
    expect(view.body).toMatchObject({
      type: backend.name,
      status: 'active',
      dataKeys: { total: 3, onCurrentBackend: 3 },
      migration: null,
    });
    const rows = await db().query('SELECT backend_type, backend_id FROM data_keys WHERE tenant_id = $1', [
      t.tenantId,
    ]);
    expect(rows.every((r: { backend_type: string }) => r.backend_type === backend.name)).toBe(true);

    dataKeys().flushTenant(t.tenantId);
    const unwrapsBefore = backend.unwraps();
    for (const c of before) expect((await read(t, c.id)).secret).toBe(c.secret);
    expect(backend.unwraps() - unwrapsBefore).toBe(2);
    // New secrets are sealed under keys the tenant's backend wrapped.
    const after = await importUniqueToken(app, t, 'u4');
    expect((await read(t, after.id)).secret).toBe(after.secret);

    // Secrets of the configuration are nowhere to be seen.
    const stored = JSON.stringify(
      await db().query('SELECT * FROM tenant_key_backends WHERE tenant_id = $1', [t.tenantId]),
    );
    const events = JSON.stringify(
      await db().query('SELECT * FROM audit_events WHERE tenant_id = $1', [t.tenantId]),
    );
    for (const s of backend.secrets(config)) {
      expect(res.raw + view.raw + stored + events + app.logs.join('')).not.toContain(s);
    }

    // And back to managed: the external configuration is retired and its credentials erased.
    const back = await putBackend(t, { type: 'managed' });
    expect(back.status).toBe(200);
    await service().settled(t.tenantId);
    const retired = await db().query(
      'SELECT retired_at, secret FROM tenant_key_backends WHERE tenant_id = $1',
      [t.tenantId],
    );
    expect(retired[0].retired_at).not.toBeNull();
    expect(retired[0].secret).toBeNull();
    dataKeys().flushTenant(t.tenantId);
    for (const c of [...before, after]) expect((await read(t, c.id)).secret).toBe(c.secret);
    const audit = await db().query(
      `SELECT action FROM audit_events WHERE tenant_id = $1 AND action LIKE 'key_backend.%' ORDER BY id`,
      [t.tenantId],
    );
    expect(audit.map((a: { action: string }) => a.action)).toEqual([
      'key_backend.rotated',
      'key_backend.configured',
      'key_backend.migrated',
      'key_backend.configured',
      'key_backend.migrated',
    ]);
  });

  it('rotates: a new epoch, every data key rewrapped under the newest key version, nothing lost', async () => {
    const t = await createTenant(app);
    const { config } = await backend.setup();
    await putBackend(t, config);
    const c1 = await importUniqueToken(app, t, 'r1');
    const wrappedBefore = await db().query(
      'SELECT id, wrapped, key_ref FROM data_keys WHERE tenant_id = $1',
      [t.tenantId],
    );
    const res = await app.request('POST', `/v1/tenants/${t.tenantId}/key-backend/rotate`, {
      key: t.adminKey,
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ epoch: 2, rewrapped: 1 });
    if (backend.name === 'vault-transit') expect(res.body.keyVersion).toBe(2);
    const wrappedAfter = await db().query('SELECT id, wrapped, key_ref FROM data_keys WHERE id = $1', [
      wrappedBefore[0].id,
    ]);
    expect(Buffer.compare(wrappedAfter[0].wrapped, wrappedBefore[0].wrapped)).not.toBe(0);
    if (backend.name === 'vault-transit') expect(wrappedAfter[0].wrapped.toString()).toMatch(/^vault:v2:/);
    const c2 = await importUniqueToken(app, t, 'r2');
    const epochs = await db().query(
      `SELECT d.epoch FROM connections c JOIN data_keys d ON d.id = c.data_key_id WHERE c.id = $1`,
      [c2.id],
    );
    expect(epochs[0].epoch).toBe(2);
    dataKeys().flushTenant(t.tenantId);
    expect((await read(t, c1.id)).secret).toBe(c1.secret);
    expect((await read(t, c2.id)).secret).toBe(c2.secret);
  });

  it('serves reads from the cache without backend calls, and a flush makes the next read ask the backend', async () => {
    const t = await createTenant(app);
    const { config } = await backend.setup();
    await putBackend(t, config);
    const creds = [];
    for (let i = 0; i < 100; i++) creds.push(await importUniqueToken(app, t, `c${i}`));
    dataKeys().flushTenant(t.tenantId);
    const before = backend.unwraps();
    for (let round = 0; round < 20; round++) {
      for (const c of creds) expect((await read(t, c.id)).secret).toBe(c.secret);
    }
    // 2,000 reads across 100 credentials under one data key: one unwrap.
    expect(backend.unwraps() - before).toBe(1);
    const flush = await app.request('POST', `/v1/tenants/${t.tenantId}/key-backend/flush`, {
      key: t.adminKey,
    });
    expect(flush.status).toBe(200);
    expect(dataKeys().cacheSize()).toBeGreaterThanOrEqual(0);
    await read(t, creds[0].id);
    expect(backend.unwraps() - before).toBe(2);
    // The same count, as a metric.
    const metrics = await app.request('GET', '/metrics');
    expect(metrics.status).toBe(200);
    const m = new RegExp(`custos_data_key_unwraps_total\\{backend="${backend.name}"\\} (\\d+)`).exec(
      metrics.raw,
    );
    expect(Number(m?.[1])).toBeGreaterThanOrEqual(2);
    expect(metrics.raw).not.toContain(t.tenantId);
  });

  it('crypto-shreds: a revoked key makes reads fail with 503 key_unavailable after a flush, other tenants unaffected, and re-enabling restores everything', async () => {
    const t = await createTenant(app);
    const other = await createTenant(app);
    const { config, disable, enable } = await backend.setup();
    await putBackend(t, config);
    const c = await importUniqueToken(app, t, 'alice');
    const o = await importUniqueToken(app, other, 'alice');
    const connector = await createConnector(app, t, { name: 'backend' });
    const exchange = () =>
      app.request('POST', '/oauth/token', {
        payload: new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: 'alice',
          subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
          audience: 'github',
        }).toString(),
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          authorization: basicAuth(connector),
        },
      });
    expect((await exchange()).body.access_token).toBe(c.secret);
    await disable();
    await app.request('POST', `/v1/tenants/${t.tenantId}/key-backend/flush`, { key: t.adminKey });
    await expect(read(t, c.id)).rejects.toMatchObject({ code: 'key_unavailable' });
    // The token endpoint says so too, with no token (its opened-secret cache went with the flush).
    const refused = await exchange();
    expect(refused.status).toBe(503);
    expect(refused.body).toMatchObject({ error: 'key_unavailable' });
    expect(refused.raw).not.toContain(c.secret);
    // Writing a new secret needs the key too: 503, and nothing half-written.
    const write = await app.request('PUT', `/v1/tenants/${t.tenantId}/users/bob/connections/github`, {
      key: t.adminKey,
      body: { type: 'oauth2', accessToken: uniqueSecret('x') },
    });
    expect(write.status).toBe(503);
    expect(write.body.error).toBe('key_unavailable');
    expect(
      (
        await db().query(
          `SELECT count(*)::int AS n FROM connections WHERE tenant_id = $1 AND user_id = 'bob'`,
          [t.tenantId],
        )
      )[0].n,
    ).toBe(0);
    expect((await read(other, o.id)).secret).toBe(o.secret);
    await enable();
    expect((await read(t, c.id)).secret).toBe(c.secret);
    expect((await exchange()).body.access_token).toBe(c.secret);
  });

  it('answers a tampered wrapped key with key_invalid, not a wrong key', async () => {
    const t = await createTenant(app);
    const { config } = await backend.setup();
    await putBackend(t, config);
    const c = await importUniqueToken(app, t, 'tamper');
    const [row] = await db().query('SELECT id, wrapped FROM data_keys WHERE tenant_id = $1', [t.tenantId]);
    const tampered = Buffer.from(row.wrapped);
    tampered[tampered.length - 3] ^= 0x01;
    await db().query('UPDATE data_keys SET wrapped = $2 WHERE id = $1', [row.id, tampered]);
    dataKeys().flushTenant(t.tenantId);
    const unwrapsBefore = backend.unwraps();
    await expect(read(t, c.id)).rejects.toMatchObject({
      code: expect.stringMatching(/^key_(invalid|unavailable)$/),
    });
    // (A Vault ciphertext mangled into an impossible form is refused without asking Vault at all.)
    const asked = backend.unwraps() - unwrapsBefore;
    // The backend answered: a bad ciphertext never makes the next read fail without asking it.
    await expect(read(t, c.id)).rejects.toMatchObject({
      code: expect.stringMatching(/^key_(invalid|unavailable)$/),
    });
    expect(backend.unwraps() - unwrapsBefore).toBe(2 * asked);
    await db().query('UPDATE data_keys SET wrapped = $2 WHERE id = $1', [row.id, row.wrapped]);
    expect((await read(t, c.id)).secret).toBe(c.secret);
  });

  it('bounds an outage by the timeout, then fails at once for a moment instead of waiting again, never stalling another tenant', async () => {
    const t = await createTenant(app);
    const other = await createTenant(app);
    const peer = await createTenant(app);
    const { config } = await backend.setup();
    await putBackend(t, config);
    // Another tenant with its own key at the same (soon hanging) backend.
    await putBackend(peer, (await backend.setup()).config);
    const c = await importUniqueToken(app, t, 'slow');
    const o = await importUniqueToken(app, other, 'fast');
    const p = await importUniqueToken(app, peer, 'peer');
    for (const x of [t, other, peer]) dataKeys().flushTenant(x.tenantId);
    const faults = backend.name === 'aws-kms' ? kms.faults : vault.faults;
    const calls = () => (backend.name === 'aws-kms' ? kms.requests : vault.requests);
    faults.hang = true;
    try {
      let settled = false;
      const stuck = read(t, c.id).finally(() => (settled = true));
      // The other tenant's read completes while this tenant's backend call is still hanging.
      expect((await read(other, o.id)).secret).toBe(o.secret);
      expect(settled).toBe(false);
      await expect(stuck).rejects.toMatchObject({ code: 'key_unavailable' });
    } finally {
      faults.hang = false;
    }
    // The backend answers again, but this configuration was found unreachable a moment ago: its reads and
    // writes fail at once (503 with Retry-After), without a call to the backend...
    const before = calls();
    await expect(read(t, c.id)).rejects.toMatchObject({
      code: 'key_unavailable',
      details: { reason: 'unreachable', circuit: 'open' },
    });
    const write = await app.request('PUT', `/v1/tenants/${t.tenantId}/users/w/connections/github`, {
      key: t.adminKey,
      body: { type: 'oauth2', accessToken: uniqueSecret('w') },
    });
    expect({ status: write.status, error: write.body.error }).toEqual({
      status: 503,
      error: 'key_unavailable',
    });
    expect(write.headers['retry-after']).toBeDefined();
    expect(calls()).toBe(before);
    // ...while the other configuration at the same backend is served.
    expect((await read(peer, p.id)).secret).toBe(p.secret);
    // Once the short open period is over, one read probes the backend and everything works again.
    let secret: string | undefined;
    for (let i = 0; i < 100 && secret === undefined; i++) {
      secret = await read(t, c.id).then(
        (r) => r.secret,
        async () => {
          await new Promise((r) => setTimeout(r, 50));
          return undefined;
        },
      );
    }
    expect(secret).toBe(c.secret);
  });

  it('resumes a migration interrupted by a crash, idempotently', async () => {
    const t = await createTenant(app);
    const { config } = await backend.setup();
    const creds = [await importUniqueToken(app, t, 'm1')];
    for (let i = 0; i < 2; i++) {
      await service().rotateTenantKey({ type: 'system', id: null }, t.tenantId);
      creds.push(await importUniqueToken(app, t, `m${i + 2}`));
    }
    // The process "dies" between the new wrap of the second key and its write.
    let wraps = 0;
    const svc = service() as unknown as { migrate: KeyBackendService['migrate'] };
    const original = svc.migrate.bind(service());
    svc.migrate = (tenantId, opts = {}) =>
      original(tenantId, {
        ...opts,
        beforeWrite: () => {
          if (++wraps === 2) throw new Error('crash');
        },
      });
    try {
      await putBackend(t, config);
      await service().settled(t.tenantId);
    } finally {
      svc.migrate = original;
    }
    const mid = await app.request('GET', `/v1/tenants/${t.tenantId}/key-backend`, { key: t.adminKey });
    // Three epochs to move (one moved before the crash), and the new backend's own for new secrets.
    expect(mid.body).toMatchObject({ status: 'migrating', dataKeys: { total: 4, onCurrentBackend: 2 } });
    // Meanwhile every credential is still readable (each key through the backend that wrapped it).
    dataKeys().flushTenant(t.tenantId);
    for (const c of creds) expect((await read(t, c.id)).secret).toBe(c.secret);
    // What the background job does after a restart:
    expect(await service().tenantsMigrating()).toContain(t.tenantId);
    expect(await service().migrate(t.tenantId)).toEqual({ migrated: 2, remaining: 0 });
    expect(await service().migrate(t.tenantId)).toEqual({ migrated: 0, remaining: 0 });
    const done = await app.request('GET', `/v1/tenants/${t.tenantId}/key-backend`, { key: t.adminKey });
    expect(done.body).toMatchObject({ status: 'active', dataKeys: { total: 4, onCurrentBackend: 4 } });
    dataKeys().flushTenant(t.tenantId);
    for (const c of creds) expect((await read(t, c.id)).secret).toBe(c.secret);
  });
});

describe('across replicas', () => {
  it('a flush reaches every process through Redis', async () => {
    const env = {
      REDIS_URL: testRedisUrl,
      CUSTOS_ROOT_KEYS: app.custos.runtime.config.rootKeys,
      // A replica configured with another bootstrap key would replace this one.
      CUSTOS_BOOTSTRAP_ADMIN_KEY: app.bootstrapKey,
    };
    const one = await startTestApp(env);
    const two = await startTestApp(env);
    try {
      // Same database: a tenant created anywhere is served by both replicas.
      const t = await createTenant(app);
      const res = await one.request('PUT', `/v1/tenants/${t.tenantId}/users/u/connections/github`, {
        key: t.adminKey,
        body: { type: 'oauth2', accessToken: uniqueSecret('r') },
      });
      const [key] = await one.custos.runtime.dataSource.query(
        'SELECT id FROM data_keys WHERE tenant_id = $1',
        [t.tenantId],
      );
      await two.custos.app.get(ConnectionsService).openCredential(t.tenantId, res.body.id);
      expect(two.custos.app.get(DataKeyService).isCached(t.tenantId, key.id)).toBe(true);
      const flush = await one.request('POST', `/v1/tenants/${t.tenantId}/key-backend/flush`, {
        key: t.adminKey,
      });
      expect(flush.body).toEqual({ flushed: true, replicasNotified: true });
      const bus = two.custos.app.get(KeyCacheBus);
      for (let i = 0; i < 100 && bus.received === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(two.custos.app.get(DataKeyService).isCached(t.tenantId, key.id)).toBe(false);
    } finally {
      await one.close();
      await two.close();
    }
  });
});
