/**
 * Migrations as the schema owner, the application as a role of its own (CUSTOS_MIGRATION_DATABASE_URL): the
 * whole API works with the application's grants, and that role cannot change, delete or truncate audit events,
 * disable the append-only triggers, or change the schema.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { AuditRetention } from '../../../src/audit/audit-retention.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { sealFor } from '../../support/audit.js';
import { createTenant } from '../../support/factories.js';
import { adminDatabaseUrl, asAdmin } from '../../support/env.js';

const suffix = `${process.pid}_${randomBytes(3).toString('hex')}`;
const owner = `custos_owner_${suffix}`;
const appRole = `custos_app_${suffix}`;
const dbName = `custos_roles_${suffix}`;

function urlAs(role: string): string {
  const u = new URL(adminDatabaseUrl);
  u.username = role;
  u.password = '';
  u.pathname = `/${dbName}`;
  return u.toString();
}

async function asRole<T>(role: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: urlAs(role) });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** The SQLSTATE a statement fails with as `role` (or 'ok'). */
const attempt = (role: string, sql: string) =>
  asRole(role, (c) =>
    c.query(sql).then(
      () => 'ok',
      (err: { code?: string }) => err.code ?? 'error',
    ),
  );

let app: TestApp;
const env = () => ({
  DATABASE_URL: urlAs(appRole),
  CUSTOS_MIGRATION_DATABASE_URL: urlAs(owner),
});

beforeAll(async () => {
  await asAdmin(`CREATE ROLE ${owner} LOGIN`);
  await asAdmin(`CREATE ROLE ${appRole} LOGIN`);
  await asAdmin(`CREATE DATABASE ${dbName} OWNER ${owner}`);
  app = await startTestApp(env());
});

afterAll(async () => {
  await app?.close();
  await asAdmin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await asAdmin(`DROP ROLE IF EXISTS ${appRole}`);
  await asAdmin(`DROP ROLE IF EXISTS ${owner}`);
});

describe('migrations as the owner, the application as its own role', () => {
  it('leaves every table owned by the migration role', async () => {
    const owners = await asRole(owner, (c) =>
      c.query<{ tableowner: string }>(
        `SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'`,
      ),
    );
    expect(owners.rows.map((r) => r.tableowner)).toEqual([owner]);
  });

  it('serves the API with the application role’s grants', async () => {
    const t = await createTenant(app);
    const base = `/v1/tenants/${t.tenantId}`;
    const put = await app.request('PUT', `${base}/users/alice/connections/openai`, {
      key: t.adminKey,
      body: { type: 'api_key', apiKey: 'sk-roles-test-0123456789' },
    });
    expect(put.status).toBe(201);
    const connector = await app.request('POST', `${base}/connectors`, {
      key: t.adminKey,
      body: {
        name: 'roles',
        allowedProviders: ['openai'],
        delegation: 'trusted',
        auth: { method: 'client_secret_basic' },
      },
    });
    expect(connector.status).toBe(201);
    const exchange = await app.request('POST', '/oauth/token', {
      payload: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: 'alice',
        subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
        audience: 'openai',
      }).toString(),
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization:
          'Basic ' +
          Buffer.from(`${connector.body.clientId}:${connector.body.clientSecret}`).toString('base64'),
      },
    });
    expect(exchange.status).toBe(200);
    expect((await app.request('POST', `${base}/key-backend/rotate`, { key: t.adminKey })).status).toBe(200);
    expect((await app.request('GET', `${base}/key-backend`, { key: t.auditorKey })).status).toBe(200);
    const revoke = await app.request('DELETE', `${base}/connections/${put.body.id}`, { key: t.adminKey });
    expect(revoke.status).toBe(204);
    const audit = await app.request('GET', `${base}/audit/events?limit=50`, { key: t.auditorKey });
    expect(audit.status).toBe(200);
    expect(audit.body.items.map((e: { action: string }) => e.action)).toEqual(
      expect.arrayContaining(['token.exchange', 'connection.created', 'connection.revoked']),
    );
    // It did not warn about the audit trail: the application's role cannot alter it.
    expect(app.logs.join('\n')).not.toContain('could alter the audit trail');
  });

  it('cannot change, delete or truncate audit events, nor disable their triggers', async () => {
    expect(
      await attempt(
        appRole,
        `INSERT INTO audit_events (action, outcome, actor_type) VALUES ('x', 'allowed', 'system')`,
      ),
    ).toBe('ok');
    expect(await attempt(appRole, `UPDATE audit_events SET action = 'forged'`)).toBe('42501');
    expect(await attempt(appRole, 'DELETE FROM audit_events')).toBe('42501');
    expect(await attempt(appRole, 'TRUNCATE audit_events')).toBe('42501');
    expect(await attempt(appRole, 'ALTER TABLE audit_events DISABLE TRIGGER ALL')).toBe('42501');
    expect(await attempt(appRole, 'DROP TABLE audit_events')).toBe('42501');
    expect(await attempt(appRole, 'CREATE TABLE sneaky (id int)')).toBe('42501');
    expect(await attempt(appRole, `DELETE FROM migrations`)).toBe('42501');
    // The owner still cannot rewrite history either: the append-only triggers stand.
    expect(await attempt(owner, `UPDATE audit_events SET action = 'forged'`)).not.toBe('ok');
  });

  it('cannot change, delete or truncate the sealed chain links and checkpoints either', async () => {
    for (const table of ['audit_chain', 'audit_checkpoints']) {
      expect(await attempt(appRole, `UPDATE ${table} SET chain = 'forged'`)).toBe('42501');
      expect(await attempt(appRole, `DELETE FROM ${table}`)).toBe('42501');
      expect(await attempt(appRole, `TRUNCATE ${table}`)).toBe('42501');
      expect(await attempt(appRole, `ALTER TABLE ${table} DISABLE TRIGGER ALL`)).toBe('42501');
      expect(await attempt(owner, `TRUNCATE ${table}`)).toBe('42501');
    }
    // Row triggers fire only on rows: the owner writes one of each, then cannot change or remove it.
    expect(
      await attempt(
        owner,
        `INSERT INTO audit_chain (event_id, chain, pos, head) VALUES (-1, 'test', 1, '\\x00')`,
      ),
    ).toBe('ok');
    expect(
      await attempt(
        owner,
        `INSERT INTO audit_checkpoints (chain, seq, first_pos, last_pos, first_at, last_at, sealed_at, kid, body, sig)
         VALUES ('test', 1, 1, 1, now(), now(), now(), 'k', '{}', 's')`,
      ),
    ).toBe('ok');
    for (const table of ['audit_chain', 'audit_checkpoints']) {
      expect(await attempt(owner, `UPDATE ${table} SET chain = 'forged' WHERE chain = 'test'`)).toBe('42501');
      expect(await attempt(owner, `DELETE FROM ${table} WHERE chain = 'test'`)).toBe('42501');
    }
    // The sealer's own state stays writable: it moves forward with every batch.
    expect(await attempt(appRole, `UPDATE audit_seal_state SET last_id = last_id`)).toBe('ok');
  });

  it('cannot touch the monthly partitions or truncation records either, yet keeps partitions ahead', async () => {
    for (const table of ['audit_events_default', 'audit_truncations']) {
      expect(await attempt(appRole, `DELETE FROM ${table}`)).toBe('42501');
      expect(await attempt(appRole, `TRUNCATE ${table}`)).toBe('42501');
      expect(await attempt(appRole, `ALTER TABLE ${table} DISABLE TRIGGER ALL`)).toBe('42501');
      expect(await attempt(owner, `TRUNCATE ${table}`)).toBe('42501');
    }
    // It reaches the events only through audit_events, never a partition by name.
    expect(await attempt(appRole, 'SELECT 1 FROM audit_events_default')).toBe('42501');
    expect(
      await attempt(
        appRole,
        `INSERT INTO audit_events_default (action, outcome, actor_type) VALUES ('x', 'allowed', 'system')`,
      ),
    ).toBe('42501');
    expect(await attempt(appRole, 'DROP TABLE audit_events_default')).toBe('42501');
    // A month partition created later (by the owner's function, called as the application) is the owner's,
    // with the append-only triggers, and closed to the application.
    expect(await attempt(appRole, `SELECT custos_audit_partition('1999-01-01')`)).toBe('ok');
    expect(
      await attempt(
        appRole,
        `INSERT INTO audit_events (occurred_at, action, outcome, actor_type) VALUES ('1999-01-02', 'x', 'allowed', 'system')`,
      ),
    ).toBe('ok');
    expect(await attempt(appRole, 'DELETE FROM audit_events_1999_01')).toBe('42501');
    expect(await attempt(owner, 'TRUNCATE audit_events_1999_01')).toBe('42501');
    expect(await attempt(owner, `DELETE FROM audit_events WHERE occurred_at < '2000-01-01'`)).toBe('42501');
    const [{ role }] = await asRole(
      owner,
      async (c) =>
        (
          await c.query(
            `SELECT pg_get_userbyid(relowner) AS role FROM pg_class WHERE oid = to_regclass('audit_events_1999_01')`,
          )
        ).rows,
    );
    expect(role).toBe(owner);

    // Retention removes that month as the owner (CUSTOS_MIGRATION_DATABASE_URL), the application's role
    // being unable to.
    await sealFor(app, [null]);
    const retention = app.custos.app.get(AuditRetention);
    expect(await retention.apply(new Date('1999-02-01T00:00:00Z'))).toMatchObject({
      status: 'applied',
      run: { partitions: ['audit_events_1999_01'] },
    });
    expect(await attempt(appRole, `SELECT 1 FROM audit_events WHERE occurred_at < '2000-01-01'`)).toBe('ok');
  });

  it('without the owner, keeps partitions ahead and says why nothing is removed', async () => {
    await app.close();
    app = await startTestApp({ DATABASE_URL: urlAs(appRole), CUSTOS_AUDIT_RETENTION_MONTHS: '12' });
    const retention = app.custos.app.get(AuditRetention);
    await expect(retention.maintain()).resolves.toBeUndefined();
    expect(app.logs.join('\n')).toContain('audit retention needs the schema owner');
    await expect(retention.apply(new Date('1999-02-01T00:00:00Z'))).rejects.toMatchObject({ code: '42501' });
    await app.close();
    app = await startTestApp(env());
  });

  it('starts again on the migrated schema and keeps the grants', async () => {
    await app.close();
    app = await startTestApp(env());
    const t = await createTenant(app);
    expect(t.tenantId).toBeDefined();
    expect(await attempt(appRole, `UPDATE audit_events SET action = 'forged'`)).toBe('42501');
  });

  it('warns when the application’s own role owns the audit trail', async () => {
    await app.close();
    app = await startTestApp({ DATABASE_URL: urlAs(owner) });
    expect(app.logs.join('\n')).toContain('could alter the audit trail');
  });
});
