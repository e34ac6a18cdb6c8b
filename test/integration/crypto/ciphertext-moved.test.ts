/**
 * Someone with write access to the database moves ciphertext around: to another user's row, into another
 * field, to another tenant's row. The token endpoint must never release it as the other credential: every
 * move fails to open, is answered as a server error (never the moved secret), and is audited.
 */
import { startTestApp, type TestApp } from '../../support/app.js';
import {
  basicAuth,
  createConnector,
  createTenant,
  importConnection,
  uniqueSecret,
  type Credential,
  type SecretConnector,
  type TenantFixture,
} from '../../support/factories.js';

let app: TestApp;
let a: TenantFixture;
let b: TenantFixture;
const db = () => app.custos.runtime.dataSource;
const connectors = new Map<string, SecretConnector>();
const ids = new Map<string, string>();
const secrets = {
  aliceKey: uniqueSecret('sk-alice'),
  bobKey: uniqueSecret('sk-bob'),
  carolAccess: uniqueSecret('gho-carol'),
  carolRefresh: uniqueSecret('ghr-carol'),
  daveKey: uniqueSecret('sk-dave'),
};

async function put(t: TenantFixture, user: string, provider: string, body: Credential): Promise<void> {
  const { id } = await importConnection(app, t, user, provider, body);
  ids.set(`${t.tenantId}/${user}/${provider}`, id);
}

async function connector(t: TenantFixture): Promise<void> {
  connectors.set(
    t.tenantId,
    await createConnector(app, t, { name: 'mover', allowedProviders: ['openai', 'github'] }),
  );
}

function exchange(t: TenantFixture, user: string, provider: string) {
  const c = connectors.get(t.tenantId)!;
  return app.request('POST', '/oauth/token', {
    payload: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: user,
      subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
      audience: provider,
    }).toString(),
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: basicAuth(c),
    },
  });
}

const id = (t: TenantFixture, user: string, provider: string) =>
  ids.get(`${t.tenantId}/${user}/${provider}`)!;

async function copyColumn(from: string, fromColumn: string, to: string, toColumn = fromColumn) {
  await db().query(
    `UPDATE connections SET ${toColumn} = (SELECT ${fromColumn} FROM connections WHERE id = $1) WHERE id = $2`,
    [from, to],
  );
}

/** A fresh process view: no opened secret or data key cached from before the move. */
async function restart(): Promise<void> {
  const { databaseUrl, rootKeys } = app.custos.runtime.config;
  const bootstrapKey = app.bootstrapKey;
  await app.close();
  app = await startTestApp({
    DATABASE_URL: databaseUrl,
    CUSTOS_ROOT_KEYS: rootKeys,
    CUSTOS_BOOTSTRAP_ADMIN_KEY: bootstrapKey,
  });
}

beforeAll(async () => {
  app = await startTestApp();
  a = await createTenant(app);
  b = await createTenant(app);
  await put(a, 'alice', 'openai', { type: 'api_key', apiKey: secrets.aliceKey });
  await put(a, 'bob', 'openai', { type: 'api_key', apiKey: secrets.bobKey });
  await put(a, 'carol', 'github', {
    type: 'oauth2',
    accessToken: secrets.carolAccess,
    refreshToken: secrets.carolRefresh,
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  await put(b, 'dave', 'openai', { type: 'api_key', apiKey: secrets.daveKey });
  await connector(a);
  await connector(b);
  for (const [t, user, provider, secret] of [
    [a, 'alice', 'openai', secrets.aliceKey],
    [a, 'bob', 'openai', secrets.bobKey],
    [a, 'carol', 'github', secrets.carolAccess],
    [b, 'dave', 'openai', secrets.daveKey],
  ] as const) {
    const res = await exchange(t, user, provider);
    if (res.body.access_token !== secret) throw new Error(`set-up: ${user} ${res.raw}`);
  }
});
afterAll(() => app.close());

describe('ciphertext moved in the database', () => {
  it('to another user’s row of the same tenant and provider: not released as that user’s', async () => {
    await copyColumn(id(a, 'alice', 'openai'), 'secret', id(a, 'bob', 'openai'));
    await restart();
    const res = await exchange(a, 'bob', 'openai');
    expect(res.status).toBe(500);
    expect(res.body).toEqual({ error: 'server_error', error_description: 'Internal error' });
    expect(res.raw).not.toContain(secrets.aliceKey);
    // Alice's own credential is untouched.
    expect((await exchange(a, 'alice', 'openai')).body.access_token).toBe(secrets.aliceKey);
  });

  it('from the refresh-token field into the access-token field: not released', async () => {
    await copyColumn(id(a, 'carol', 'github'), 'refresh_token', id(a, 'carol', 'github'), 'secret');
    await restart();
    const res = await exchange(a, 'carol', 'github');
    expect(res.status).toBe(500);
    expect(res.raw).not.toContain(secrets.carolRefresh);
  });

  it('to another tenant’s row: not released there', async () => {
    await copyColumn(id(a, 'alice', 'openai'), 'secret', id(b, 'dave', 'openai'));
    await restart();
    const res = await exchange(b, 'dave', 'openai');
    expect(res.status).toBeGreaterThanOrEqual(500);
    expect(res.raw).not.toContain(secrets.aliceKey);
  });

  it('audits each refusal as a failure of the connection it was read from', async () => {
    const read = (): Promise<{ outcome: string; connection_id: string | null; tenant_id: string }[]> =>
      db().query(
        `SELECT outcome, connection_id, tenant_id FROM audit_events
          WHERE action = 'token.exchange' AND outcome <> 'allowed' AND tenant_id = ANY ($1::uuid[])
          ORDER BY id`,
        [[a.tenantId, b.tenantId]],
      );
    // A failure's event is written after the answer (the answer is 5xx whether or not it can be written).
    let rows = await read();
    for (let i = 0; i < 40 && rows.filter((r) => r.outcome === 'failed').length < 3; i++) {
      await new Promise((r) => setTimeout(r, 50));
      rows = await read();
    }
    const failed = rows.filter((r) => r.outcome === 'failed');
    expect(failed.map((r) => [r.tenant_id, r.connection_id])).toEqual([
      [a.tenantId, id(a, 'bob', 'openai')],
      [a.tenantId, id(a, 'carol', 'github')],
      [b.tenantId, id(b, 'dave', 'openai')],
    ]);
    expect(JSON.stringify(rows)).not.toContain(secrets.aliceKey);
  });
});
