import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, uniqueSecret, type TenantFixture } from '../../support/factories.js';

let app: TestApp;
let a: TenantFixture;
let b: TenantFixture;

beforeAll(async () => {
  app = await startTestApp();
  a = await createTenant(app);
  b = await createTenant(app);
});
afterAll(() => app.close());

const put = (t: TenantFixture, user: string, provider: string, body: unknown, key = t.adminKey) =>
  app.request('PUT', `/v1/tenants/${t.tenantId}/users/${encodeURIComponent(user)}/connections/${provider}`, {
    key,
    body,
  });
const list = (t: TenantFixture, user: string, key = t.adminKey, qs = '') =>
  app.request('GET', `/v1/tenants/${t.tenantId}/users/${encodeURIComponent(user)}/connections${qs}`, { key });
const rawRow = async (id: string) =>
  (await app.custos.runtime.dataSource.query('SELECT * FROM connections WHERE id = $1', [id]))[0];
const connections = () => app.custos.app.get(ConnectionsService);
import { ConnectionsService } from '../../../src/connections/connections.service.js';
import { dropAuditTrigger } from '../../support/audit.js';

describe('PUT /v1/tenants/:tenantId/users/:userId/connections/:provider', () => {
  it('imports an API key (201), and replaces it in place on a second import (200, same id)', async () => {
    const first = await put(a, 'alice@example.com', 'openai', {
      type: 'api_key',
      apiKey: uniqueSecret('sk'),
    });
    expect(first.status).toBe(201);
    expect(first.body).toEqual({
      id: expect.any(String),
      tenantId: a.tenantId,
      userId: 'alice@example.com',
      provider: 'openai',
      type: 'api_key',
      status: 'active',
      scopes: [],
      expiresAt: null,
      createdAt: expect.any(String),
      updatedAt: expect.any(String),
    });
    const newKey = uniqueSecret('sk2');
    const second = await put(a, 'alice@example.com', 'openai', { type: 'api_key', apiKey: newKey });
    expect(second.status).toBe(200);
    expect(second.body.id).toBe(first.body.id);
    const opened = await connections().openCredential(a.tenantId, first.body.id);
    expect(opened.secret).toBe(newKey);
  });

  it('imports an OAuth token set with scopes and expiry', async () => {
    const access = uniqueSecret('gho');
    const refresh = uniqueSecret('ghr');
    const expiresAt = new Date(Date.now() + 3600_000).toISOString();
    const res = await put(a, 'bob', 'github', {
      type: 'oauth2',
      accessToken: access,
      refreshToken: refresh,
      expiresAt,
      scopes: ['repo', 'read:user', 'repo'],
    });
    expect(res.status).toBe(201);
    expect(res.body.scopes).toEqual(['repo', 'read:user']);
    expect(res.body.expiresAt).toBe(expiresAt);
    const opened = await connections().openCredential(a.tenantId, res.body.id);
    expect(opened.secret).toBe(access);
    expect(opened.refreshToken).toBe(refresh);
  });

  it('stores only ciphertext: the raw row never holds the plaintext', async () => {
    const access = uniqueSecret('plain-access');
    const refresh = uniqueSecret('plain-refresh');
    const res = await put(a, 'carol', 'google', {
      type: 'oauth2',
      accessToken: access,
      refreshToken: refresh,
    });
    const row = await rawRow(res.body.id);
    const dump = JSON.stringify(row) + row.secret.toString('latin1') + row.refresh_token.toString('latin1');
    expect(dump).not.toContain(access);
    expect(dump).not.toContain(refresh);
    expect(row.secret.subarray(0, 3).toString()).toBe('CSE');
    const dataKeys = await app.custos.runtime.dataSource.query(
      'SELECT wrapped FROM data_keys WHERE tenant_id = $1',
      [a.tenantId],
    );
    expect(dataKeys.length).toBeGreaterThan(0);
  });

  it('refuses a credential type the provider does not take', async () => {
    const res = await put(a, 'dave', 'github', { type: 'api_key', apiKey: 'x' });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('credential_type_mismatch');
  });

  it('answers 404 unknown_provider for a provider not in the catalog', async () => {
    const res = await put(a, 'dave', 'no-such-provider', { type: 'api_key', apiKey: 'x' });
    expect(res.status).toBe(404);
    expect(res.body.error).toBe('unknown_provider');
  });

  it('writes nothing when its audit event cannot be written (all or nothing)', async () => {
    const ds = app.custos.runtime.dataSource;
    await ds.query(`CREATE OR REPLACE FUNCTION test_fail_audit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.subject_user_id = 'audit-fails' THEN RAISE EXCEPTION 'audit down'; END IF; RETURN NEW; END $$`);
    await ds.query(
      `CREATE TRIGGER test_fail_audit BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION test_fail_audit()`,
    );
    try {
      const res = await put(a, 'audit-fails', 'openai', { type: 'api_key', apiKey: uniqueSecret('sk') });
      // Fail closed, and as an outage (503 with Retry-After), never as the client's fault or a 500.
      expect(res.status).toBe(503);
      expect(res.body.error).toBe('temporarily_unavailable');
      expect(res.headers['retry-after']).toBeDefined();
      const rows = await ds.query(`SELECT id FROM connections WHERE user_id = 'audit-fails'`);
      expect(rows).toHaveLength(0);
    } finally {
      await dropAuditTrigger(ds, 'test_fail_audit');
    }
  });

  it('gives two concurrent first imports one live connection', async () => {
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        put(a, 'racer', 'stripe', { type: 'api_key', apiKey: `sk_${i}_${uniqueSecret('r')}` }),
      ),
    );
    expect(results.every((r) => r.status === 200 || r.status === 201)).toBe(true);
    expect(new Set(results.map((r) => r.body.id)).size).toBe(1);
    expect(results.filter((r) => r.status === 201)).toHaveLength(1);
  });
});

describe('envelope binding (AAD swap)', () => {
  it('refuses a ciphertext copied to another row of the same tenant', async () => {
    const s1 = await put(a, 'swap-1', 'openai', { type: 'api_key', apiKey: uniqueSecret('one') });
    const s2 = await put(a, 'swap-2', 'openai', { type: 'api_key', apiKey: uniqueSecret('two') });
    const ds = app.custos.runtime.dataSource;
    await ds.query(
      'UPDATE connections SET secret = (SELECT secret FROM connections WHERE id = $1) WHERE id = $2',
      [s1.body.id, s2.body.id],
    );
    await expect(connections().openCredential(a.tenantId, s2.body.id)).rejects.toMatchObject({
      code: 'decryption_failed',
    });
    await expect(connections().openCredential(a.tenantId, s1.body.id)).resolves.toBeDefined();
  });

  it('refuses a ciphertext copied into another tenant', async () => {
    const src = await put(a, 'cross', 'openai', { type: 'api_key', apiKey: uniqueSecret('a') });
    const dst = await put(b, 'cross', 'openai', { type: 'api_key', apiKey: uniqueSecret('b') });
    const ds = app.custos.runtime.dataSource;
    // Copy the ciphertext and even its data key reference: the binding still names tenant A and row A.
    await ds.query(
      `UPDATE connections SET secret = s.secret, data_key_id = s.data_key_id FROM connections s WHERE s.id = $1 AND connections.id = $2`,
      [src.body.id, dst.body.id],
    );
    await expect(connections().openCredential(b.tenantId, dst.body.id)).rejects.toMatchObject({
      code: 'decryption_failed',
    });
  });

  it('refuses a field moved between columns (access token into refresh token)', async () => {
    const res = await put(a, 'fields', 'github', {
      type: 'oauth2',
      accessToken: uniqueSecret('at'),
      refreshToken: uniqueSecret('rt'),
    });
    await app.custos.runtime.dataSource.query('UPDATE connections SET refresh_token = secret WHERE id = $1', [
      res.body.id,
    ]);
    await expect(connections().openCredential(a.tenantId, res.body.id)).rejects.toMatchObject({
      code: 'decryption_failed',
    });
  });
});

describe('GET connections and DELETE', () => {
  it('lists a user’s connections and revokes one, destroying its secret and keeping a tombstone', async () => {
    const c = await put(a, 'erin', 'notion', { type: 'oauth2', accessToken: uniqueSecret('n') });
    await put(a, 'erin', 'openai', { type: 'api_key', apiKey: uniqueSecret('o') });
    const before = await list(a, 'erin');
    expect(before.status).toBe(200);
    expect(before.body.items.map((i: { provider: string }) => i.provider)).toEqual(['notion', 'openai']);

    const del = await app.request('DELETE', `/v1/tenants/${a.tenantId}/connections/${c.body.id}`, {
      key: a.adminKey,
    });
    expect(del.status).toBe(204);
    const row = await rawRow(c.body.id);
    expect(row.secret).toBeNull();
    expect(row.refresh_token).toBeNull();
    expect(row.status).toBe('revoked');

    const after = await list(a, 'erin');
    expect(after.body.items.map((i: { provider: string }) => i.provider)).toEqual(['openai']);
    const withRevoked = await list(a, 'erin', a.adminKey, '?includeRevoked=true');
    expect(withRevoked.body.items.find((i: { id: string }) => i.id === c.body.id).status).toBe('revoked');
    const again = await app.request('DELETE', `/v1/tenants/${a.tenantId}/connections/${c.body.id}`, {
      key: a.adminKey,
    });
    expect(again.status).toBe(404);
    await expect(connections().openCredential(a.tenantId, c.body.id)).rejects.toMatchObject({
      code: 'not_found',
    });
  });

  it('reports an access token past its expiry with no refresh token as expired, and the job records it', async () => {
    const res = await put(a, 'frank', 'slack', {
      type: 'oauth2',
      accessToken: uniqueSecret('x'),
      expiresAt: new Date(Date.now() - 1000).toISOString(),
    });
    expect(res.body.status).toBe('expired');
    const marked = await connections().markExpired();
    expect(marked).toBeGreaterThanOrEqual(1);
    expect((await rawRow(res.body.id)).status).toBe('expired');
    const ev = await app.request(
      'GET',
      `/v1/tenants/${a.tenantId}/audit/events?action=connection.expired&userId=frank`,
      {
        key: a.auditorKey,
      },
    );
    expect(ev.body.items).toHaveLength(1);
    expect(ev.body.items[0].actor).toEqual({ type: 'system', id: null });
  });
});

describe('tenant isolation', () => {
  it('gives tenant A’s key 404 for everything of tenant B', async () => {
    const bc = await put(b, 'gina', 'openai', { type: 'api_key', apiKey: uniqueSecret('b') });
    expect(bc.status).toBe(201);
    const attempts = [
      put(b, 'gina', 'openai', { type: 'api_key', apiKey: 'stolen' }, a.adminKey),
      list(b, 'gina', a.adminKey),
      app.request('DELETE', `/v1/tenants/${b.tenantId}/connections/${bc.body.id}`, { key: a.adminKey }),
      app.request('GET', `/v1/tenants/${b.tenantId}/audit/events`, { key: a.adminKey }),
      app.request('GET', `/v1/tenants/${b.tenantId}/audit/events`, { key: a.auditorKey }),
      app.request('POST', `/v1/tenants/${b.tenantId}/admin-keys`, {
        key: a.adminKey,
        body: { name: 'x', role: 'admin' },
      }),
      app.request('GET', `/v1/tenants/${b.tenantId}`, { key: a.adminKey }),
    ];
    for (const res of await Promise.all(attempts)) {
      expect(res.status).toBe(404);
      expect(res.body.error).toBe('not_found');
    }
    // B's connection is untouched, and A's own path cannot reach B's connection id either.
    const viaA = await app.request('DELETE', `/v1/tenants/${a.tenantId}/connections/${bc.body.id}`, {
      key: a.adminKey,
    });
    expect(viaA.status).toBe(404);
    const still = await list(b, 'gina');
    expect(still.body.items).toHaveLength(1);
    expect((await connections().openCredential(b.tenantId, bc.body.id)).secret).not.toBe('stolen');
    await expect(connections().openCredential(a.tenantId, bc.body.id)).rejects.toMatchObject({
      code: 'not_found',
    });
    // The denials are audited in A's trail, naming the target.
    const denied = await app.request('GET', `/v1/tenants/${a.tenantId}/audit/events?action=access.denied`, {
      key: a.auditorKey,
    });
    expect(
      denied.body.items.some(
        (e: { details: { targetTenant?: string } }) => e.details.targetTenant === b.tenantId,
      ),
    ).toBe(true);
    const bTrail = await app.request('GET', `/v1/tenants/${b.tenantId}/audit/events?action=access.denied`, {
      key: b.auditorKey,
    });
    expect(bTrail.body.items).toHaveLength(0);
  });
});
