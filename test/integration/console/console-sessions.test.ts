/**
 * The console's door and its guards: sign-in with an admin key (and refusal of anything else, audited), the
 * session cookie's flags and what the database keeps of it, the idle and absolute limits, sign-out, revocation
 * of the admin key ending its sessions on the next request, CSRF (a token bound to the session, and the Origin)
 * on every action, auditors refused every action, the security headers, and a tenant admin never seeing or
 * touching another tenant's data.
 */
import { createHash } from 'node:crypto';
import { startTestApp, type TestApp } from '../../support/app.js';
import {
  createConnector,
  createTenant,
  importUniqueToken,
  type SecretConnector,
  type TenantFixture,
} from '../../support/factories.js';
import { consoleClient, csrfOf, signIn, type ConsoleClient } from './console-client.js';

let app: TestApp;
let a: TenantFixture;
let b: TenantFixture;
let aConnector: SecretConnector;
let bConnector: SecretConnector;

const db = () => app.custos.runtime.dataSource;
const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

beforeAll(async () => {
  app = await startTestApp();
  a = await createTenant(app, `console-a-${Date.now()}`);
  b = await createTenant(app, `console-b-${Date.now()}`);
  aConnector = await createConnector(app, a, { name: 'Alpha helper' });
  bConnector = await createConnector(app, b, { name: 'Bravo secret-project bot' });
  await importUniqueToken(app, a, 'alice@alpha.example');
  await importUniqueToken(app, b, 'bob@bravo.example');
}, 60_000);
afterAll(() => app.close());

async function events(tenantId: string | null, action: string) {
  return db().query(
    `SELECT actor_type, actor_id, details FROM audit_events
      WHERE tenant_id IS NOT DISTINCT FROM $1 AND action = $2 ORDER BY id`,
    [tenantId, action],
  );
}

async function connectorDisabled(id: string): Promise<boolean> {
  const [row] = await db().query('SELECT disabled_at FROM connectors WHERE id = $1', [id]);
  return row.disabled_at !== null;
}

/** Posts the connector switch (to `enabled`) with the client's session and token, unless told otherwise. */
const toggle = (
  c: ConsoleClient,
  id: string,
  enabled: boolean,
  fields: Record<string, string> = {},
  headers = {},
) =>
  c.post(`/console/connectors/${id}/state`, { csrf: c.csrf, enabled: String(enabled), ...fields }, headers);

describe('sign-in', () => {
  it('with an admin key opens a session in a __Host- cookie: Secure, HttpOnly, SameSite=Strict, only its hash stored', async () => {
    const c = consoleClient(app);
    const form = await c.get('/console/sign-in');
    expect(form.status).toBe(200);
    expect(String(form.headers['set-cookie'])).toMatch(
      /^__Host-custos_console_signin=[A-Za-z0-9_-]{43}; Path=\/; Secure; HttpOnly; SameSite=Strict; Max-Age=1800$/,
    );
    const res = await c.post('/console/sign-in', { csrf: c.csrf, key: a.adminKey });
    expect(res.status).toBe(303);
    expect(res.headers.location).toBe('/console/connections');
    const set = res.headers['set-cookie'] as string[];
    const session = set.find((s) => s.startsWith('__Host-custos_console='))!;
    expect(session).toMatch(
      /^__Host-custos_console=ccs_[A-Za-z0-9_-]{43}; Path=\/; Secure; HttpOnly; SameSite=Strict; Max-Age=28800$/,
    );
    expect(session).not.toMatch(/Domain=/i);
    // The sign-in form's cookie is spent.
    expect(set.some((s) => /^__Host-custos_console_signin=; .*Max-Age=0$/.test(s))).toBe(true);

    const token = c.jar.get('__Host-custos_console')!;
    const rows = await db().query(
      `SELECT admin_key_id, tenant_id, role, token_hash, expires_at - created_at AS absolute
         FROM console_sessions WHERE token_hash = $1`,
      [sha256(token)],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ admin_key_id: a.adminKeyId, tenant_id: a.tenantId, role: 'admin' });
    expect(rows[0].absolute).toMatchObject({ hours: 8 });
    // The token itself is nowhere in the table.
    const [{ found }] = await db().query(
      `SELECT count(*)::int AS found FROM console_sessions s WHERE s::text LIKE '%' || $1 || '%'`,
      [token.slice(4)],
    );
    expect(found).toBe(0);

    const [signedIn] = await events(a.tenantId, 'console.signed_in');
    expect(signedIn).toMatchObject({ actor_type: 'admin_key', actor_id: a.adminKeyId });
    const page = await c.get('/console/connections');
    expect(page.status).toBe(200);
    expect(page.raw).toContain('alice@alpha.example');
  });

  it('refuses an unknown or revoked key with the form again (401), audited, and no session', async () => {
    const c = consoleClient(app);
    await c.get('/console/sign-in');
    const before = (await events(null, 'access.denied')).length;
    const res = await c.post('/console/sign-in', { csrf: c.csrf, key: `cus_${'x'.repeat(43)}` });
    expect(res.status).toBe(401);
    expect(res.raw).toContain('This admin key was not accepted');
    expect(res.raw).toContain('name="key"');
    expect(c.jar.get('__Host-custos_console')).toBeUndefined();
    const denied = await events(null, 'access.denied');
    expect(denied.length).toBe(before + 1);
    expect(denied[denied.length - 1].details).toMatchObject({
      reason: 'invalid_key',
      route: 'POST /console/sign-in',
    });
    // The key itself is not in the event.
    expect(JSON.stringify(denied[denied.length - 1])).not.toContain('xxxxxxxx');
  });

  it('refuses a form without its cookie (login CSRF) or from another origin', async () => {
    const c = consoleClient(app);
    await c.get('/console/sign-in');
    const token = c.csrf;
    const fresh = consoleClient(app);
    const noCookie = await fresh.post('/console/sign-in', { csrf: token, key: a.adminKey });
    expect(noCookie.status).toBe(403);
    expect(fresh.jar.get('__Host-custos_console')).toBeUndefined();
    const foreign = await c.post(
      '/console/sign-in',
      { csrf: token, key: a.adminKey },
      { origin: 'https://evil.example' },
    );
    expect(foreign.status).toBe(403);
    const none = await c.post('/console/sign-in', { csrf: token, key: a.adminKey }, { origin: '' });
    expect(none.status).toBe(403);
    expect(c.jar.get('__Host-custos_console')).toBeUndefined();
    const fine = await c.post('/console/sign-in', { csrf: token, key: a.adminKey });
    expect(fine.status).toBe(303);
  });

  it('sends a page without a session to sign-in, and an already signed-in user past it', async () => {
    const anon = consoleClient(app);
    for (const path of ['/console', '/console/connections', '/console/audit', '/console/platform']) {
      const res = await anon.get(path);
      expect([path, res.status, res.headers.location]).toEqual([path, 303, '/console/sign-in']);
    }
    const c = await signIn(app, a.adminKey);
    const again = await c.get('/console/sign-in');
    expect(again.status).toBe(303);
    expect(again.headers.location).toBe('/console');
  });
});

describe('every console response', () => {
  it('carries the strict CSP, no framing, no caching and a same-origin referrer policy', async () => {
    const c = await signIn(app, a.adminKey);
    for (const path of ['/console/sign-in', '/console/connections', '/console/no-such-page']) {
      const res = await (path === '/console/sign-in' ? consoleClient(app).get(path) : c.get(path));
      expect(res.headers['content-security-policy']).toBe(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
      );
      expect(res.headers['x-frame-options']).toBe('DENY');
      expect(res.headers['cache-control']).toBe('no-store');
      expect(res.headers['referrer-policy']).toBe('same-origin');
      expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
      // No inline script or style for the CSP to refuse: only the console's own files.
      expect(res.raw).not.toMatch(/<script(?![^>]*\ssrc="\/console\/assets\/console\.js\?v=[0-9a-f]{16}")/);
      expect(res.raw).not.toMatch(/<style|\sstyle="|\son[a-z]+="/i);
    }
    const missing = await c.get('/console/no-such-page');
    expect(missing.status).toBe(404);
    expect(missing.raw).toContain('Page not found');
  });

  it('links a stylesheet and script that Custos serves itself, versioned and cacheable', async () => {
    const page = await consoleClient(app).get('/console/sign-in');
    for (const [, path, version] of page.raw.matchAll(
      /(?:href|src)="(\/console\/assets\/[a-z.]+)\?v=([0-9a-f]{16})"/g,
    )) {
      const res = await app.request('GET', `${path}?v=${version}`);
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(/^text\/(css|javascript); charset=utf-8$/);
      expect(res.headers['cache-control']).toBe('public, max-age=31536000, immutable');
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(createHash('sha256').update(res.raw).digest('hex').slice(0, 16)).toBe(version);
    }
    expect((await app.request('GET', '/console/assets/..%2f..%2fpackage.json')).status).toBe(404);
    expect((await app.request('GET', '/console/assets/constructor')).status).toBe(404);
  });
});

describe('a session', () => {
  it('ends after 30 minutes without use, and after 8 hours whatever the use', async () => {
    const idle = await signIn(app, a.adminKey);
    const idleToken = idle.jar.get('__Host-custos_console')!;
    await db().query(
      `UPDATE console_sessions SET last_seen_at = now() - interval '31 minutes' WHERE token_hash = $1`,
      [sha256(idleToken)],
    );
    const res = await idle.get('/console/connections');
    expect(res.status).toBe(303);
    expect(res.headers.location).toBe('/console/sign-in?ended=expired');
    expect(String(res.headers['set-cookie'])).toMatch(/^__Host-custos_console=; .*Max-Age=0$/);
    expect(
      await db().query('SELECT 1 FROM console_sessions WHERE token_hash = $1', [sha256(idleToken)]),
    ).toEqual([]);

    const old = await signIn(app, a.adminKey);
    const oldToken = old.jar.get('__Host-custos_console')!;
    // Used a moment ago, but signed in more than 8 hours ago.
    await db().query(
      `UPDATE console_sessions SET expires_at = now() - interval '1 second' WHERE token_hash = $1`,
      [sha256(oldToken)],
    );
    expect((await old.get('/console/audit')).headers.location).toBe('/console/sign-in?ended=expired');

    // A session in use keeps going: each request starts the idle clock again.
    const used = await signIn(app, a.adminKey);
    const usedToken = used.jar.get('__Host-custos_console')!;
    await db().query(
      `UPDATE console_sessions SET last_seen_at = now() - interval '29 minutes' WHERE token_hash = $1`,
      [sha256(usedToken)],
    );
    expect((await used.get('/console/connections')).status).toBe(200);
    const [{ idle: idleFor }] = await db().query(
      `SELECT extract(epoch FROM now() - last_seen_at) AS idle FROM console_sessions WHERE token_hash = $1`,
      [sha256(usedToken)],
    );
    expect(Number(idleFor)).toBeLessThan(60);
  });

  it('ends at sign-out: the row is deleted, the cookie cleared, the sign-out audited', async () => {
    const c = await signIn(app, a.adminKey);
    const token = c.jar.get('__Host-custos_console')!;
    const withoutToken = await c.post('/console/sign-out', {});
    expect(withoutToken.status).toBe(403);
    const res = await c.post('/console/sign-out', { csrf: c.csrf });
    expect(res.status).toBe(303);
    expect(res.headers.location).toBe('/console/sign-in?ended=signed_out');
    expect(String(res.headers['set-cookie'])).toMatch(/^__Host-custos_console=; .*Max-Age=0$/);
    expect(await db().query('SELECT 1 FROM console_sessions WHERE token_hash = $1', [sha256(token)])).toEqual(
      [],
    );
    const out = await events(a.tenantId, 'console.signed_out');
    expect(out[out.length - 1]).toMatchObject({ actor_type: 'admin_key', actor_id: a.adminKeyId });
    // The old cookie opens nothing.
    const replay = await app.request('GET', '/console/connections', {
      headers: { cookie: `__Host-custos_console=${token}` },
    });
    expect(replay.status).toBe(303);
  });

  it('ends on its next request when its admin key is revoked', async () => {
    const issued = await app.request('POST', `/v1/tenants/${a.tenantId}/admin-keys`, {
      key: a.adminKey,
      body: { name: 'temporary auditor', role: 'auditor' },
    });
    const c = await signIn(app, issued.body.key as string);
    expect((await c.get('/console/audit')).status).toBe(200);
    const revoked = await app.request('DELETE', `/v1/tenants/${a.tenantId}/admin-keys/${issued.body.id}`, {
      key: a.adminKey,
    });
    expect(revoked.status).toBe(204);
    const after = await c.get('/console/audit');
    expect(after.status).toBe(303);
    expect(after.headers.location).toBe('/console/sign-in?ended=expired');
    expect(
      await db().query('SELECT 1 FROM console_sessions WHERE admin_key_id = $1', [issued.body.id]),
    ).toEqual([]);
  });
});

describe('CSRF protection of actions', () => {
  it('refuses an action without the token, with another session’s token, from another origin or with none', async () => {
    const c = await signIn(app, a.adminKey);
    const other = await signIn(app, a.adminKey);
    await c.get('/console/connectors');
    const cases: [string, Promise<{ status: number }>][] = [
      ['no token', c.post(`/console/connectors/${aConnector.id}/state`, { enabled: 'false' })],
      ['a wrong token', toggle(c, aConnector.id, false, { csrf: 'x'.repeat(43) })],
      ['another session’s token', toggle(c, aConnector.id, false, { csrf: other.csrf })],
      ['a foreign Origin', toggle(c, aConnector.id, false, {}, { origin: 'https://attacker.example' })],
      ['no Origin', toggle(c, aConnector.id, false, {}, { origin: '' })],
      ['Origin null', toggle(c, aConnector.id, false, {}, { origin: 'null' })],
    ];
    for (const [what, pending] of cases) {
      const res = await pending;
      expect([what, res.status]).toEqual([what, 403]);
    }
    expect(await connectorDisabled(aConnector.id)).toBe(false);
    const denied = (await events(a.tenantId, 'access.denied')).filter(
      (e: { details: { via?: string } }) => e.details.via === 'console',
    );
    expect(denied.map((e: { details: { reason: string } }) => e.details.reason)).toEqual(
      expect.arrayContaining(['csrf', 'origin']),
    );

    // With its own token and Origin, the same request is done, and audited by the connectors service.
    const ok = await toggle(c, aConnector.id, false);
    expect(ok.status).toBe(303);
    expect(ok.headers.location).toBe(`/console/connectors?done=disabled&id=${aConnector.id}`);
    expect(await connectorDisabled(aConnector.id)).toBe(true);
    const [disabled] = await events(a.tenantId, 'connector.disabled');
    expect(disabled).toMatchObject({ actor_type: 'admin_key', actor_id: a.adminKeyId });
    expect(disabled.details).toMatchObject({ connectorId: aConnector.id, disabled: true });
    const shown = await c.get(String(ok.headers.location));
    expect(shown.raw).toContain('Connector “Alpha helper” disabled.');
    expect(shown.raw).toContain('aria-checked="false"');
    expect((await toggle(c, aConnector.id, true)).status).toBe(303);
    expect(await connectorDisabled(aConnector.id)).toBe(false);
  });
});

describe('an auditor', () => {
  it('reads every tenant page with no action on it, and the server refuses the actions', async () => {
    const c = await signIn(app, a.auditorKey);
    for (const path of [
      '/console/connections',
      '/console/connectors',
      '/console/providers',
      '/console/identity-providers',
      '/console/key-backend',
      '/console/audit',
    ]) {
      const res = await c.get(path);
      expect([path, res.status]).toEqual([path, 200]);
      // The only forms that post: sign-out, and verifying the audit trail (which changes nothing).
      const actions = [...res.raw.matchAll(/<form method="post" action="([^"]+)"/g)].map((m) => m[1]);
      expect(actions.filter((x) => x !== '/console/sign-out' && x !== '/console/audit/verify')).toEqual([]);
    }
    const page = await c.get('/console/connectors');
    expect(page.raw).toContain('Alpha helper');
    expect(page.raw).not.toContain('role="switch"');

    const before = (await events(a.tenantId, 'access.denied')).length;
    const attempts = [
      await toggle(c, aConnector.id, false),
      await c.post('/console/key-backend/rotate', { csrf: c.csrf }),
      await c.post('/console/key-backend/flush', { csrf: c.csrf }),
    ];
    expect(attempts.map((r) => r.status)).toEqual([403, 403, 403]);
    expect(attempts[0].raw).toContain('can read everything here but change nothing');
    expect(await connectorDisabled(aConnector.id)).toBe(false);
    expect(await events(a.tenantId, 'key_backend.rotated')).toEqual([]);
    const denied = (await events(a.tenantId, 'access.denied')).slice(before);
    expect(denied.map((e: { details: { reason: string } }) => e.details.reason)).toEqual([
      'role',
      'role',
      'role',
    ]);
  });
});

describe('tenant isolation', () => {
  it('a tenant admin’s pages show only their tenant, and another tenant’s connector cannot be touched', async () => {
    const c = await signIn(app, a.adminKey);
    for (const path of [
      '/console/connections?status=all',
      '/console/connectors',
      '/console/providers',
      '/console/identity-providers',
      '/console/key-backend',
      '/console/audit',
      `/console/audit?connector=${bConnector.id}`,
      `/console/connections?user=bob`,
    ]) {
      const res = await c.get(path);
      expect([path, res.status]).toEqual([path, 200]);
      for (const foreign of [
        'bob@bravo.example',
        'Bravo secret-project bot',
        b.tenantId,
        bConnector.clientId,
      ]) {
        expect([path, res.raw.includes(foreign)]).toEqual([path, false]);
      }
    }
    const res = await toggle(c, bConnector.id, false);
    expect(res.status).toBe(404);
    expect(await connectorDisabled(bConnector.id)).toBe(false);
    // A tenant's key has no platform view.
    expect((await c.get('/console/platform')).status).toBe(403);
    expect((await c.get(`/console/platform/tenants/${b.tenantId}`)).status).toBe(403);
  });

  it('a platform admin sees the tenant list with links into each tenant, and no tenant’s credentials', async () => {
    const c = await signIn(app, app.bootstrapKey);
    const home = await c.get('/console');
    expect(home.headers.location).toBe('/console/platform');
    const list = await c.get('/console/platform');
    expect(list.status).toBe(200);
    for (const t of [a, b]) expect(list.raw).toContain(`href="/console/platform/tenants/${t.tenantId}"`);
    const one = await c.get(`/console/platform/tenants/${b.tenantId}`);
    expect(one.status).toBe(200);
    expect(one.raw).toContain(b.tenantId);
    expect(one.raw).not.toContain('bob@bravo.example');
    expect((await c.get('/console/platform/tenants/not-a-uuid')).status).toBe(400);
    expect((await c.get('/console/platform/tenants/00000000-0000-4000-8000-000000000000')).status).toBe(404);
    // The tenant pages are not a platform admin's: back to the platform view.
    const connections = await c.get('/console/connections');
    expect(connections.status).toBe(303);
    expect(connections.headers.location).toBe('/console/platform');
    const act = await c.post(`/console/connectors/${bConnector.id}/state`, {
      csrf: c.csrf,
      enabled: 'false',
    });
    expect(act.status).toBe(303);
    expect(await connectorDisabled(bConnector.id)).toBe(false);
  });
});

it('the CSRF token of a page is the one its session expects (and differs between sessions)', async () => {
  const one = await signIn(app, a.adminKey);
  const two = await signIn(app, a.adminKey);
  expect(one.csrf).toMatch(/^[A-Za-z0-9_-]{43}$/);
  expect(one.csrf).not.toBe(two.csrf);
  expect(csrfOf((await one.get('/console/key-backend')).raw)).toBe(one.csrf);
});
