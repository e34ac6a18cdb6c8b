/**
 * One caller's bad values never fail its neighbours in a batch: the token endpoint's group-committed audit
 * INSERT and its batched decision read isolate the offending rows, and the offender still leaves a trace.
 */
import { AuditBatcher } from '../../../src/audit/audit-batcher.js';
import type { AuditRecord } from '../../../src/audit/audit.service.js';
import { DecisionBatcher } from '../../../src/broker/decision-batcher.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import {
  basicAuth,
  createConnector,
  createTenant,
  importConnection,
  trustIdentityProvider,
  type TenantFixture,
} from '../../support/factories.js';
import { signJwt, startTestIdp, type TestIdp } from '../../support/idp.js';
import { dropAuditTrigger } from '../../support/audit.js';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

let app: TestApp;
let idp: TestIdp;
let a: TenantFixture;
let b: TenantFixture;

const db = () => app.custos.runtime.dataSource;

const event = (tenantId: string, details: Record<string, unknown>, extra: Partial<AuditRecord> = {}) =>
  ({
    tenantId,
    action: 'token.exchange',
    outcome: 'allowed',
    actor: { type: 'connector', id: null },
    subjectUserId: 'someone',
    provider: 'github',
    details,
    ...extra,
  }) satisfies AuditRecord;

async function settle(promises: Promise<unknown>[]) {
  return Promise.allSettled(promises);
}

const eventsWith = async (tenantId: string, marker: string) =>
  db().query<{ outcome: string; subject_user_id: string | null; provider: string | null; details: any }[]>(
    `SELECT outcome, subject_user_id, provider, details FROM audit_events
      WHERE tenant_id = $1 AND details->>'marker' = $2 ORDER BY id`,
    [tenantId, marker],
  );

beforeAll(async () => {
  idp = await startTestIdp();
  app = await startTestApp({ CUSTOS_OUTBOUND_ALLOW_HOSTS: idp.hostPort });
  a = await createTenant(app);
  b = await createTenant(app);
});

afterAll(async () => {
  await app.close();
  await idp.close();
});

describe('AuditBatcher', () => {
  it.each([
    ['a NUL byte', 'evil\u0000agent'],
    ['a lone high surrogate', 'evil\ud800agent'],
    ['a lone low surrogate', 'evil\udc00'],
  ])(
    'commits the other tenant’s events when one event in the batch holds %s, and keeps a marked trace of it',
    async (_what, bad) => {
      const batcher = app.custos.app.get(AuditBatcher);
      const marker = `m-${Math.random().toString(36).slice(2)}`;
      const writes = [
        batcher.write(event(b.tenantId, { marker, n: 1 })),
        batcher.write(event(a.tenantId, { marker, agentClientId: bad, n: 2 })),
        batcher.write(event(b.tenantId, { marker, n: 3 })),
        batcher.write(event(a.tenantId, { marker, n: 4 }, { subjectUserId: bad })),
        batcher.write(event(b.tenantId, { marker, n: 5 })),
      ];
      const results = await settle(writes);
      expect(results.map((r) => r.status)).toEqual([
        'fulfilled',
        'rejected',
        'fulfilled',
        'rejected',
        'fulfilled',
      ]);
      expect((await eventsWith(b.tenantId, marker)).map((e) => e.details.n)).toEqual([1, 3, 5]);
      // The offender's trail exists, its bad values replaced by a marker and its outcome as it was.
      const trail = await eventsWith(a.tenantId, marker);
      expect(trail).toHaveLength(2);
      const [inDetails, inColumn] = trail;
      expect(inDetails.outcome).toBe('allowed');
      expect(inDetails.details).toMatchObject({
        n: 2,
        invalid: true,
        agentClientId: { invalid: true },
        invalidValues: ['details.agentClientId'],
      });
      expect(inColumn.outcome).toBe('allowed');
      expect(inColumn.subject_user_id).toBeNull();
      expect(inColumn.provider).toBe('github');
      expect(inColumn.details).toMatchObject({ n: 4, invalid: true, invalidValues: ['subject_user_id'] });
    },
  );

  it('isolates a row the database refuses as data, commits the rest, and records the refusal', async () => {
    const batcher = app.custos.app.get(AuditBatcher);
    const marker = `m-${Math.random().toString(36).slice(2)}`;
    // A refusal no character check could predict: the database itself rejects one row as bad data.
    await db().query(`CREATE OR REPLACE FUNCTION test_refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.details->>'poison' = 'yes' THEN
        RAISE EXCEPTION 'poisoned row' USING ERRCODE = '22023'; END IF; RETURN NEW; END $$`);
    await db().query(
      `CREATE TRIGGER test_refuse_poison BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION test_refuse_poison()`,
    );
    try {
      const writes = Array.from({ length: 40 }, (_, n) =>
        batcher.write(event(n % 2 ? b.tenantId : a.tenantId, { marker, n, poison: n === 17 ? 'yes' : 'no' })),
      );
      const results = await settle(writes);
      expect(results.filter((r) => r.status === 'rejected')).toHaveLength(1);
      expect(results[17].status).toBe('rejected');
      const written = [...(await eventsWith(a.tenantId, marker)), ...(await eventsWith(b.tenantId, marker))];
      const byN = new Map(written.map((e) => [e.details.n, e]));
      for (let n = 0; n < 40; n++) if (n !== 17) expect(byN.get(n)?.details.poison).toBe('no');
      // The refused event is recorded without its details, with the database's reason.
      const refused = (await eventsWith(b.tenantId, marker)).length;
      expect(refused).toBe(19);
      const trace = await db().query<{ outcome: string; details: Record<string, unknown> }[]>(
        `SELECT outcome, details FROM audit_events WHERE tenant_id = $1 AND details->>'invalid' = 'true'
           AND details->>'sqlstate' = '22023' ORDER BY id DESC LIMIT 1`,
        [b.tenantId],
      );
      expect(trace[0]).toEqual({ outcome: 'allowed', details: { invalid: true, sqlstate: '22023' } });
      // Operators see it: the isolated row and the refused event are counted.
      const metrics = (await app.request('GET', '/metrics')).raw;
      expect(metrics).toMatch(/custos_db_batch_failures_total\{batcher="audit",reason="isolated"\} [1-9]/);
      expect(metrics).toMatch(/custos_audit_events_rejected_total [1-9]/);
    } finally {
      await dropAuditTrigger(db(), 'test_refuse_poison');
    }
  });

  it('fails every caller of a batch the database cannot take at all (not a data problem)', async () => {
    const batcher = app.custos.app.get(AuditBatcher);
    await db().query(`CREATE OR REPLACE FUNCTION test_fail_all() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'disk full' USING ERRCODE = '53100'; END $$`);
    await db().query(
      `CREATE TRIGGER test_fail_all BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION test_fail_all()`,
    );
    try {
      const results = await settle(
        Array.from({ length: 5 }, (_, n) => batcher.write(event(a.tenantId, { n }))),
      );
      expect(results.every((r) => r.status === 'rejected')).toBe(true);
    } finally {
      await dropAuditTrigger(db(), 'test_fail_all');
    }
    await expect(batcher.write(event(a.tenantId, { after: true }))).resolves.toBeUndefined();
  });
});

describe('DecisionBatcher', () => {
  it.each([
    ['a NUL byte', 'alice\u0000'],
    ['a lone surrogate', 'alice\ud800'],
  ])('answers the other lookups of a batch when one key holds %s', async (_what, bad) => {
    const decisions = app.custos.app.get(DecisionBatcher);
    const none = '00000000-0000-4000-8000-000000000000';
    const key = (userId: string, issuer: string | null = null) => ({
      connectorId: none,
      userId,
      provider: 'github',
      issuer,
    });
    const results = await settle([
      decisions.lookup(key('bob')),
      decisions.lookup(key(bad)),
      decisions.lookup(key('carol', `https://idp.example/${bad}`)),
      decisions.lookup(key('dave')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
  });
});

describe('the token endpoint under a tenant sending bad agent ids', () => {
  it('keeps serving the other tenant while the attacker’s requests fail closed and are audited', async () => {
    // Tenant A's connector presents validly signed user tokens whose azp holds NUL or a lone surrogate.
    const setup = async (t: TenantFixture, user: string, accessToken: string) => {
      await trustIdentityProvider(app, t, idp);
      await importConnection(app, t, user, 'github', { type: 'oauth2', accessToken });
      const c = await createConnector(app, t, { name: 'mcp', delegation: 'user_token' });
      return { id: c.id, authorization: basicAuth(c) };
    };
    const goodToken = `gho_b_${Math.random().toString(36).slice(2)}`;
    const attacker = await setup(a, 'mallory', `gho_a_${Math.random().toString(36).slice(2)}`);
    const victim = await setup(b, 'bob', goodToken);
    const exchange = (authorization: string, subjectToken: string) =>
      app.request('POST', '/oauth/token', {
        payload: new URLSearchParams({
          grant_type: EXCHANGE,
          subject_token: subjectToken,
          subject_token_type: JWT_TYPE,
          audience: 'github',
        }).toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization },
      });
    const now = () => Math.floor(Date.now() / 1000);
    const badToken = (azp: string) =>
      signJwt(idp.keys[0], {
        iss: idp.issuer,
        aud: 'custos',
        sub: 'mallory',
        azp,
        iat: now(),
        exp: now() + 300,
      });
    const bobToken = await idp.token({ sub: 'bob' });
    const attacks = [await badToken('agent\u0000x'), await badToken('agent\ud800')];
    for (let round = 0; round < 5; round++) {
      const results = await Promise.all([
        ...attacks.map((t) => exchange(attacker.authorization, t)),
        ...Array.from({ length: 6 }, () => exchange(victim.authorization, bobToken)),
      ]);
      for (const res of results.slice(0, attacks.length)) {
        expect(res.status).not.toBe(200);
        expect(res.body.access_token).toBeUndefined();
      }
      for (const res of results.slice(attacks.length)) {
        expect(res.status).toBe(200);
        expect(res.body.access_token).toBe(goodToken);
      }
    }
    const trail = await db().query<{ n: number }[]>(
      `SELECT count(*)::int AS n FROM audit_events
        WHERE tenant_id = $1 AND action = 'token.exchange' AND actor_id = $2`,
      [a.tenantId, attacker.id],
    );
    expect(trail[0].n).toBeGreaterThanOrEqual(10);
  });
});
