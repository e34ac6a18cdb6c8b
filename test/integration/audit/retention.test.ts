/**
 * Audit retention against the real database: monthly partitions, removal of the months before a cutoff (a
 * dropped partition, and events of a month that had none, in the default partition), the signed truncation
 * record that keeps what remains verifiable (stragglers included), the audit event that records the removal,
 * and the cases where retention must not act: events not sealed yet, and a range that no longer matches its
 * seal. Events "in the past" are written with an explicit occurred_at (and a tenant's own creation events are
 * moved back by a superuser before they are sealed); each test works in months of its own, long ago, so that
 * nothing else in the database is ever before its cutoff.
 */
import { AuditRetention, retentionCutoff } from '../../../src/audit/audit-retention.js';
import { AuditService, systemActor } from '../../../src/audit/audit.service.js';
import { verifyExport, type VerifyResult } from '../../../src/audit/audit-format.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { asSuperuser, sealFor } from '../../support/audit.js';
import { createTenant, type TenantFixture } from '../../support/factories.js';

let app: TestApp;
let retention: AuditRetention;
let audit: AuditService;

const db = () => app.custos.runtime.dataSource;

beforeAll(async () => {
  app = await startTestApp({ CUSTOS_AUDIT_SEAL_INTERVAL_MS: '60000' });
  retention = app.custos.app.get(AuditRetention);
  audit = app.custos.app.get(AuditService);
});
afterAll(() => app.close());

async function writeAt(tenantId: string, occurredAt: string, n: number, action = 'old.event'): Promise<void> {
  for (let i = 0; i < n; i++) {
    await db().query(
      `INSERT INTO audit_events (tenant_id, occurred_at, action, outcome, actor_type, details)
       VALUES ($1, $2, $3, 'allowed', 'system', $4)`,
      [tenantId, occurredAt, action, JSON.stringify({ i })],
    );
  }
}

async function writeNow(tenantId: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await audit.record({
      tenantId,
      action: 'new.event',
      outcome: 'allowed',
      actor: systemActor,
      details: { i },
    });
  }
}

/** A tenant whose own creation events occurred in `month` (moved there before anything is sealed). */
async function tenantFrom(month: string): Promise<TenantFixture> {
  const t = await createTenant(app);
  await asSuperuser(`UPDATE audit_events SET occurred_at = $2 WHERE tenant_id = $1`, [
    t.tenantId,
    `${month}-01T12:00:00Z`,
  ]);
  return t;
}

async function exportOf(t: TenantFixture): Promise<string[]> {
  const res = await app.request('GET', `/v1/tenants/${t.tenantId}/audit/export`, { key: t.auditorKey });
  expect(res.status).toBe(200);
  return res.raw.split('\n').filter((l) => l !== '');
}

async function verifyTenant(t: TenantFixture): Promise<VerifyResult> {
  const jwks = await app.request('GET', `/v1/tenants/${t.tenantId}/audit/keys`);
  return verifyExport(await exportOf(t), jwks.body);
}

/** The tenant's linked events in chain order. */
async function chainOf(t: TenantFixture): Promise<{ id: string; pos: number; old: boolean }[]> {
  const rows = await db().query(
    `SELECT e.id::text AS id, l.pos::int AS pos, e.occurred_at < '2010-01-01' AS old
       FROM audit_events e JOIN audit_chain l ON l.event_id = e.id WHERE e.tenant_id = $1 ORDER BY l.pos`,
    [t.tenantId],
  );
  return rows;
}

const exists = async (table: string) =>
  (await db().query(`SELECT to_regclass($1) IS NOT NULL AS e`, [table]))[0].e as boolean;

describe('audit partitions', () => {
  it('exist for this month and the next three, and a month whose events sit in the default partition gets none', async () => {
    const now = new Date();
    for (let i = 0; i <= 3; i++) {
      const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + i, 1));
      const name = `audit_events_${d.getUTCFullYear()}_${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
      expect(await exists(name)).toBe(true);
    }
    const t = await createTenant(app);
    await writeAt(t.tenantId, '2000-02-10T00:00:00Z', 1);
    const [{ created }] = await db().query(`SELECT custos_audit_partition('2000-02-01') AS created`);
    expect(created).toBe(false);
    expect(await exists('audit_events_2000_02')).toBe(false);
    const [{ n }] = await db().query(
      `SELECT count(*)::int AS n FROM audit_events_default WHERE tenant_id = $1`,
      [t.tenantId],
    );
    expect(n).toBe(1);
    await sealFor(app, [t.tenantId]);
    // Cleared by the next test's retention (its cutoff is later).
  });

  it('keep the current month and the N before it', () => {
    expect(retentionCutoff(new Date('2026-12-04T19:00:00Z'), 12).toISOString()).toBe(
      '2025-12-01T00:00:00.000Z',
    );
    expect(retentionCutoff(new Date('2026-01-31T23:59:59Z'), 1).toISOString()).toBe(
      '2025-12-01T00:00:00.000Z',
    );
    expect(() => retention.apply(new Date('2001-05-02T00:00:00Z'))).toThrow(/first instant of a month/);
  });
});

describe('audit retention', () => {
  it('removes the months before the cutoff and leaves a chain that still verifies, stragglers included', async () => {
    await db().query(`SELECT custos_audit_partition('2001-03-01')`);
    const t = await tenantFrom('2001-03');
    await writeAt(t.tenantId, '2001-03-10T00:00:00Z', 4); // its month's partition
    await writeAt(t.tenantId, '2001-04-20T00:00:00Z', 3); // no partition: the default one
    await writeNow(t.tenantId, 3);
    // Sealed after events of the current month although it occurred before the cutoff: a straggler.
    await writeAt(t.tenantId, '2001-04-30T23:59:59.999999Z', 1, 'straggler');
    await writeNow(t.tenantId, 2);
    await sealFor(app, [t.tenantId]);
    expect(await verifyTenant(t)).toMatchObject({ ok: true });

    const before = await chainOf(t);
    const firstKept = before.find((e) => !e.old)!.pos;
    expect(firstKept).toBeGreaterThan(1);
    const stragglers = before.filter((e) => e.old && e.pos > firstKept).map((e) => e.pos);
    expect(stragglers).toHaveLength(1);
    const kept = before.filter((e) => !e.old);

    const outcome = await retention.apply(new Date('2001-05-01T00:00:00Z'));
    expect(outcome).toMatchObject({ status: 'applied' });
    if (outcome.status !== 'applied') return;
    expect(outcome.run.partitions).toContain('audit_events_2001_03');
    expect(outcome.run.events).toBeGreaterThanOrEqual(before.length - kept.length);
    expect(await exists('audit_events_2001_03')).toBe(false);
    const [{ n }] = await db().query(
      `SELECT count(*)::int AS n FROM audit_events WHERE occurred_at < '2001-05-01'`,
    );
    expect(n).toBe(0);
    // The removed events' links and the checkpoints that covered only them are gone too.
    expect((await chainOf(t)).map((e) => e.pos)).toEqual(kept.map((e) => e.pos));
    const [{ links }] = await db().query(`SELECT count(*)::int AS links FROM audit_chain WHERE chain = $1`, [
      `tenant:${t.tenantId}`,
    ]);
    expect(links).toBe(kept.length);

    const lines = (await exportOf(t)).map((l) => JSON.parse(l));
    expect(lines[1]).toMatchObject({
      kind: 'truncation',
      chain: `tenant:${t.tenantId}`,
      seq: 1,
      cutoff: '2001-05-01T00:00:00.000Z',
      throughPos: firstKept - 1,
      removed: stragglers.map((pos) => ({ pos, entry: expect.stringMatching(/^[0-9a-f]{64}$/) })),
    });
    expect(lines.filter((l) => l.kind === 'event').map((l) => l.id)).toEqual(kept.map((e) => e.id));
    const result = await verifyTenant(t);
    expect(result).toMatchObject({
      ok: true,
      summary: { events: kept.length, truncation: { seq: 1, throughPos: firstKept - 1, removed: 1 } },
    });

    const [event] = await db().query(
      `SELECT outcome, details FROM audit_events WHERE tenant_id IS NULL AND action = 'audit.retention.applied'
        AND details->>'cutoff' = '2001-05-01T00:00:00.000Z'`,
    );
    expect(event).toMatchObject({
      outcome: 'allowed',
      details: { partitions: expect.arrayContaining(['audit_events_2001_03']), chains: expect.any(Number) },
    });

    // Nothing left to remove: a second run with the same cutoff does nothing.
    expect(await retention.apply(new Date('2001-05-01T00:00:00Z'))).toEqual({ status: 'nothing' });

    // What remains is still guarded: a kept event removed by a superuser afterwards is detected.
    const victim = kept[Math.floor(kept.length / 2)];
    await asSuperuser('DELETE FROM audit_events WHERE id = $1', [victim.id]);
    const tampered = await verifyTenant(t);
    expect(tampered.ok).toBe(false);
  });

  it('carries earlier stragglers into the next truncation record, and the chain verifies across both', async () => {
    const t = await tenantFrom('2002-01');
    await writeAt(t.tenantId, '2002-01-15T00:00:00Z', 2);
    await writeNow(t.tenantId, 2);
    await writeAt(t.tenantId, '2002-01-31T23:59:59Z', 1, 'straggler');
    await writeAt(t.tenantId, '2002-02-10T00:00:00Z', 2, 'next.month');
    await writeNow(t.tenantId, 1);
    await sealFor(app, [t.tenantId]);

    const first = await retention.apply(new Date('2002-02-01T00:00:00Z'));
    expect(first).toMatchObject({ status: 'applied' });
    expect(await verifyTenant(t)).toMatchObject({
      ok: true,
      summary: { truncation: { seq: 1, removed: 1 } },
    });

    const second = await retention.apply(new Date('2002-03-01T00:00:00Z'));
    expect(second).toMatchObject({ status: 'applied' });
    const lines = (await exportOf(t)).map((l) => JSON.parse(l));
    const truncation = lines[1];
    expect(truncation).toMatchObject({ kind: 'truncation', seq: 2, cutoff: '2002-03-01T00:00:00.000Z' });
    // The January straggler and the two February events, all sealed after the first kept event.
    expect(truncation.removed).toHaveLength(3);
    expect(lines.filter((l) => l.kind === 'event').every((l) => l.action !== 'straggler')).toBe(true);
    const kept = await chainOf(t);
    // The three events of now, and the signing key's creation (audited when the chain was first sealed).
    expect(kept.every((e) => !e.old)).toBe(true);
    expect(kept).toHaveLength(4);
    const result = await verifyTenant(t);
    expect(result).toMatchObject({ ok: true, summary: { events: 4, truncation: { seq: 2, removed: 3 } } });
  });

  it('waits while an event before the cutoff is not sealed yet, and removes nothing', async () => {
    const t = await createTenant(app);
    await writeAt(t.tenantId, '2003-01-05T00:00:00Z', 1);
    const outcome = await retention.apply(new Date('2003-02-01T00:00:00Z'));
    expect(outcome).toMatchObject({ status: 'waiting', reason: expect.stringMatching(/not sealed yet/) });
    const [{ n }] = await db().query(
      `SELECT count(*)::int AS n FROM audit_events WHERE occurred_at < '2003-02-01'`,
    );
    expect(n).toBe(1);
    await sealFor(app, [t.tenantId]);
    expect(await retention.apply(new Date('2003-02-01T00:00:00Z'))).toMatchObject({ status: 'applied' });
    expect(await verifyTenant(t)).toMatchObject({ ok: true });
  });

  it('refuses to vouch for a range that no longer matches its seal, removes nothing, and audits the refusal', async () => {
    const t = await tenantFrom('2004-01');
    await writeAt(t.tenantId, '2004-01-15T00:00:00Z', 3);
    await writeNow(t.tenantId, 2);
    await sealFor(app, [t.tenantId]);
    const [victim] = await db().query(
      `SELECT id::text AS id FROM audit_events WHERE tenant_id = $1 AND action = 'old.event' ORDER BY id LIMIT 1`,
      [t.tenantId],
    );
    await asSuperuser(`UPDATE audit_events SET action = 'forged' WHERE id = $1`, [victim.id]);

    const outcome = await retention.apply(new Date('2004-02-01T00:00:00Z'));
    expect(outcome).toMatchObject({ status: 'refused', reason: expect.stringContaining(victim.id) });
    const [{ n }] = await db().query(
      `SELECT count(*)::int AS n FROM audit_events WHERE tenant_id = $1 AND occurred_at < '2004-02-01'`,
      [t.tenantId],
    );
    expect(n).toBeGreaterThan(3);
    const [{ records }] = await db().query(
      `SELECT count(*)::int AS records FROM audit_truncations WHERE chain = $1`,
      [`tenant:${t.tenantId}`],
    );
    expect(records).toBe(0);
    const [event] = await db().query(
      `SELECT outcome, details FROM audit_events WHERE tenant_id IS NULL AND action = 'audit.retention.refused'
        AND details->>'eventId' = $1`,
      [victim.id],
    );
    expect(event).toMatchObject({ outcome: 'failed', details: { cutoff: '2004-02-01T00:00:00.000Z' } });
    expect(await verifyTenant(t)).toMatchObject({ ok: false, eventId: victim.id });
    // Leave no tampered range behind for a later file's retention in this database.
    await asSuperuser(
      'DELETE FROM audit_chain WHERE event_id IN (SELECT id FROM audit_events WHERE tenant_id = $1)',
      [t.tenantId],
    );
    await asSuperuser('DELETE FROM audit_events WHERE tenant_id = $1', [t.tenantId]);
  });
});
