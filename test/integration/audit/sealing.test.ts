/**
 * The sealed trail against the real database: commit-safe order, concurrent writers, the JWKS and export,
 * verification of an honest export, and tampering by a superuser (who can bypass the append-only triggers)
 * detected by verification, each on a tenant of its own.
 */
import { Client } from 'pg';
import { AuditSealer } from '../../../src/audit/audit-sealer.js';
import { AuditService, systemActor } from '../../../src/audit/audit.service.js';
import { verifyExport, type VerifyResult } from '../../../src/audit/audit-format.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { databaseUrlFor, workerDatabaseName } from '../../support/env.js';
import { asSuperuser, sealFor } from '../../support/audit.js';
import { createTenant, type TenantFixture } from '../../support/factories.js';

let app: TestApp;
let sealer: AuditSealer;
let audit: AuditService;

const db = () => app.custos.runtime.dataSource;

beforeAll(async () => {
  // The background sealer would race the explicit runs below (harmlessly: they take turns by a lock), but
  // the tests read what one run did.
  app = await startTestApp({ CUSTOS_AUDIT_SEAL_INTERVAL_MS: '60000' });
  sealer = app.custos.app.get(AuditSealer);
  audit = app.custos.app.get(AuditService);
});
afterAll(() => app.close());

async function writeEvents(tenantId: string | null, n: number, tag = 'test.event'): Promise<void> {
  for (let i = 0; i < n; i++) {
    await audit.record({ tenantId, action: tag, outcome: 'allowed', actor: systemActor, details: { i } });
  }
}

const sealAll = (tenantIds: (string | null)[]) => sealFor(app, tenantIds);

async function exportOf(t: TenantFixture, query = ''): Promise<string[]> {
  const res = await app.request('GET', `/v1/tenants/${t.tenantId}/audit/export${query}`, {
    key: t.auditorKey,
  });
  expect(res.status).toBe(200);
  expect(res.headers['content-type']).toContain('application/x-ndjson');
  return res.raw.split('\n').filter((l) => l !== '');
}

async function jwksOf(t: TenantFixture): Promise<unknown> {
  const res = await app.request('GET', `/v1/tenants/${t.tenantId}/audit/keys`);
  expect(res.status).toBe(200);
  return res.body;
}

async function verifyTenant(t: TenantFixture): Promise<VerifyResult> {
  return verifyExport(await exportOf(t), await jwksOf(t));
}

async function eventIds(tenantId: string): Promise<string[]> {
  const rows = await db().query(
    `SELECT e.id::text AS id FROM audit_events e JOIN audit_chain l ON l.event_id = e.id
      WHERE e.tenant_id = $1 ORDER BY l.pos`,
    [tenantId],
  );
  return rows.map((r: { id: string }) => r.id);
}

async function sealedTenant(events = 12): Promise<TenantFixture> {
  const t = await createTenant(app);
  await writeEvents(t.tenantId, events);
  await sealAll([t.tenantId]);
  return t;
}

describe('sealing', () => {
  it('seals every event of a tenant into a chain that an export verifies with the published keys', async () => {
    const t = await sealedTenant(25);
    const lines = await exportOf(t);
    const header = JSON.parse(lines[0]);
    expect(header).toMatchObject({ kind: 'export', format: 'custos-audit/1', chain: `tenant:${t.tenantId}` });
    const events = lines.map((l) => JSON.parse(l)).filter((l) => l.kind === 'event');
    const [{ n }] = await db().query('SELECT count(*)::int AS n FROM audit_events WHERE tenant_id = $1', [
      t.tenantId,
    ]);
    expect(events.length).toBe(n);
    expect(events.map((e) => e.pos)).toEqual(events.map((_e, i) => i + 1));
    const result = await verifyTenant(t);
    expect(result).toMatchObject({ ok: true, summary: { events: n, firstPos: 1, lastPos: n, firstSeq: 1 } });
    // No secret: the export carries what the events carry, and the JWKS only public keys.
    const jwks = (await jwksOf(t)) as { keys: Record<string, unknown>[] };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig' });
    expect(jwks.keys[0].d).toBeUndefined();
    expect(Date.parse(jwks.keys[0].validFrom as string)).not.toBeNaN();
  });

  it('keeps the signing key sealed under the tenant’s data key, never in the clear', async () => {
    const t = await sealedTenant(1);
    const [row] = await db().query('SELECT kid, sealed_key FROM audit_signing_keys WHERE tenant_id = $1', [
      t.tenantId,
    ]);
    expect((row.sealed_key as Buffer).subarray(0, 3).toString('ascii')).toBe('CSE');
    const [event] = await db().query(
      `SELECT details FROM audit_events WHERE tenant_id = $1 AND action = 'audit.signing_key.created'`,
      [t.tenantId],
    );
    expect(event.details).toMatchObject({ kid: row.kid });
  });

  it('never links an event before an earlier transaction still in flight has ended (commit-safe order)', async () => {
    const t = await createTenant(app);
    await sealAll([t.tenantId]);
    const slow = new Client({ connectionString: databaseUrlFor(workerDatabaseName()) });
    await slow.connect();
    try {
      await slow.query('BEGIN');
      const [{ id: slowId }] = (
        await slow.query(
          `INSERT INTO audit_events (tenant_id, action, outcome, actor_type) VALUES ($1, 'slow', 'allowed', 'system') RETURNING id::text AS id`,
          [t.tenantId],
        )
      ).rows;
      await writeEvents(t.tenantId, 1, 'fast');
      await sealer.sealOnce();
      const linked = await db().query(
        `SELECT e.action FROM audit_chain l JOIN audit_events e ON e.id = l.event_id WHERE e.tenant_id = $1 AND e.action IN ('slow', 'fast')`,
        [t.tenantId],
      );
      // The fast event committed, but a transaction older than it is still running: it waits.
      expect(linked).toEqual([]);
      await slow.query('COMMIT');
      await sealAll([t.tenantId]);
      const order = await db().query(
        `SELECT e.id::text AS id, e.action FROM audit_chain l JOIN audit_events e ON e.id = l.event_id
          WHERE e.tenant_id = $1 AND e.action IN ('slow', 'fast') ORDER BY l.pos`,
        [t.tenantId],
      );
      expect(order.map((r: { action: string }) => r.action)).toEqual(['slow', 'fast']);
      expect(order[0].id).toBe(slowId);
    } finally {
      await slow.end();
    }
    expect((await verifyTenant(t)).ok).toBe(true);
  });

  it('links every event of concurrent writers exactly once while sealing runs alongside, with no gaps', async () => {
    const tenants = [await createTenant(app), await createTenant(app)];
    let writing = true;
    const sealing = (async () => {
      while (writing) await sealer.sealOnce();
    })();
    await Promise.all(
      Array.from({ length: 12 }, (_v, w) =>
        (async () => {
          for (let i = 0; i < 25; i++) {
            const t = tenants[(w + i) % 2];
            await db().transaction(async (m) => {
              await audit.record(
                {
                  tenantId: t.tenantId,
                  action: 'load',
                  outcome: 'allowed',
                  actor: systemActor,
                  details: { w, i },
                },
                m,
              );
              if (i % 5 === 0) await m.query('SELECT pg_sleep(0.02)');
            });
          }
        })(),
      ),
    );
    writing = false;
    await sealing;
    await sealAll(tenants.map((t) => t.tenantId));
    for (const t of tenants) {
      const [{ n, linked, maxpos }] = await db().query(
        `SELECT count(*)::int AS n, count(l.event_id)::int AS linked, max(l.pos)::int AS maxpos
           FROM audit_events e LEFT JOIN audit_chain l ON l.event_id = e.id WHERE e.tenant_id = $1`,
        [t.tenantId],
      );
      expect(linked).toBe(n);
      expect(maxpos).toBe(n);
      const result = await verifyTenant(t);
      expect(result).toMatchObject({ ok: true, summary: { events: n } });
    }
  });
});

describe('tampering by someone with direct database access', () => {
  it('an edited field is named', async () => {
    const t = await sealedTenant();
    const ids = await eventIds(t.tenantId);
    await asSuperuser(`UPDATE audit_events SET details = '{"i": 99}' WHERE id = $1`, [ids[4]]);
    expect(await verifyTenant(t)).toMatchObject({ ok: false, eventId: ids[4] });
  });

  it('a deleted event is found where it was removed', async () => {
    const t = await sealedTenant();
    const ids = await eventIds(t.tenantId);
    await asSuperuser('DELETE FROM audit_events WHERE id = $1', [ids[3]]);
    const result = await verifyTenant(t);
    expect(result).toMatchObject({ ok: false, eventId: ids[4] });
    expect(!result.ok && result.problem).toContain('missing');
  });

  it('a forged event written behind the sealer is named', async () => {
    const t = await sealedTenant();
    await asSuperuser(
      `INSERT INTO audit_events (tenant_id, action, outcome, actor_type, tx_id) VALUES ($1, 'forged', 'allowed', 'system', 1)`,
      [t.tenantId],
    );
    const [{ id }] = await db().query(
      `SELECT id::text AS id FROM audit_events WHERE tenant_id = $1 AND action = 'forged'`,
      [t.tenantId],
    );
    const result = await verifyTenant(t);
    expect(result).toMatchObject({ ok: false, eventId: id });
    expect(!result.ok && result.problem).toContain('never sealed');
  });

  it('a forged event given a place in the chain breaks the chain at that event', async () => {
    const t = await sealedTenant();
    const ids = await eventIds(t.tenantId);
    // Moves the last event one position on and puts a forged one in its place, head copied.
    await asSuperuser(
      `WITH f AS (INSERT INTO audit_events (tenant_id, action, outcome, actor_type) VALUES ($1, 'forged', 'allowed', 'system') RETURNING id)
       UPDATE audit_chain SET event_id = (SELECT id FROM f) WHERE event_id = $2`,
      [t.tenantId, ids[ids.length - 1]],
    );
    const [{ id }] = await db().query(
      `SELECT id::text AS id FROM audit_events WHERE tenant_id = $1 AND action = 'forged'`,
      [t.tenantId],
    );
    expect(await verifyTenant(t)).toMatchObject({ ok: false, eventId: id });
  });

  it('two swapped events are named', async () => {
    const t = await sealedTenant();
    const ids = await eventIds(t.tenantId);
    await asSuperuser(
      `UPDATE audit_events a SET details = b.details FROM audit_events b
        WHERE (a.id, b.id) IN (($1::bigint, $2::bigint), ($2::bigint, $1::bigint))`,
      [ids[2], ids[3]],
    );
    expect(await verifyTenant(t)).toMatchObject({ ok: false, eventId: ids[2] });
  });

  it('a truncated tail is found', async () => {
    const t = await sealedTenant();
    const ids = await eventIds(t.tenantId);
    await asSuperuser('DELETE FROM audit_events WHERE id = ANY($1::bigint[])', [ids.slice(-3)]);
    const result = await verifyTenant(t);
    expect(result.ok).toBe(false);
    expect(!result.ok && result.problem).toMatch(/tail was removed|missing/);
  });

  it('a replaced checkpoint fails its signature', async () => {
    const t = await sealedTenant();
    await asSuperuser(
      `UPDATE audit_checkpoints SET body = replace(body, '"count":', '"count":1') WHERE tenant_id = $1 AND seq = 1`,
      [t.tenantId],
    );
    const result = await verifyTenant(t);
    expect(result.ok).toBe(false);
    expect(!result.ok && result.problem).toMatch(/signature|count/);
  });
});

describe('keys, exports and access', () => {
  it('publishes the next key ahead of use, and old checkpoints still verify after the rotation', async () => {
    const t = await sealedTenant(3);
    const [first] = await db().query('SELECT kid FROM audit_signing_keys WHERE tenant_id = $1', [t.tenantId]);
    await db().query(
      `UPDATE audit_signing_keys SET valid_from = now() - interval '100 days' WHERE kid = $1`,
      [first.kid],
    );
    await writeEvents(t.tenantId, 2);
    await sealAll([t.tenantId]);
    const jwks = (await jwksOf(t)) as { keys: { kid: string; validFrom: string; validUntil?: string }[] };
    expect(jwks.keys).toHaveLength(2);
    const [old, next] = jwks.keys;
    expect(old.kid).toBe(first.kid);
    // Published now, signing from a day on; the old key signs until then.
    expect(Date.parse(next.validFrom)).toBeGreaterThan(Date.now() + 23 * 3600_000);
    expect(old.validUntil).toBe(next.validFrom);
    const kids = async () =>
      (await db().query('SELECT DISTINCT kid FROM audit_checkpoints WHERE tenant_id = $1', [t.tenantId])).map(
        (r: { kid: string }) => r.kid,
      );
    expect(await kids()).toEqual([first.kid]);
    // The overlap has passed.
    await db().query(`UPDATE audit_signing_keys SET valid_until = now() WHERE kid = $1`, [old.kid]);
    await db().query(`UPDATE audit_signing_keys SET valid_from = now() WHERE kid = $1`, [next.kid]);
    await writeEvents(t.tenantId, 2);
    await sealAll([t.tenantId]);
    expect((await kids()).sort()).toEqual([old.kid, next.kid].sort());
    const verified = await verifyTenant(t);
    expect(verified.ok || verified.problem).toBe(true);
    // Without the old key, the old checkpoints cannot be verified.
    const onlyNew = {
      keys: ((await jwksOf(t)) as { keys: { kid: string }[] }).keys.filter((k) => k.kid === next.kid),
    };
    expect(await verifyExport(await exportOf(t), onlyNew)).toMatchObject({ ok: false });
  });

  it('replaces, and audits replacing, a signing key that can no longer be opened', async () => {
    const t = await sealedTenant(2);
    const [broken] = await db().query('SELECT kid FROM audit_signing_keys WHERE tenant_id = $1', [
      t.tenantId,
    ]);
    // One bit of the sealed key flipped: its envelope no longer opens.
    await db().query(
      `UPDATE audit_signing_keys SET sealed_key = overlay(sealed_key placing
         decode(lpad(to_hex(get_byte(sealed_key, 70) # 1), 2, '0'), 'hex') from 71 for 1) WHERE kid = $1`,
      [broken.kid],
    );
    await writeEvents(t.tenantId, 2);
    await sealAll([t.tenantId]);
    const jwks = (await jwksOf(t)) as { keys: { kid: string; validUntil?: string }[] };
    expect(jwks.keys.map((k) => k.kid)).toContain(broken.kid);
    expect(jwks.keys).toHaveLength(2);
    expect(jwks.keys.find((k) => k.kid === broken.kid)?.validUntil).toBeDefined();
    const [event] = await db().query(
      `SELECT details FROM audit_events WHERE tenant_id = $1 AND action = 'audit.signing_key.replaced'`,
      [t.tenantId],
    );
    expect(event.details).toMatchObject({ replaces: broken.kid, reason: 'decryption_failed' });
    expect(await verifyTenant(t)).toMatchObject({ ok: true });
  });

  it('exports a time range as whole checkpoints that verify on their own', async () => {
    const t = await sealedTenant(5);
    await new Promise((r) => setTimeout(r, 50));
    const middle = new Date().toISOString();
    await writeEvents(t.tenantId, 5);
    await sealAll([t.tenantId]);
    const lines = await exportOf(t, `?from=${encodeURIComponent(middle)}`);
    const result = await verifyExport(lines, await jwksOf(t));
    expect(result).toMatchObject({ ok: true });
    expect(result.ok && result.summary.firstSeq).toBeGreaterThan(1);
    const bad = await app.request('GET', `/v1/tenants/${t.tenantId}/audit/export?from=yesterday`, {
      key: t.auditorKey,
    });
    expect(bad.status).toBe(400);
  });

  it('lets the tenant’s admin and auditor export, and no one else', async () => {
    const t = await sealedTenant(1);
    const other = await createTenant(app);
    const url = `/v1/tenants/${t.tenantId}/audit/export`;
    expect((await app.request('GET', url, { key: t.adminKey })).status).toBe(200);
    // Another tenant's key learns nothing, not even that the tenant exists.
    expect((await app.request('GET', url, { key: other.auditorKey })).status).toBe(404);
    expect((await app.request('GET', url)).status).toBe(401);
  });

  it('keeps platform events (no tenant) in a chain of their own, for platform admins', async () => {
    // The platform chain of this Jest worker's database is shared with the test files before this one, whose
    // apps each had a root keyring of their own (each replaced the platform key the last one left): the
    // export from this test's start on is what this app alone signed.
    const since = new Date().toISOString();
    await app.request('GET', '/v1/tenants', { key: 'ck_not-a-real-key' });
    await writeEvents(null, 2, 'test.platform');
    await sealAll([null]);
    const res = await app.request('GET', `/v1/audit/platform/export?from=${encodeURIComponent(since)}`, {
      key: app.bootstrapKey,
    });
    expect(res.status).toBe(200);
    const keys = await app.request('GET', '/v1/audit/platform/keys');
    expect(keys.status).toBe(200);
    const lines = res.raw.split('\n').filter(Boolean);
    const result = await verifyExport(lines, keys.body);
    expect(result.ok || result.problem).toBe(true);
    expect(result).toMatchObject({ summary: { chain: 'platform' } });
    expect(lines.some((l) => l.includes('"test.platform"'))).toBe(true);
    const events = await app.request('GET', '/v1/audit/platform/events?limit=500', { key: app.bootstrapKey });
    expect(events.status).toBe(200);
    expect(events.body.items.map((e: { action: string }) => e.action)).toContain('test.platform');
    const t = await createTenant(app);
    expect((await app.request('GET', '/v1/audit/platform/export', { key: t.adminKey })).status).toBe(403);
  });
});
