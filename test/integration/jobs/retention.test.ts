/**
 * Tables that traffic fills are pruned by background jobs, so that they follow the rate of requests instead of
 * growing with it: connect sessions (one per `consent_required` answer) are deleted an hour after they expire,
 * and used client assertions once they expire, in batches until none is left.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { UsedAssertionsRepository } from '../../../src/identity/used-assertions.repository.js';
import { ConnectSessionsService } from '../../../src/connect/connect-sessions.service.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, saveProviderApp, type TenantFixture } from '../../support/factories.js';

let app: TestApp;
let t: TenantFixture;

const db = () => app.custos.runtime.dataSource;

async function session(userId: string): Promise<string> {
  const res = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
    key: t.adminKey,
    body: { userId, provider: 'github' },
  });
  expect(res.status).toBe(201);
  return res.body.id as string;
}

async function expiredAgo(id: string, seconds: number): Promise<void> {
  await db().query(
    'UPDATE connect_sessions SET expires_at = now() - make_interval(secs => $2) WHERE id = $1',
    [id, seconds],
  );
}

beforeAll(async () => {
  app = await startTestApp();
  t = await createTenant(app);
  await saveProviderApp(app, t, 'github', { client_id: 'gh-app', client_secret: 'gh-app-secret' });
});

afterAll(async () => {
  await app?.close();
});

it('deletes connect sessions an hour after they expired, and keeps the others readable', async () => {
  const [old, oldCompleted, recent, live] = await Promise.all([
    session('old'),
    session('old-completed'),
    session('recent'),
    session('live'),
  ]);
  await expiredAgo(old, 2 * 3600);
  await db().query("UPDATE connect_sessions SET status = 'completed', completed_at = now() WHERE id = $1", [
    oldCompleted,
  ]);
  await expiredAgo(oldCompleted, 3601 + 60);
  await expiredAgo(recent, 30 * 60);

  expect(await app.custos.app.get(ConnectSessionsService).pruneExpired()).toBeGreaterThanOrEqual(2);

  const left = await db().query('SELECT id FROM connect_sessions WHERE id = ANY($1)', [
    [old, oldCompleted, recent, live],
  ]);
  expect(left.map((r: { id: string }) => r.id).sort()).toEqual([recent, live].sort());
  const get = (id: string) =>
    app.request('GET', `/v1/tenants/${t.tenantId}/connect/sessions/${id}`, { key: t.adminKey });
  expect((await get(old)).status).toBe(404);
  expect((await get(recent)).body.status).toBe('expired');
  expect((await get(live)).body.status).toBe('pending');
});

it('removes every expired client assertion in one run, past one batch', async () => {
  const connectorId = randomUUID();
  const expired = 25_000;
  await db().query(
    `INSERT INTO client_assertions_used (connector_id, jti_hash, expires_at)
     SELECT $1, decode(md5(random()::text || g::text), 'hex'), now() - interval '1 minute'
       FROM generate_series(1, $2) g`,
    [connectorId, expired],
  );
  const live = randomBytes(16);
  await db().query(
    `INSERT INTO client_assertions_used (connector_id, jti_hash, expires_at) VALUES ($1, $2, now() + interval '5 minutes')`,
    [connectorId, live],
  );

  expect(await app.custos.app.get(UsedAssertionsRepository).pruneExpired()).toBeGreaterThanOrEqual(expired);

  const [r] = await db().query(
    'SELECT count(*)::int AS n, count(*) FILTER (WHERE expires_at > now())::int AS live FROM client_assertions_used WHERE connector_id = $1',
    [connectorId],
  );
  expect(r).toEqual({ n: 1, live: 1 });
});
