import { createHash } from 'node:crypto';
import { startTestApp, type TestApp } from '../support/app.js';
import { createTenant, uniqueSecret, type TenantFixture } from '../support/factories.js';
import { adminDatabaseUrl, databaseUrlFor, workerDatabaseName } from '../support/env.js';
import { startTcpProxy } from '../support/tcp-proxy.js';

let app: TestApp;
let t: TenantFixture;

beforeAll(async () => {
  app = await startTestApp();
  t = await createTenant(app);
});
afterAll(() => app.close());

const connUrl = (user = 'u1', provider = 'openai') =>
  `/v1/tenants/${t.tenantId}/users/${encodeURIComponent(user)}/connections/${provider}`;

describe('tenants and admin keys', () => {
  it('creates a tenant with the managed key backend (platform admin)', async () => {
    const res = await app.request('POST', '/v1/tenants', { key: app.bootstrapKey, body: { name: 'Acme' } });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      id: expect.any(String),
      name: 'Acme',
      status: 'active',
      deletionRequestedAt: null,
      keyBackend: { type: 'managed' },
      allowedReturnUrls: [],
      webhookUrl: null,
      connectLogin: null,
      consoleLogin: null,
      scopePassThrough: false,
      displayName: null,
      brandColor: null,
      logo: null,
      createdAt: expect.any(String),
    });
  });

  it('shows an admin key once and stores only its SHA-256', async () => {
    const res = await app.request('POST', `/v1/tenants/${t.tenantId}/admin-keys`, {
      key: t.adminKey,
      body: { name: 'ci', role: 'auditor' },
    });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      id: expect.any(String),
      name: 'ci',
      role: 'auditor',
      key: expect.stringMatching(/^cus_/),
      createdAt: expect.any(String),
    });
    const rows = await app.custos.runtime.dataSource.query('SELECT * FROM admin_keys WHERE id = $1', [
      res.body.id,
    ]);
    expect(JSON.stringify(rows[0])).not.toContain(res.body.key);
    expect(Buffer.from(rows[0].key_hash).equals(createHash('sha256').update(res.body.key).digest())).toBe(
      true,
    );
  });

  it('lets only platform keys create tenants', async () => {
    const res = await app.request('POST', '/v1/tenants', { key: t.adminKey, body: { name: 'nope' } });
    expect(res.status).toBe(403);
    expect(res.body.error).toBe('forbidden');
  });

  it('keeps platform keys away from a tenant’s credentials', async () => {
    const res = await app.request('PUT', connUrl(), {
      key: app.bootstrapKey,
      body: { type: 'api_key', apiKey: 'k' },
    });
    expect(res.status).toBe(403);
  });

  it('lists a tenant’s keys without the key, and revokes one at once, audited', async () => {
    const issued = await app.request('POST', `/v1/tenants/${t.tenantId}/admin-keys`, {
      key: t.adminKey,
      body: { name: 'to-revoke', role: 'admin' },
    });
    expect(issued.status).toBe(201);
    const key: string = issued.body.key;
    expect((await app.request('GET', '/v1/providers', { key })).status).toBe(200);

    const list = await app.request('GET', `/v1/tenants/${t.tenantId}/admin-keys`, { key: t.adminKey });
    expect(list.status).toBe(200);
    expect(list.body).toContainEqual({
      id: issued.body.id,
      name: 'to-revoke',
      role: 'admin',
      createdAt: issued.body.createdAt,
      revokedAt: null,
    });
    expect(list.raw).not.toContain(key);
    expect(list.raw).not.toContain(createHash('sha256').update(key).digest('hex'));

    // Another tenant's admin cannot see or revoke it (and learns nothing: 404); an auditor cannot either.
    const other = await createTenant(app);
    const url = `/v1/tenants/${t.tenantId}/admin-keys/${issued.body.id}`;
    expect((await app.request('DELETE', url, { key: other.adminKey })).status).toBe(404);
    const otherList = await app.request('GET', `/v1/tenants/${t.tenantId}/admin-keys`, {
      key: other.adminKey,
    });
    expect(otherList.status).toBe(404);
    expect((await app.request('DELETE', url, { key: t.auditorKey })).status).toBe(403);
    // Through the other tenant's path, the key is not found: it is not that tenant's.
    const foreign = await app.request(
      'DELETE',
      `/v1/tenants/${other.tenantId}/admin-keys/${issued.body.id}`,
      {
        key: other.adminKey,
      },
    );
    expect(foreign.status).toBe(404);
    expect((await app.request('GET', '/v1/providers', { key })).status).toBe(200);

    const revoked = await app.request('DELETE', url, { key: t.adminKey });
    expect(revoked.status).toBe(204);
    expect((await app.request('GET', '/v1/providers', { key })).status).toBe(401);
    expect((await app.request('DELETE', url, { key: t.adminKey })).status).toBe(404);
    const after = await app.request('GET', `/v1/tenants/${t.tenantId}/admin-keys`, { key: t.adminKey });
    expect(after.body.find((k: { id: string }) => k.id === issued.body.id).revokedAt).toEqual(
      expect.any(String),
    );
    const events = await app.custos.runtime.dataSource.query(
      `SELECT details FROM audit_events WHERE tenant_id = $1 AND action = 'admin_key.revoked'`,
      [t.tenantId],
    );
    expect(events).toEqual([{ details: { adminKeyId: issued.body.id, name: 'to-revoke', role: 'admin' } }]);
  });

  it('lets an auditor read audit events and nothing else', async () => {
    const audit = await app.request('GET', `/v1/tenants/${t.tenantId}/audit/events`, { key: t.auditorKey });
    expect(audit.status).toBe(200);
    const denied = [
      await app.request('PUT', connUrl(), { key: t.auditorKey, body: { type: 'api_key', apiKey: 'k' } }),
      await app.request('GET', `/v1/tenants/${t.tenantId}/users/u1/connections`, { key: t.auditorKey }),
      await app.request('POST', `/v1/tenants/${t.tenantId}/admin-keys`, {
        key: t.auditorKey,
        body: { name: 'x', role: 'admin' },
      }),
    ];
    for (const d of denied) expect(d.status).toBe(403);
  });

  it('answers 401 without a key or with a wrong one, and audits the denial', async () => {
    const none = await app.request('GET', '/v1/providers');
    const wrong = await app.request('GET', '/v1/providers', { key: 'cus_' + 'x'.repeat(43) });
    const malformed = await app.request('GET', '/v1/providers', { headers: { authorization: 'Basic abc' } });
    for (const r of [none, wrong, malformed]) {
      expect(r.status).toBe(401);
      expect(r.body).toEqual({
        error: 'unauthenticated',
        message: expect.any(String),
        requestId: expect.any(String),
      });
    }
    const rows = await app.custos.runtime.dataSource.query(
      `SELECT details FROM audit_events WHERE action = 'access.denied' AND request_id = $1`,
      [wrong.body.requestId],
    );
    expect(rows[0].details.reason).toBe('invalid_key');
  });
});

describe('bad input', () => {
  it.each([
    ['an unknown field', { type: 'api_key', apiKey: 'k', extra: 1 }, 'unknown_field'],
    ['an unknown type', { type: 'password', apiKey: 'k' }, 'validation_failed'],
    ['an empty key', { type: 'api_key', apiKey: '' }, 'validation_failed'],
    ['a key with control characters', { type: 'api_key', apiKey: 'a\nb' }, 'validation_failed'],
    ['a non-ISO expiry', { type: 'oauth2', accessToken: 'a', expiresAt: 'tomorrow' }, 'validation_failed'],
    ['a scope with spaces', { type: 'oauth2', accessToken: 'a', scopes: ['a b'] }, 'validation_failed'],
    ['an array body', [1, 2], 'invalid_request'],
  ])('refuses %s with 400 and writes nothing', async (_label, body, code) => {
    const user = uniqueSecret('bad');
    const res = await app.request('PUT', connUrl(user), { key: t.adminKey, body });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe(code);
    expect(res.body.requestId).toEqual(expect.any(String));
    const rows = await app.custos.runtime.dataSource.query('SELECT 1 FROM connections WHERE user_id = $1', [
      user,
    ]);
    expect(rows).toHaveLength(0);
  });

  it('refuses malformed ids with 400 malformed_id', async () => {
    const cases = [
      app.request('GET', '/v1/tenants/not-a-uuid/users/u/connections', { key: t.adminKey }),
      app.request('DELETE', `/v1/tenants/${t.tenantId}/connections/123`, { key: t.adminKey }),
      app.request('PUT', `/v1/tenants/${t.tenantId}/users/u/connections/BAD%20KEY`, {
        key: t.adminKey,
        body: { type: 'api_key', apiKey: 'k' },
      }),
      app.request('GET', `/v1/tenants/${t.tenantId}/users/${'x'.repeat(300)}/connections`, {
        key: t.adminKey,
      }),
      app.request('GET', `/v1/tenants/${t.tenantId}/users/a%00b/connections`, { key: t.adminKey }),
    ];
    for (const res of await Promise.all(cases)) {
      expect(res.status).toBe(400);
      expect(res.body.error).toBe('malformed_id');
    }
  });

  it('refuses an oversized body with 413', async () => {
    const res = await app.request('PUT', connUrl(), {
      key: t.adminKey,
      payload: JSON.stringify({ type: 'api_key', apiKey: 'k'.repeat(70_000) }),
      headers: { 'content-type': 'application/json' },
    });
    expect(res.status).toBe(413);
    expect(res.body.error).toBe('payload_too_large');
  });

  it('refuses invalid JSON with 400 and other media types with 415', async () => {
    const bad = await app.request('PUT', connUrl(), {
      key: t.adminKey,
      payload: '{"type":',
      headers: { 'content-type': 'application/json' },
    });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toBe('invalid_request');
    const xml = await app.request('PUT', connUrl(), {
      key: t.adminKey,
      payload: '<a/>',
      headers: { 'content-type': 'application/xml' },
    });
    expect(xml.status).toBe(415);
    expect(xml.body.error).toBe('unsupported_media_type');
  });

  it('refuses bad audit queries', async () => {
    for (const qs of [
      'limit=0',
      'limit=abc',
      'cursor=%%%',
      'cursor=bm9wZQ',
      'action=DROP%20TABLE',
      'nope=1',
    ]) {
      const res = await app.request('GET', `/v1/tenants/${t.tenantId}/audit/events?${qs}`, {
        key: t.auditorKey,
      });
      expect(res.status).toBe(400);
    }
  });

  it('answers unknown routes with the stable error shape', async () => {
    const res = await app.request('GET', '/v1/nothing-here', { key: t.adminKey });
    expect(res.status).toBe(404);
    expect(res.body).toEqual({
      error: 'not_found',
      message: expect.any(String),
      requestId: expect.any(String),
    });
  });
});

describe('audit events', () => {
  it('records import, list and delete with actor, subject, provider and request id, newest first, paginated', async () => {
    const user = uniqueSecret('audited');
    const put = await app.request('PUT', connUrl(user, 'stripe'), {
      key: t.adminKey,
      body: { type: 'api_key', apiKey: uniqueSecret('sk') },
    });
    await app.request('GET', `/v1/tenants/${t.tenantId}/users/${user}/connections`, { key: t.adminKey });
    await app.request('DELETE', `/v1/tenants/${t.tenantId}/connections/${put.body.id}`, { key: t.adminKey });

    const page1 = await app.request('GET', `/v1/tenants/${t.tenantId}/audit/events?userId=${user}&limit=2`, {
      key: t.auditorKey,
    });
    expect(page1.status).toBe(200);
    expect(page1.body.items.map((e: { action: string }) => e.action)).toEqual([
      'connection.revoked',
      'connection.listed',
    ]);
    expect(page1.body.items[0]).toEqual({
      id: expect.any(String),
      occurredAt: expect.any(String),
      action: 'connection.revoked',
      outcome: 'allowed',
      actor: { type: 'admin_key', id: t.adminKeyId },
      subject: { userId: user },
      connectionId: put.body.id,
      provider: 'stripe',
      requestId: expect.any(String),
      details: expect.any(Object),
    });
    const page2 = await app.request(
      'GET',
      `/v1/tenants/${t.tenantId}/audit/events?userId=${user}&limit=2&cursor=${page1.body.nextCursor}`,
      {
        key: t.auditorKey,
      },
    );
    expect(page2.body.items.map((e: { action: string }) => e.action)).toEqual(['connection.created']);
    expect(page2.body.items[0].requestId).toBe(put.headers['x-request-id']);
    expect(page2.body.nextCursor).toBeNull();
    const byAction = await app.request(
      'GET',
      `/v1/tenants/${t.tenantId}/audit/events?action=connection.created&userId=${user}`,
      {
        key: t.auditorKey,
      },
    );
    expect(byAction.body.items).toHaveLength(1);
  });

  it('is append-only in the database', async () => {
    const ds = app.custos.runtime.dataSource;
    await expect(ds.query(`UPDATE audit_events SET action = 'x'`)).rejects.toThrow(/append-only/);
    await expect(ds.query(`DELETE FROM audit_events`)).rejects.toThrow(/append-only/);
    await expect(ds.query(`TRUNCATE audit_events`)).rejects.toThrow(/append-only/);
  });
});

describe('secrets never leak', () => {
  it('keeps every secret out of responses, errors, audit events and logs', async () => {
    const apiKey = uniqueSecret('SECRETAPIKEY');
    const access = uniqueSecret('SECRETACCESS');
    const refresh = uniqueSecret('SECRETREFRESH');
    const user = uniqueSecret('leak');
    const seen: string[] = [];
    const record = (r: { raw: string }) => seen.push(r.raw);
    record(
      await app.request('PUT', connUrl(user, 'openai'), {
        key: t.adminKey,
        body: { type: 'api_key', apiKey },
      }),
    );
    record(
      await app.request('PUT', connUrl(user, 'github'), {
        key: t.adminKey,
        body: { type: 'oauth2', accessToken: access, refreshToken: refresh },
      }),
    );
    // Errors that echo input must not echo secrets.
    record(
      await app.request('PUT', connUrl(user, 'github'), {
        key: t.adminKey,
        body: { type: 'api_key', apiKey },
      }),
    );
    record(
      await app.request('PUT', connUrl(user, 'openai'), {
        key: t.adminKey,
        body: { type: 'api_key', apiKey, bogus: apiKey },
      }),
    );
    record(
      await app.request('PUT', connUrl(user, 'openai'), {
        key: t.adminKey,
        body: { type: 'api_key', apiKey: `${apiKey}\n` },
      }),
    );
    record(
      await app.request('GET', `/v1/tenants/${t.tenantId}/users/${user}/connections`, { key: t.adminKey }),
    );
    record(
      await app.request('GET', `/v1/tenants/${t.tenantId}/audit/events?limit=500`, { key: t.auditorKey }),
    );
    const audit = await app.custos.runtime.dataSource.query('SELECT * FROM audit_events');
    const haystack = seen.join('\n') + JSON.stringify(audit) + app.logs.join('');
    for (const s of [apiKey, access, refresh, t.adminKey, app.bootstrapKey])
      expect(haystack).not.toContain(s);
  });
});

describe('infrastructure failures', () => {
  it('answers 503 temporarily_unavailable, never 401, when the database is unreachable', async () => {
    const u = new URL(adminDatabaseUrl);
    const proxy = await startTcpProxy(u.hostname, Number(u.port || 5432));
    const viaProxy = new URL(databaseUrlFor(workerDatabaseName()));
    viaProxy.port = String(proxy.port);
    const other = await startTestApp({
      DATABASE_URL: viaProxy.toString(),
      CUSTOS_BOOTSTRAP_ADMIN_KEY: app.bootstrapKey,
    });
    try {
      const ok = await other.request('GET', '/v1/providers', { key: t.adminKey });
      expect(ok.status).toBe(200);
      proxy.cut();
      const res = await other.request('GET', `/v1/tenants/${t.tenantId}/users/u1/connections`, {
        key: t.adminKey,
      });
      expect(res.status).toBe(503);
      expect(res.body.error).toBe('temporarily_unavailable');
      const ready = await other.request('GET', '/readyz');
      expect(ready.status).toBe(503);
      expect(ready.body.checks.database).toBe('unavailable');
      proxy.restore();
      const back = await other.request('GET', '/v1/providers', { key: t.adminKey });
      expect(back.status).toBe(200);
    } finally {
      proxy.restore();
      await other.close();
      await proxy.close();
    }
  });
});

describe('health and docs', () => {
  it('serves liveness, readiness and the OpenAPI document', async () => {
    expect((await app.request('GET', '/healthz')).body).toEqual({ status: 'ok' });
    const ready = await app.request('GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body.checks).toEqual({ database: 'ok', keyBackend: 'ok', jobs: 'ok' });
    const doc = await app.request('GET', '/openapi.json');
    expect(doc.status).toBe(200);
    expect(Object.keys(doc.body.paths)).toEqual(
      expect.arrayContaining([
        '/v1/tenants',
        '/v1/tenants/{tenantId}/users/{userId}/connections/{provider}',
        '/v1/providers',
      ]),
    );
    const ui = await app.request('GET', '/docs');
    expect(ui.status).toBe(200);
  });

  it('lists the provider catalog', async () => {
    const res = await app.request('GET', '/v1/providers', { key: t.auditorKey });
    expect(res.status).toBe(200);
    expect(res.body.items.length).toBeGreaterThanOrEqual(20);
    const gh = res.body.items.find((p: { key: string }) => p.key === 'github');
    expect(gh).toMatchObject({ key: 'github', name: 'GitHub', authMode: 'oauth2' });
  });
});
