/**
 * Deleting a tenant, through the real app: the confirmation and who may ask; every credential of the tenant
 * refused at once, the token endpoint answering exactly as for an unknown client; the tokens queued for and
 * revoked at the provider; then crypto-shredding by the worker's step (run directly here): the audit signing keys
 * pass to the platform's protection, the data keys and every row of the tenant go, cached keys are dropped (in
 * this process, and in another one through Redis), and a ciphertext kept from before can no longer be opened;
 * the trail stays sealable and verifiable; asking twice is safe, and a restart between the steps resumes.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AuditExport } from '../../../src/audit/audit-export.js';
import { verifyExport } from '../../../src/audit/audit-format.js';
import { CustosException } from '../../../src/common/errors.js';
import { ConnectionsService } from '../../../src/connections/connections.service.js';
import { ProviderRevocationService } from '../../../src/connections/provider-revocation.service.js';
import { DataKeyService } from '../../../src/crypto/data-key.service.js';
import { KeyCacheBus } from '../../../src/crypto/key-cache-bus.js';
import type { JobHandler, JobRunner } from '../../../src/jobs/job-runner.js';
import {
  TENANT_SHRED_GRACE_MS,
  TenantDeletionService,
} from '../../../src/tenants/tenant-deletion.service.js';
import { TenantsService } from '../../../src/tenants/tenants.service.js';
import { WorkerJobs } from '../../../src/worker-jobs.js';
import { sealFor } from '../../support/audit.js';
import { localPath } from '../../support/browser.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { testRedisUrl } from '../../support/env.js';
import {
  basicAuth,
  createConnector,
  createTenant,
  importConnection,
  importUniqueToken,
  saveCustomProvider,
  saveProviderApp,
  uniqueSecret,
  type SecretConnector,
  type TenantFixture,
} from '../../support/factories.js';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const USER_ID_TYPE = 'urn:custos:params:oauth:token-type:user-id';

let app: TestApp;
/** A loopback provider: its RFC 7009 endpoint records every revocation and accepts it. */
let provider: http.Server;
let allowed: string;
const revoked: { token: string; hint: string | null }[] = [];

beforeAll(async () => {
  provider = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const form = new URLSearchParams(body);
      if (req.url === '/revoke')
        revoked.push({ token: form.get('token')!, hint: form.get('token_type_hint') });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => provider.listen(0, '127.0.0.1', resolve));
  allowed = `127.0.0.1:${(provider.address() as AddressInfo).port}`;
  // The api role: no background jobs or sealer to race the explicit runs below (the tests run them).
  app = await startTestApp({ CUSTOS_OUTBOUND_ALLOW_HOSTS: allowed, CUSTOS_ROLE: 'api' });
});
afterAll(async () => {
  await app.close();
  await new Promise((resolve) => provider.close(resolve));
});

/** The settings another process of the same deployment starts with (same root keys, same first admin key). */
const sameDeployment = (extra: Record<string, string> = {}) => ({
  CUSTOS_OUTBOUND_ALLOW_HOSTS: allowed,
  CUSTOS_ROLE: 'api',
  CUSTOS_ROOT_KEYS: app.custos.runtime.config.rootKeys,
  CUSTOS_BOOTSTRAP_ADMIN_KEY: app.bootstrapKey,
  ...extra,
});

const db = (a: TestApp = app) => a.custos.runtime.dataSource;
const deletions = (a: TestApp = app) => a.custos.app.get(TenantDeletionService);
const dataKeys = (a: TestApp = app) => a.custos.app.get(DataKeyService);

interface Fixture {
  t: TenantFixture;
  name: string;
  connector: SecretConnector;
  /** The user's connection to the provider that revokes (`corp`), and its two tokens. */
  corp: { id: string; accessToken: string; refreshToken: string; provider: string };
  /** Her GitHub connection (GitHub has no RFC 7009 endpoint: nothing to queue). */
  github: { id: string; secret: string };
}

let counter = 0;
/** A tenant with a connector, a custom OAuth provider that revokes at the loopback provider, and connections. */
async function tenantWithCredentials(a: TestApp = app): Promise<Fixture> {
  const name = `Deletable ${++counter} ${Math.random().toString(36).slice(2, 8)}`;
  const t = await createTenant(a, name);
  const key = `corp-${counter}`;
  await saveCustomProvider(a, t, {
    key,
    name: 'Corp',
    authMode: 'oauth2',
    oauth2: {
      authorizationUrl: `http://${allowed}/authorize`,
      tokenUrl: `http://${allowed}/token`,
      revocationUrl: `http://${allowed}/revoke`,
      scopes: ['read'],
    },
  });
  await saveProviderApp(a, t, key, { client_id: 'corp-client', client_secret: uniqueSecret('corp-app') });
  const accessToken = uniqueSecret('corp-access');
  const refreshToken = uniqueSecret('corp-refresh');
  const { id } = await importConnection(a, t, 'alice', key, {
    type: 'oauth2',
    accessToken,
    refreshToken,
    scopes: ['read'],
  });
  const github = await importUniqueToken(a, t, 'alice');
  const connector = await createConnector(a, t, { allowedProviders: ['github', key] });
  return { t, name, connector, corp: { id, accessToken, refreshToken, provider: key }, github };
}

function form(params: Record<string, string>): string {
  return new URLSearchParams(params).toString();
}

/** The connector asks for alice's GitHub token (trusted delegation: the user id is the subject). */
const exchange = (a: TestApp, client: { clientId: string; clientSecret: string }) =>
  a.request('POST', '/oauth/token', {
    payload: form({
      grant_type: EXCHANGE,
      subject_token: 'alice',
      subject_token_type: USER_ID_TYPE,
      audience: 'github',
    }),
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(client) },
  });

const deleteTenant = (t: TenantFixture, confirm: string | undefined, key = app.bootstrapKey, a = app) =>
  a.request(
    'DELETE',
    `/v1/tenants/${t.tenantId}${confirm === undefined ? '' : `?confirm=${encodeURIComponent(confirm)}`}`,
    { key },
  );

const count = async (table: string, tenantId: string, a: TestApp = app): Promise<number> =>
  (await db(a).query(`SELECT count(*)::int AS n FROM ${table} WHERE tenant_id = $1`, [tenantId]))[0].n;

const events = (tenantId: string | null, action: string, a: TestApp = app) =>
  db(a).query(
    `SELECT * FROM audit_events WHERE tenant_id IS NOT DISTINCT FROM $1::uuid AND action = $2 ORDER BY id`,
    [tenantId, action],
  );

/** The platform chain's events about this deleted tenant. */
const platformEvents = (tenantId: string, action: string, a: TestApp = app) =>
  db(a).query(
    `SELECT * FROM audit_events WHERE tenant_id IS NULL AND action = $1 AND details->>'tenantId' = $2 ORDER BY id`,
    [action, tenantId],
  );

describe('asking to delete a tenant', () => {
  it("needs the tenant's current name in confirm: missing or wrong is 400 validation_failed, and nothing changes", async () => {
    const f = await tenantWithCredentials();
    const missing = await deleteTenant(f.t, undefined);
    expect(missing.status).toBe(400);
    expect(missing.body.error).toBe('validation_failed');
    expect(missing.body.details.issues[0].path).toBe('confirm');
    for (const wrong of [f.name.toUpperCase(), `${f.name} `, 'Acme', f.t.tenantId]) {
      const res = await deleteTenant(f.t, wrong);
      expect(res.status).toBe(400);
      expect(res.body.error).toBe('validation_failed');
      expect(res.body.details.issues).toEqual([{ path: 'confirm', message: expect.any(String) }]);
    }
    const read = await app.request('GET', `/v1/tenants/${f.t.tenantId}`, { key: app.bootstrapKey });
    expect(read.body).toMatchObject({ status: 'active', deletionRequestedAt: null });
    expect((await exchange(app, f.connector)).status).toBe(200);
    expect(await events(f.t.tenantId, 'tenant.deletion_requested')).toHaveLength(0);
  });

  it('is for platform admins only (403 for the tenant’s own keys), and 404 for an unknown tenant', async () => {
    const f = await tenantWithCredentials();
    for (const key of [f.t.adminKey, f.t.auditorKey]) {
      const res = await deleteTenant(f.t, f.name, key);
      expect(res.status).toBe(403);
      expect(res.body.error).toBe('forbidden');
    }
    const unknown = await app.request(
      'DELETE',
      `/v1/tenants/${'0'.repeat(8)}-0000-4000-8000-${'0'.repeat(12)}?confirm=x`,
      { key: app.bootstrapKey },
    );
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toBe('not_found');
    expect((await exchange(app, f.connector)).status).toBe(200);
  });
});

describe('deleting a tenant', () => {
  it('refuses its credentials at once, queues its tokens, then shreds it: nothing of it can be opened again', async () => {
    const f = await tenantWithCredentials();
    const tenantId = f.t.tenantId;
    // Its chain has a signing key (sealed under its data keys) and an export an auditor took earlier.
    await sealFor(app, [tenantId]);
    const before = await app.request('GET', `/v1/tenants/${tenantId}/audit/export`, { key: f.t.auditorKey });
    expect(before.status).toBe(200);
    const exportedBefore = before.raw.split('\n').filter((l) => l !== '');
    const [signingKey] = await db().query('SELECT kid, tenant_id FROM audit_signing_keys WHERE chain = $1', [
      `tenant:${tenantId}`,
    ]);
    expect(signingKey.tenant_id).toBe(tenantId);
    // A copy of a connection's ciphertext and its data key id, as a backup or the WAL would keep them; the
    // key is warm in the cache, and the connector's registration in the token endpoint's.
    const [copy] = await db().query('SELECT secret, data_key_id FROM connections WHERE id = $1', [f.corp.id]);
    const binding = { scope: 'connection', recordId: f.corp.id, field: 'access_token' };
    expect(await dataKeys().open(tenantId, binding, copy.secret)).toBe(f.corp.accessToken);
    expect(dataKeys().isCached(tenantId, copy.data_key_id)).toBe(true);
    expect((await exchange(app, f.connector)).body.access_token).toBe(f.github.secret);
    // And a connect link is out, for a user who has not connected yet.
    const link = await app.request('POST', `/v1/tenants/${tenantId}/connect/sessions`, {
      key: f.t.adminKey,
      body: { userId: 'carol', provider: f.corp.provider },
    });
    expect(link.status).toBe(201);

    // Step 1.
    const res = await deleteTenant(f.t, f.name);
    expect(res.status).toBe(202);
    expect(res.body).toEqual({
      id: tenantId,
      name: f.name,
      status: 'deleting',
      deletionRequestedAt: expect.any(String),
      pendingRevocations: 2,
      shredBy: new Date(Date.parse(res.body.deletionRequestedAt) + TENANT_SHRED_GRACE_MS).toISOString(),
    });

    // Its admin key is refused like an unknown key.
    const unknownKey = await app.request('GET', `/v1/tenants/${tenantId}`, { key: `cus_${'A'.repeat(43)}` });
    const adminKey = await app.request('GET', `/v1/tenants/${tenantId}`, { key: f.t.adminKey });
    expect(adminKey.status).toBe(401);
    expect(adminKey.body.error).toBe(unknownKey.body.error);
    expect(adminKey.body.message).toBe(unknownKey.body.message);
    // Its connector is refused at the token endpoint exactly as an unknown client is, although its
    // registration was cached a moment ago (that first refusal, made while the registration was cached, is
    // recorded in the tenant's own trail, as for a connector deleted meanwhile)…
    const cached = await exchange(app, f.connector);
    const [{ mark }] = await db().query('SELECT max(id)::text AS mark FROM audit_events');
    const refused = await exchange(app, f.connector);
    const unknown = await exchange(app, {
      clientId: 'cus_ci_AAAAAAAAAAAAAAAAAAAAAA',
      clientSecret: 'x'.repeat(40),
    });
    for (const res of [cached, refused]) {
      expect(res.status).toBe(401);
      expect(res.body).toEqual(unknown.body);
      expect(res.headers['www-authenticate']).toBe(unknown.headers['www-authenticate']);
      expect(res.raw).not.toContain(f.github.secret);
    }
    const [first] = await db().query(
      `SELECT details FROM audit_events WHERE tenant_id = $1 AND action = 'token.exchange' ORDER BY id DESC LIMIT 1`,
      [tenantId],
    );
    expect(first.details).toMatchObject({ reason: 'unknown_client', error: 'invalid_client' });
    // …and from then on recorded as one is: in the platform chain, with nothing that names the tenant or the
    // connector.
    const denials = await db().query(
      `SELECT tenant_id, actor_type, actor_id, details FROM audit_events
        WHERE id > $1::bigint AND action = 'token.exchange' ORDER BY id`,
      [mark],
    );
    expect(denials).toHaveLength(2);
    expect(denials[0]).toEqual(denials[1]);
    expect(denials[0]).toMatchObject({ tenant_id: null, details: { reason: 'unknown_client' } });
    expect(JSON.stringify(denials[0])).not.toContain(f.connector.clientId);
    // And on the admin API, where a connector's registration is read fresh.
    const viaConnector = await app.request('POST', `/v1/tenants/${tenantId}/connect/sessions`, {
      headers: { authorization: basicAuth(f.connector) },
      body: { userId: 'alice', provider: 'github' },
    });
    expect(viaConnector.status).toBe(401);
    // Nothing new is sealed under its keys, and its connect links are gone: the page is not found, without
    // the tenant's name, and starting the flow goes nowhere.
    await expect(dataKeys().sealingKey(tenantId)).rejects.toMatchObject({ code: 'not_found' });
    const page = await app.request('GET', localPath(link.body.url));
    expect(page.status).toBe(404);
    expect(page.raw).not.toContain(f.name);
    const start = await app.request('POST', localPath(link.body.url) + '/start', {
      payload: 'csrf=x',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(start.status).not.toBe(302);
    expect(start.headers.location).toBeUndefined();

    // Every connection is revoked, its tokens queued (refresh token first) where the provider can revoke them.
    const connections = await db().query(
      'SELECT id, status, secret, refresh_token FROM connections WHERE tenant_id = $1',
      [tenantId],
    );
    expect(connections).toHaveLength(2);
    for (const c of connections)
      expect(c).toMatchObject({ status: 'revoked', secret: null, refresh_token: null });
    const queued = await db().query(
      'SELECT connection_id, token_type FROM pending_revocations WHERE tenant_id = $1 ORDER BY position',
      [tenantId],
    );
    expect(queued).toEqual([
      { connection_id: f.corp.id, token_type: 'refresh_token' },
      { connection_id: f.corp.id, token_type: 'access_token' },
    ]);
    const [requested] = await events(tenantId, 'tenant.deletion_requested');
    expect(requested).toMatchObject({ actor_type: 'admin_key', outcome: 'allowed' });
    expect(requested.details).toEqual({
      name: f.name,
      connectionsRevoked: 2,
      revocationsQueued: 2,
      connectorsRefused: 1,
    });

    // Platform admins see it deleting, in the tenant and in the list.
    const read = await app.request('GET', `/v1/tenants/${tenantId}`, { key: app.bootstrapKey });
    expect(read.body).toMatchObject({
      status: 'deleting',
      deletionRequestedAt: res.body.deletionRequestedAt,
    });
    const list = await app.request('GET', '/v1/tenants', { key: app.bootstrapKey });
    expect(list.body.items.find((t: { id: string }) => t.id === tenantId)).toMatchObject({
      status: 'deleting',
    });
    // Platform admins cannot hand it new keys either.
    const newKey = await app.request('POST', `/v1/tenants/${tenantId}/admin-keys`, {
      key: app.bootstrapKey,
      body: { name: 'late', role: 'admin' },
    });
    expect(newKey.status).toBe(404);

    // Asking again is safe: the same status, one event.
    const again = await deleteTenant(f.t, f.name);
    expect(again.status).toBe(202);
    expect(again.body).toEqual(res.body);
    expect(await events(tenantId, 'tenant.deletion_requested')).toHaveLength(1);

    // Step 2 waits while tokens wait to be revoked at the provider.
    expect(await deletions().shred(tenantId)).toEqual({
      state: 'waiting',
      reason: 'revocations_pending',
      outstanding: 2,
    });
    const sent = revoked.length;
    await app.custos.app.get(ProviderRevocationService).processDue(f.corp.id);
    expect(revoked.slice(sent)).toEqual([
      { token: f.corp.refreshToken, hint: 'refresh_token' },
      { token: f.corp.accessToken, hint: 'access_token' },
    ]);
    expect((await app.custos.app.get(TenantsService).deletionStatus(tenantId)).pendingRevocations).toBe(0);

    // Step 2: shredding.
    const shredded = await deletions().shred(tenantId);
    expect(shredded).toEqual({
      state: 'shredded',
      counts: {
        dataKeysDestroyed: expect.any(Number),
        signingKeysReprotected: 1,
        signingKeysUnopenable: 0,
        connectionsDestroyed: 2,
        revocationsAbandoned: 0,
      },
    });
    expect(shredded.state === 'shredded' && shredded.counts.dataKeysDestroyed).toBeGreaterThanOrEqual(1);
    for (const table of [
      'data_keys',
      'connections',
      'connectors',
      'admin_keys',
      'tenant_providers',
      'provider_apps',
      'tenant_key_backends',
      'pending_revocations',
      'connect_sessions',
      'identity_providers',
    ]) {
      expect([table, await count(table, tenantId)]).toEqual([table, 0]);
    }
    expect(await db().query('SELECT id FROM tenants WHERE id = $1', [tenantId])).toEqual([]);
    const [deleted] = await platformEvents(tenantId, 'tenant.deleted');
    expect(deleted).toMatchObject({ actor_type: 'system', outcome: 'allowed' });
    expect(deleted.details).toEqual({
      tenantId,
      deletionRequestedAt: res.body.deletionRequestedAt,
      ...(shredded.state === 'shredded' ? shredded.counts : {}),
    });
    // The kept ciphertext opens no more: the cache dropped its key, and the wrapped key is gone.
    expect(dataKeys().isCached(tenantId, copy.data_key_id)).toBe(false);
    const opened = await dataKeys()
      .open(tenantId, binding, copy.secret)
      .then(
        () => null,
        (err: unknown) => err,
      );
    expect(opened).toBeInstanceOf(CustosException);
    expect(opened).toMatchObject({ code: 'decryption_failed', message: 'Unknown data key' });

    // The tenant is unknown now; asking again is 404.
    expect((await app.request('GET', `/v1/tenants/${tenantId}`, { key: app.bootstrapKey })).status).toBe(404);
    expect((await deleteTenant(f.t, f.name)).status).toBe(404);
    expect(await deletions().shred(tenantId)).toEqual({ state: 'not_deleting' });

    // Its chain's signing key is the platform's to protect now, and the chain is still sealed: its last events
    // (the revocations at the provider, the key's move) get checkpoints.
    const [moved] = await db().query('SELECT kid, tenant_id FROM audit_signing_keys WHERE kid = $1', [
      signingKey.kid,
    ]);
    expect(moved).toEqual({ kid: signingKey.kid, tenant_id: null });
    expect(await events(tenantId, 'audit.signing_key.reprotected')).toHaveLength(1);
    await sealFor(app, [tenantId, null]);
    // The JWKS is still served; the export taken before, and the whole trail now, verify against it.
    const jwks = await app.request('GET', `/v1/tenants/${tenantId}/audit/keys`);
    expect(jwks.status).toBe(200);
    expect(jwks.body.keys.map((k: { kid: string }) => k.kid)).toEqual([signingKey.kid]);
    expect(await verifyExport(exportedBefore, jwks.body)).toMatchObject({ ok: true });
    const lines: string[] = [];
    for await (const l of await app.custos.app.get(AuditExport).open(tenantId, { from: null, to: null }))
      lines.push(...l.split('\n').filter((x) => x !== ''));
    const now = await verifyExport(lines, jwks.body);
    expect(now).toMatchObject({ ok: true });
    expect(lines.join('\n')).toContain('tenant.deletion_requested');
  });

  it('shreds after the grace period even when tokens still wait for their provider, and counts them', async () => {
    const f = await tenantWithCredentials();
    expect((await deleteTenant(f.t, f.name)).status).toBe(202);
    const almost = new Date(Date.now() + TENANT_SHRED_GRACE_MS - 60_000);
    expect(await deletions().shred(f.t.tenantId, almost)).toMatchObject({ state: 'waiting' });
    const later = new Date(Date.now() + TENANT_SHRED_GRACE_MS + 60_000);
    expect(await deletions().shred(f.t.tenantId, later)).toMatchObject({
      state: 'shredded',
      counts: { revocationsAbandoned: 2, connectionsDestroyed: 2 },
    });
    expect(await count('pending_revocations', f.t.tenantId)).toBe(0);
    expect(await count('data_keys', f.t.tenantId)).toBe(0);
  });

  it('makes its chain’s next signing keys under the platform’s protection, even before it is shredded', async () => {
    const f = await tenantWithCredentials();
    const chainKeys = () =>
      db().query('SELECT tenant_id FROM audit_signing_keys WHERE chain = $1', [`tenant:${f.t.tenantId}`]);
    // Not sealed yet: the chain has no key when the deletion is asked for.
    expect(await chainKeys()).toEqual([]);
    expect((await deleteTenant(f.t, f.name)).status).toBe(202);
    await sealFor(app, [f.t.tenantId]);
    expect(await chainKeys()).toEqual([{ tenant_id: null }]);
  });
});

describe('a restart between the two steps', () => {
  it('resumes: the worker’s job shreds the tenant the stopped process marked', async () => {
    const first = await startTestApp(sameDeployment());
    let f!: Fixture;
    try {
      // Made through the first process's database (the same one), deleted by it.
      f = await tenantWithCredentials();
      expect((await deleteTenant(f.t, f.name, app.bootstrapKey, first)).status).toBe(202);
    } finally {
      await first.close();
    }
    // A worker this time: the job is registered by its role.
    const second = await startTestApp(sameDeployment({ CUSTOS_ROLE: 'all' }));
    try {
      // Still refused after the restart.
      expect((await exchange(second, f.connector)).status).toBe(401);
      expect((await second.request('GET', `/v1/tenants/${f.t.tenantId}`, { key: f.t.adminKey })).status).toBe(
        401,
      );
      // The revocations the first process queued are done by the second.
      await second.custos.app.get(ProviderRevocationService).processDue(f.corp.id);
      // The worker's periodic job, as the job runner would run it.
      const handlers = new Map<string, JobHandler>();
      const runner: JobRunner = {
        kind: 'in-process',
        register: (name, _every, handler) => void handlers.set(name, handler),
        start: async () => undefined,
        stop: async () => undefined,
        check: async () => undefined,
      };
      second.custos.app.get(WorkerJobs).register(runner, null);
      await handlers.get('tenants.shred-deleted')!();
      expect(
        await second.custos.runtime.dataSource.query('SELECT id FROM tenants WHERE id = $1', [f.t.tenantId]),
      ).toEqual([]);
      expect(await count('data_keys', f.t.tenantId, second)).toBe(0);
      expect(await platformEvents(f.t.tenantId, 'tenant.deleted', second)).toHaveLength(1);
    } finally {
      await second.close();
    }
  });
});

describe('across replicas', () => {
  it('every process drops the shredded tenant’s cached data keys, through Redis', async () => {
    const one = await startTestApp(sameDeployment({ REDIS_URL: testRedisUrl }));
    const two = await startTestApp(sameDeployment({ REDIS_URL: testRedisUrl }));
    try {
      const name = `replicated ${Math.random().toString(36).slice(2, 8)}`;
      const t = await createTenant(app, name);
      const { id } = await importUniqueToken(one, t, 'bob');
      const [key] = await db(one).query('SELECT id FROM data_keys WHERE tenant_id = $1', [t.tenantId]);
      await two.custos.app.get(ConnectionsService).openCredential(t.tenantId, id);
      expect(dataKeys(two).isCached(t.tenantId, key.id)).toBe(true);
      expect((await deleteTenant(t, name, app.bootstrapKey, one)).status).toBe(202);
      expect(await deletions(one).shred(t.tenantId)).toMatchObject({ state: 'shredded' });
      const bus = two.custos.app.get(KeyCacheBus);
      for (let i = 0; i < 200 && dataKeys(two).isCached(t.tenantId, key.id); i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(bus.received).toBeGreaterThan(0);
      expect(dataKeys(two).isCached(t.tenantId, key.id)).toBe(false);
      expect(dataKeys(one).isCached(t.tenantId, key.id)).toBe(false);
    } finally {
      await one.close();
      await two.close();
    }
  });
});
