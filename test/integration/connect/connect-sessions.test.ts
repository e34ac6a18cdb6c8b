import { createHash } from 'node:crypto';
import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, saveProviderApp, type TenantFixture } from '../../support/factories.js';

let app: TestApp;
let a: TenantFixture;
let b: TenantFixture;

beforeAll(async () => {
  app = await startTestApp({ CUSTOS_PUBLIC_URL: 'https://custos.example.test' });
  a = await createTenant(app);
  b = await createTenant(app);
  // Links are made only for OAuth providers the tenant has set up (its own app there).
  for (const provider of ['github', 'notion', 'slack']) {
    await saveProviderApp(app, a, provider, { client_id: `${provider}-app`, client_secret: 'app-secret' });
  }
  await saveProviderApp(app, b, 'github', { client_id: 'github-app', client_secret: 'app-secret' });
});
afterAll(() => app.close());

const create = (t: TenantFixture, body: unknown, key = t.adminKey) =>
  app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, { key, body });

describe('POST /v1/tenants/:tenantId/connect/sessions', () => {
  it('issues a one-time link whose token is random, stored only hashed, and short-lived', async () => {
    const before = Date.now();
    const res = await create(a, {
      userId: 'alice@example.com',
      provider: 'github',
      scopes: ['repo', 'repo'],
    });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      id: expect.any(String),
      userId: 'alice@example.com',
      provider: 'github',
      scopes: ['repo'],
      status: 'pending',
      failureReason: null,
      createdAt: expect.any(String),
      expiresAt: expect.any(String),
      url: expect.stringMatching(/^https:\/\/custos\.example\.test\/connect\/cst_[A-Za-z0-9_-]{43}$/),
    });
    const ttl = Date.parse(res.body.expiresAt) - before;
    expect(ttl).toBeGreaterThan(14 * 60_000);
    expect(ttl).toBeLessThanOrEqual(15 * 60_000 + 5_000);
    const token = res.body.url.split('/').pop();
    const row = (
      await app.custos.runtime.dataSource.query('SELECT * FROM connect_sessions WHERE id = $1', [res.body.id])
    )[0];
    expect(JSON.stringify(row)).not.toContain(token);
    expect(Buffer.from(row.token_hash).equals(createHash('sha256').update(token).digest())).toBe(true);
    const other = await create(a, { userId: 'alice@example.com', provider: 'github' });
    expect(other.body.url).not.toBe(res.body.url);
  });

  it('reports a session’s status, and expired once past its expiry', async () => {
    const res = await create(a, { userId: 'bob', provider: 'notion' });
    const get = () =>
      app.request('GET', `/v1/tenants/${a.tenantId}/connect/sessions/${res.body.id}`, { key: a.adminKey });
    expect((await get()).body.status).toBe('pending');
    expect((await get()).body).not.toHaveProperty('url');
    await app.custos.runtime.dataSource.query(
      `UPDATE connect_sessions SET expires_at = now() - interval '1 second' WHERE id = $1`,
      [res.body.id],
    );
    expect((await get()).body.status).toBe('expired');
  });

  it('audits the creation without the token', async () => {
    const res = await create(a, { userId: 'carol', provider: 'slack' });
    const token = res.body.url.split('/').pop();
    const ev = await app.request(
      'GET',
      `/v1/tenants/${a.tenantId}/audit/events?action=connect_session.created&userId=carol`,
      {
        key: a.auditorKey,
      },
    );
    expect(ev.body.items).toHaveLength(1);
    expect(ev.body.items[0]).toMatchObject({ provider: 'slack', details: { sessionId: res.body.id } });
    expect(JSON.stringify(ev.body)).not.toContain(token);
    expect(app.logs.join('')).not.toContain(token);
  });

  it('refuses bad input and writes nothing', async () => {
    const cases: [unknown, number, string][] = [
      [{ userId: 'u', provider: 'nope' }, 404, 'unknown_provider'],
      // An OAuth provider without the tenant's app: its link could only fail.
      [{ userId: 'u', provider: 'slack' }, 400, 'provider_not_configured'],
      [{ userId: 'u', provider: 'github', extra: true }, 400, 'unknown_field'],
      [{ provider: 'github' }, 400, 'validation_failed'],
      [{ userId: 'u', provider: 'github', scopes: ['a b'] }, 400, 'validation_failed'],
      [{ userId: 'u', provider: 'github', returnTo: '//evil.example' }, 400, 'return_url_not_allowed'],
      [
        { userId: 'u', provider: 'github', returnTo: 'https://app.example/done' },
        400,
        'return_url_not_allowed',
      ],
    ];
    for (const [body, status, code] of cases) {
      const res = await create(b, body);
      expect(res.status).toBe(status);
      expect(res.body.error).toBe(code);
    }
    const rows = await app.custos.runtime.dataSource.query(
      'SELECT 1 FROM connect_sessions WHERE tenant_id = $1',
      [b.tenantId],
    );
    expect(rows).toHaveLength(0);
  });

  it('keeps tenants apart and limits it to tenant admins', async () => {
    const res = await create(a, { userId: 'dave', provider: 'github' });
    const foreign = await app.request('GET', `/v1/tenants/${b.tenantId}/connect/sessions/${res.body.id}`, {
      key: b.adminKey,
    });
    expect(foreign.status).toBe(404);
    const cross = await create(a, { userId: 'dave', provider: 'github' }, b.adminKey);
    expect(cross.status).toBe(404);
    const auditor = await create(a, { userId: 'dave', provider: 'github' }, a.auditorKey);
    expect(auditor.status).toBe(403);
  });
});
