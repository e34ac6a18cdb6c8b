/**
 * What each console page shows, from data made through the admin API and the token endpoint: connections by
 * user and provider with status, expiry, last use and needs-reauth (filters, paging); connectors with their
 * policy; providers and OAuth apps (never a secret); identity providers; the key backend and its actions; the
 * audit trail with its filters, charts, seal status and verification. And every query parameter is checked.
 */
import { startTestApp, type TestApp } from '../../support/app.js';
import { sealFor, asSuperuser } from '../../support/audit.js';
import {
  basicAuth,
  createConnector,
  createTenant,
  importConnection,
  saveProviderApp,
  trustIdentityProvider,
  type SecretConnector,
  type TenantFixture,
} from '../../support/factories.js';
import { signIn, type ConsoleClient } from './console-client.js';

let app: TestApp;
let t: TenantFixture;
let support: SecretConnector;
let sales: SecretConnector;
let admin: ConsoleClient;
const APP_SECRET = `gh-app-secret-${Date.now()}`;
const db = () => app.custos.runtime.dataSource;

const exchange = (c: SecretConnector, user: string, provider = 'github') =>
  app.request('POST', '/oauth/token', {
    payload: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: user,
      subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
      audience: provider,
    }).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(c) },
  });

/** The rows of a page's first table body, as the text of their cells. */
function rows(raw: string): string[][] {
  const body = /<tbody>([\s\S]*?)<\/tbody>/.exec(raw)?.[1] ?? '';
  return [...body.matchAll(/<tr[^>]*>([\s\S]*?)<\/tr>/g)].map((r) =>
    [...r[1].matchAll(/<t[dh][^>]*>([\s\S]*?)<\/t[dh]>/g)].map((c) =>
      c[1]
        .replace(/<[^>]+>/g, ' ')
        .replace(/\s+/g, ' ')
        .trim(),
    ),
  );
}

/** The rows of the audit page's events table. */
const eventRows = (raw: string) => rows(raw.slice(raw.indexOf('id="events-title"')));

/** The numbers of a chart's table: label → [released, denied]. */
function chartTable(raw: string, id: string): Record<string, [number, number]> {
  const figure = new RegExp(`<figure id="${id}">([\\s\\S]*?)</figure>`).exec(raw)?.[1] ?? '';
  return Object.fromEntries(rows(figure).map(([label, r, d]) => [label, [Number(r), Number(d)]]));
}

beforeAll(async () => {
  app = await startTestApp({ CUSTOS_OUTBOUND_ALLOW_HOSTS: 'jwks.example.test' });
  t = await createTenant(app);
  support = await createConnector(app, t, {
    name: 'Support agent',
    owner: 'it@example.com',
    allowedProviders: ['github', 'slack', 'openai'],
    allowedScopes: { github: ['repo', 'read:user'] },
  });
  sales = await createConnector(app, t, { name: 'Sales copilot', allowedProviders: ['github'] });
  await saveProviderApp(app, t, 'github', { client_id: 'gh-client-id-123', client_secret: APP_SECRET });
  await trustIdentityProvider(app, t, {
    issuer: 'https://idp.example.test',
    jwksUri: 'https://jwks.example.test/jwks',
  });
  await importConnection(app, t, 'alice@example.com', 'github', {
    type: 'oauth2',
    accessToken: 'a1',
    scopes: ['repo'],
    expiresAt: '2030-01-01T00:00:00Z',
  });
  await importConnection(app, t, 'alice@example.com', 'slack', { type: 'oauth2', accessToken: 'a2' });
  await importConnection(app, t, 'bob@example.com', 'github', { type: 'oauth2', accessToken: 'b1' });
  await importConnection(app, t, 'carol@example.com', 'openai', { type: 'api_key', apiKey: 'sk-c1' });
  const dave = await importConnection(app, t, 'dave@example.com', 'github', {
    type: 'oauth2',
    accessToken: 'd1',
  });
  // A refresh that failed with invalid_grant leaves this mark (the refresh path's own tests drive it for real).
  await db().query(
    `UPDATE connections SET status = 'needs_reauth' WHERE tenant_id = $1 AND user_id = 'bob@example.com'`,
    [t.tenantId],
  );
  expect(
    (await app.request('DELETE', `/v1/tenants/${t.tenantId}/connections/${dave.id}`, { key: t.adminKey }))
      .status,
  ).toBe(204);

  for (let i = 0; i < 3; i++) expect((await exchange(support, 'alice@example.com')).status).toBe(200);
  expect((await exchange(support, 'carol@example.com', 'openai')).status).toBe(200);
  expect((await exchange(sales, 'bob@example.com')).status).toBe(400);
  expect((await exchange(sales, 'erin@example.com')).status).toBe(400);
  admin = await signIn(app, t.adminKey);
}, 60_000);
afterAll(() => app.close());

describe('the connections page', () => {
  it('lists connections by user and provider with status, expiry, last use and the needs-reauth ones marked', async () => {
    const res = await admin.get('/console/connections');
    expect(res.status).toBe(200);
    const table = rows(res.raw);
    expect(table.map((r) => [r[0], r[1], r[2]])).toEqual([
      ['alice@example.com', 'GitHub (github)', 'active'],
      ['alice@example.com', 'Slack (slack)', 'active'],
      ['bob@example.com', 'GitHub (github)', 'needs re-authorisation'],
      ['carol@example.com', 'OpenAI (openai)', 'active'],
    ]);
    expect(table[0][3]).toBe('2030-01-01 00:00 UTC');
    expect(table[0][4]).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC by Support agent$/);
    expect(table[0][6]).toBe('repo');
    expect(table[1][4]).toBe('never (in the audit trail kept)');
    expect(table[3][3]).toBe('API key: no expiry');
    expect(res.flat).toMatch(
      /<tr class="attention"><td><a href="\/console\/audit\?user=bob%40example.com">bob@example.com/,
    );
    expect(res.flat).toMatch(/Need re-authorisation<\/p><p class="big">1</);
    expect(res.flat).toMatch(/Revoked<\/p><p class="big">1</);
    const [listed] = await db().query(
      `SELECT actor_id, details FROM audit_events WHERE tenant_id = $1 AND action = 'connection.listed' ORDER BY id DESC LIMIT 1`,
      [t.tenantId],
    );
    expect(listed).toMatchObject({
      actor_id: t.adminKeyId,
      details: { via: 'console', scope: 'tenant', count: 4 },
    });
  });

  it('filters by user, provider and status', async () => {
    const users = async (q: string) =>
      rows((await admin.get(`/console/connections${q}`)).raw).map((r) => `${r[0]} ${r[1]}`);
    expect(await users('?status=needs_reauth')).toEqual(['bob@example.com GitHub (github)']);
    expect(await users('?provider=slack')).toEqual(['alice@example.com Slack (slack)']);
    expect(await users('?user=ali')).toEqual([
      'alice@example.com GitHub (github)',
      'alice@example.com Slack (slack)',
    ]);
    expect(await users('?status=revoked')).toEqual(['dave@example.com GitHub (github)']);
    expect(await users('?status=all&provider=github&user=')).toHaveLength(3);
    expect(await users('?user=nobody')).toEqual([]);
  });

  it('pages through many connections with a next link', async () => {
    for (let i = 0; i < 55; i++) {
      await importConnection(app, t, `zed-${String(i).padStart(2, '0')}@example.com`, 'openai', {
        type: 'api_key',
        apiKey: `k${i}`,
      });
    }
    const seen: string[] = [];
    let next: string | undefined = '/console/connections?user=zed-';
    while (next) {
      const res = await admin.get(next);
      expect(res.status).toBe(200);
      seen.push(...rows(res.raw).map((r) => r[0]));
      next = /<a href="([^"]+)" rel="next">/.exec(res.raw)?.[1]?.replace(/&amp;/g, '&');
    }
    expect(seen).toEqual(
      Array.from({ length: 55 }, (_, i) => `zed-${String(i).padStart(2, '0')}@example.com`),
    );
  });

  it('refuses bad query parameters with a page', async () => {
    for (const q of [
      '?status=bogus',
      '?provider=GitHub',
      `?user=${'u'.repeat(256)}`,
      '?after=not-a-cursor!',
      `?after=${Buffer.from('["a","github","nope"]').toString('base64url')}`,
      '?unknown=1',
      '?status=live&status=all',
    ]) {
      const res = await admin.get(`/console/connections${q}`);
      expect([q, res.status]).toEqual([q, 400]);
      expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(res.flat).toContain('Request not accepted');
    }
  });
});

describe('the connectors page', () => {
  it('shows each connector’s policy and a switch for its state', async () => {
    const res = await admin.get('/console/connectors');
    const table = rows(res.raw);
    const supportRow = table.find((r) => r[0].startsWith('Support agent'))!;
    expect(supportRow[0]).toContain('owner: it@example.com');
    expect(supportRow[1]).toBe(support.clientId);
    expect(supportRow[2]).toBe(
      'GitHub (github) : repo read:user Slack (slack) any scope OpenAI (openai) any scope',
    );
    expect(supportRow[3]).toBe('trusted (names the user)');
    expect(supportRow[4]).toBe('client_secret_basic');
    expect(res.flat).toContain('aria-label="Connector Support agent enabled"');
    expect(res.raw).toContain(`action="/console/connectors/${support.id}/state"`);
    expect(res.raw).not.toContain(support.clientSecret);
  });

  it('disables a connector so that the token endpoint refuses it, and enables it again', async () => {
    expect(
      (await admin.post(`/console/connectors/${sales.id}/state`, { csrf: admin.csrf, enabled: 'false' }))
        .status,
    ).toBe(303);
    const refused = await exchange(sales, 'alice@example.com');
    expect(refused.status).toBe(401);
    expect(
      (await admin.post(`/console/connectors/${sales.id}/state`, { csrf: admin.csrf, enabled: 'true' }))
        .status,
    ).toBe(303);
    const [enabled] = await db().query(
      `SELECT actor_id, details FROM audit_events WHERE tenant_id = $1 AND action = 'connector.updated' ORDER BY id DESC LIMIT 1`,
      [t.tenantId],
    );
    expect(enabled).toMatchObject({
      actor_id: t.adminKeyId,
      details: { connectorId: sales.id, disabled: false },
    });
    expect(
      (await admin.post('/console/connectors/not-a-uuid/state', { csrf: admin.csrf, enabled: 'true' }))
        .status,
    ).toBe(400);
    expect(
      (await admin.post(`/console/connectors/${sales.id}/state`, { csrf: admin.csrf, enabled: 'maybe' }))
        .status,
    ).toBe(400);
  });
});

describe('the providers page', () => {
  it('shows which providers have the tenant’s OAuth app, never its secret', async () => {
    const res = await admin.get('/console/providers');
    const byKey = Object.fromEntries(rows(res.raw).map((r) => [r[0].split(' ').pop(), r]));
    expect(byKey.github[3]).toMatch(
      /^configured client id gh-client-id-123 client secret set · updated \d{4}-/,
    );
    expect(byKey.slack[3]).toBe('not configured');
    expect(byKey.openai[2]).toBe('API key');
    expect(byKey.openai[3]).toBe('not needed (API keys)');
    expect(res.raw).not.toContain(APP_SECRET);
  });
});

describe('the identity providers page', () => {
  it('shows each trusted issuer with its keys, audiences and algorithms', async () => {
    const res = await admin.get('/console/identity-providers');
    expect(rows(res.raw)).toEqual([
      [
        'main',
        'https://idp.example.test',
        'from https://jwks.example.test/jwks',
        'custos',
        'sub',
        'ES256',
        expect.stringMatching(/ UTC$/),
      ],
    ]);
  });
});

describe('the key backend page', () => {
  it('shows the backend, its state and data keys, and rotates and flushes through the key backend service', async () => {
    const res = await admin.get('/console/key-backend');
    expect(res.flat).toContain('Managed keyring (held by Custos)<code>managed</code>');
    expect(res.flat).toContain('<span class="badge ok">active</span>');
    expect(res.flat).toMatch(/<progress value="(\d+)" max="\1"/);

    const rotated = await admin.post('/console/key-backend/rotate', { csrf: admin.csrf });
    expect(rotated.status).toBe(303);
    const after = await admin.get(String(rotated.headers.location));
    expect(after.flat).toMatch(
      /Key rotated: new secrets use data-key epoch \d+; \d+ data key\(s\) rewrapped\./,
    );
    const flushed = await admin.post('/console/key-backend/flush', { csrf: admin.csrf });
    expect((await admin.get(String(flushed.headers.location))).flat).toContain('Cached data keys flushed');
    const audited = await db().query(
      `SELECT action, actor_id FROM audit_events WHERE tenant_id = $1 AND action LIKE 'key_backend.%' ORDER BY id`,
      [t.tenantId],
    );
    expect(audited).toEqual([
      { action: 'key_backend.rotated', actor_id: t.adminKeyId },
      { action: 'key_backend.flushed', actor_id: t.adminKeyId },
    ]);
    // Credentials still open after the rotation.
    expect((await exchange(support, 'alice@example.com')).status).toBe(200);
  });
});

describe('the audit page', () => {
  it('lists events newest first with their actors by name, and filters them', async () => {
    const all = await admin.get('/console/audit');
    expect(all.status).toBe(200);
    const denied = eventRows((await admin.get('/console/audit?outcome=denied&action=token.exchange')).raw);
    expect(denied.length).toBeGreaterThanOrEqual(2);
    expect(denied.every((r) => r[1] === 'token.exchange' && r[2] === 'denied')).toBe(true);
    expect(denied.map((r) => r[3])).toContain('connector Sales copilot');

    const bySales = eventRows((await admin.get(`/console/audit?connector=${sales.id}`)).raw);
    expect(bySales.map((r) => r[1])).toEqual(
      expect.arrayContaining([
        'token.exchange',
        'connector.disabled',
        'connector.updated',
        'connector.created',
      ]),
    );
    expect(bySales.every((r) => r[3] !== 'connector Support agent')).toBe(true);

    const carol = eventRows((await admin.get('/console/audit?user=carol%40example.com&provider=openai')).raw);
    expect(carol.map((r) => r[1])).toEqual(['token.exchange', 'connection.created']);
    expect(carol[1][3]).toBe('admin key admin');

    const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    // A range given by its start alone: the charts cover at least a day and at most a year of it.
    for (const from of [tomorrow, '2001-01-01']) {
      const res = await admin.get(`/console/audit?from=${from}`);
      expect([from, res.status]).toEqual([from, 200]);
      expect(res.flat).toContain('<figure id="chart-time">');
    }
    expect(eventRows((await admin.get(`/console/audit?from=${tomorrow}`)).raw)).toEqual([]);
    expect(
      eventRows((await admin.get(`/console/audit?to=${tomorrow}&action=tenant.created`)).raw),
    ).toHaveLength(1);
  });

  it('pages to older events', async () => {
    const first = await admin.get('/console/audit');
    expect(eventRows(first.raw)).toHaveLength(50);
    const next = /<a href="([^"]+)" rel="next">Older events/.exec(first.raw)![1].replace(/&amp;/g, '&');
    const second = await admin.get(next);
    expect(second.status).toBe(200);
    const lastOfFirst = eventRows(first.raw).at(-1)!;
    expect(eventRows(second.raw)[0]).not.toEqual(lastOfFirst);
    expect(second.flat).toContain('Newest events');
  });

  it('charts releases and denials over time, by connector and by provider', async () => {
    const res = await admin.get('/console/audit');
    const byConnector = chartTable(res.raw, 'chart-connectors');
    expect(byConnector['Support agent']).toEqual([5, 0]);
    expect(byConnector['Sales copilot'][1]).toBeGreaterThanOrEqual(2);
    const byProvider = chartTable(res.raw, 'chart-providers');
    expect(byProvider.openai ?? byProvider.OpenAI).toEqual([1, 0]);
    expect(byProvider.GitHub[0]).toBe(4);
    const perDay = Object.values(chartTable(res.raw, 'chart-time'));
    expect(perDay).toHaveLength(14);
    expect(perDay.reduce((a, [r]) => a + r, 0)).toBe(5);
    // The bars: released in green, denied in red, one group per day with a tooltip.
    expect(res.flat).toMatch(/<rect class="released" [^>]*fill="#1a7f37" ?\/>/);
    expect(res.flat).toMatch(/<rect class="denied" [^>]*fill="#cf222e" ?\/>/);
    // Filtered to one connector, the charts follow.
    const one = await admin.get(`/console/audit?connector=${support.id}`);
    expect(Object.keys(chartTable(one.raw, 'chart-connectors'))).toEqual(['Support agent']);
  });

  it('refuses bad filters with a page', async () => {
    for (const q of [
      '?from=2026-02-30',
      '?from=2026-03-01&to=2026-02-01',
      '?from=2020-01-01&to=2026-01-01',
      '?action=DROP%20TABLE',
      '?outcome=maybe',
      '?connector=abc',
      '?before=-1',
      `?user=${'x'.repeat(300)}`,
    ]) {
      const res = await admin.get(`/console/audit${q}`);
      expect([q, res.status]).toEqual([q, 400]);
    }
  });

  it('shows the seal status and verifies the sealed trail, and says so when it has been tampered with', async () => {
    await sealFor(app, [t.tenantId]);
    const page = await admin.get('/console/audit');
    const [{ n }] = await db().query('SELECT count(*)::int AS n FROM audit_events WHERE tenant_id = $1', [
      t.tenantId,
    ]);
    expect(page.flat).toMatch(
      new RegExp(
        `${n} events are linked into the tenant's hash chain; ${n} of them are covered by \\d+ signed checkpoint`,
      ),
    );

    const verified = await admin.post('/console/audit/verify', { csrf: admin.csrf });
    expect(verified.status).toBe(200);
    expect(verified.flat).toMatch(new RegExp(`Verified \\([^)]+\\): OK tenant:${t.tenantId}: ${n} events`));
    const [event] = await db().query(
      `SELECT outcome, actor_id, details FROM audit_events WHERE tenant_id = $1 AND action = 'audit.verified'`,
      [t.tenantId],
    );
    expect(event).toMatchObject({ outcome: 'allowed', actor_id: t.adminKeyId, details: { events: n } });

    // Someone with database access rewrites an event: verification finds it.
    await asSuperuser(
      `UPDATE audit_events SET details = '{"rewritten":true}' WHERE id = (
         SELECT min(id) FROM audit_events WHERE tenant_id = $1 AND action = 'token.exchange')`,
      [t.tenantId],
    );
    const auditor = await signIn(app, t.auditorKey);
    await auditor.get('/console/audit');
    const failed = await auditor.post('/console/audit/verify', { csrf: auditor.csrf });
    expect(failed.status).toBe(200);
    expect(failed.flat).toContain('Verification failed');
    const [failure] = await db().query(
      `SELECT outcome, details FROM audit_events WHERE tenant_id = $1 AND action = 'audit.verified' ORDER BY id DESC LIMIT 1`,
      [t.tenantId],
    );
    expect(failure.outcome).toBe('failed');
    expect(failure.details.problem).toEqual(expect.any(String));
  });
});
