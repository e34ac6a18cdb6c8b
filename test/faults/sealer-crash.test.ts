/**
 * A sealer killed with SIGKILL in the middle of a batch resumes without double-sealing or gaps. Three real worker
 * processes (started from source together, sealing every 100 ms, taking turns by the sealer's lock) work through
 * a backlog of 40,000 events; each in turn is killed while it holds the lock and its linking transaction has
 * written, once a batch has been committed since the last kill. The in-process sealer then finishes.
 * Every event has exactly one place in its chain, positions run 1..n in commit-safe order, each checkpoint
 * continues the one before, and the exports verify.
 *
 * In a database of its own: the platform chain's signing key is sealed by the root keyring of whichever app
 * signed its first checkpoint, so in the worker's shared database another file's app would hold it; and this
 * file's events would stay behind for the files after it.
 */
import { SEAL_LOCK } from '../../src/audit/audit-chain.repository.js';
import { AuditSealer, SEAL_BATCH } from '../../src/audit/audit-sealer.js';
import { AuditService, systemActor } from '../../src/audit/audit.service.js';
import { chainOf, verifyExport, type VerifyResult } from '../../src/audit/audit-format.js';
import { RootKeyring } from '../../src/common/root-keyring.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { asAdmin, databaseUrlFor, workerDatabaseName } from '../support/env.js';
import { createTenant, type TenantFixture } from '../support/factories.js';
import { spawnCustos, type CustosProcess } from '../support/processes.js';

const TAG = 'test.crash-backlog';
/**
 * Two hundred linking batches (SEAL_BATCH events each): each kill takes about two (one committed since the
 * last, one lost), three six; the rest leave time to catch a sealer mid-batch on a fast, idle machine too.
 */
const BACKLOG = 200_000;
/** Inserted in this many transactions, so that the backlog spans several tx_id values. */
const BACKLOG_TXS = 4;
const KILLS = 3;

// The same root keyring in the test's app and in the processes: they open the signing keys the others made.
const rootKeys = RootKeyring.generateSpec();
// Named like the run's own databases (custos_test_<run>_<n>, n past the workers'), so that if this file dies
// before dropping it, a later run's global set-up drops it as one left by a finished run.
const dbName = workerDatabaseName().replace(/\d+$/, (n) => String(900 + Number(n)));
const dbUrl = databaseUrlFor(dbName);
let app: TestApp;
let sealer: AuditSealer;
let audit: AuditService;
const procs: CustosProcess[] = [];

const db = () => app.custos.runtime.dataSource;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  await asAdmin(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
  await asAdmin(`CREATE DATABASE "${dbName}"`);
  app = await startTestApp({
    DATABASE_URL: dbUrl,
    CUSTOS_AUDIT_SEAL_INTERVAL_MS: '60000',
    CUSTOS_ROOT_KEYS: rootKeys,
  });
  sealer = app.custos.app.get(AuditSealer);
  audit = app.custos.app.get(AuditService);
  // Its timer would fire a minute in; while the processes run, they must be the only sealers. sealOnce()
  // still runs on demand.
  await sealer.stop();
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await app?.close();
  await asAdmin(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
});

async function writeEvents(tenantId: string | null, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await audit.record({
      tenantId,
      action: 'test.event',
      outcome: 'allowed',
      actor: systemActor,
      details: { i },
    });
  }
}

/**
 * Seals in-process until every event is linked and every chain signed. A run may link nothing while a
 * transaction anywhere in the cluster (other test runs share it) is older than the events, so an idle run is
 * not the end.
 */
async function sealAll(): Promise<void> {
  const until = Date.now() + 30_000;
  for (;;) {
    const r = await sealer.sealOnce();
    expect(r.failed).toBe(0);
    const [{ unlinked, unsigned }] = await db().query(
      `SELECT (SELECT count(*)::int FROM audit_events e
                WHERE NOT EXISTS (SELECT 1 FROM audit_chain l WHERE l.event_id = e.id)) AS unlinked,
              (SELECT count(*)::int FROM audit_chain_heads WHERE pos > checkpointed_pos) AS unsigned`,
    );
    if (unlinked === 0 && unsigned === 0) return;
    if (Date.now() > until) {
      throw new Error(`the sealer did not finish: ${unlinked} events unlinked, ${unsigned} chains unsigned`);
    }
    if (r.linked === 0 && r.checkpoints === 0) await sleep(50);
  }
}

async function insertBacklog(tenantIds: (string | null)[]): Promise<void> {
  const per = BACKLOG / BACKLOG_TXS;
  for (let t = 0; t < BACKLOG_TXS; t++) {
    // One statement, one transaction: its events share one tx_id.
    await db().query(
      `INSERT INTO audit_events (tenant_id, action, outcome, actor_type, details)
       SELECT ($1::uuid[])[1 + g % cardinality($1::uuid[])], $2, 'allowed', 'system', jsonb_build_object('g', g)
         FROM generate_series($3::int, $4::int) g`,
      [tenantIds, TAG, t * per + 1, (t + 1) * per],
    );
  }
  const [{ n, txs }] = await db().query(
    'SELECT count(*)::int AS n, count(DISTINCT tx_id)::int AS txs FROM audit_events WHERE action = $1',
    [TAG],
  );
  expect({ n, txs }).toEqual({ n: BACKLOG, txs: BACKLOG_TXS });
}

/**
 * A worker that seals every 100 ms; its database sessions carry its name (application_name). Three start from
 * source at once, on a machine other test runs share: they are given two minutes.
 */
function startSealer(name: string): Promise<CustosProcess> {
  const url = new URL(dbUrl);
  url.searchParams.set('application_name', name);
  return spawnCustos(
    name,
    {
      CUSTOS_ROLE: 'worker',
      DATABASE_URL: url.toString(),
      CUSTOS_MIGRATIONS_RUN: 'false',
      CUSTOS_ROOT_KEYS: rootKeys,
      CUSTOS_BOOTSTRAP_ADMIN_KEY: app.bootstrapKey,
      CUSTOS_AUDIT_SEAL_INTERVAL_MS: '100',
      CUSTOS_DB_POOL_SIZE: '4',
    },
    120_000,
  );
}

interface Progress {
  /** Backlog events with a committed link. */
  linked: number;
  /** The application_name of the session holding the sealer's lock (a linking transaction is open), if any. */
  holder: string | null;
  /** Whether the holder's transaction has written already (it has a transaction id: links, heads, cursor). */
  writing: boolean;
}

async function progress(): Promise<Progress> {
  const [row] = await db().query<Progress[]>(
    `SELECT (SELECT count(*)::int FROM audit_chain l JOIN audit_events e ON e.id = l.event_id
              WHERE e.action = $1) AS linked,
            a.application_name AS holder, coalesce(a.backend_xid IS NOT NULL, false) AS writing
       FROM (SELECT 1) one
       LEFT JOIN pg_locks k ON k.locktype = 'advisory' AND k.granted AND k.classid = 0 AND k.objid = $2::oid
            AND k.objsubid = 1 AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       LEFT JOIN pg_stat_activity a ON a.pid = k.pid`,
    [TAG, SEAL_LOCK],
  );
  return row;
}

async function sessionsOf(name: string): Promise<number> {
  const [{ n }] = await db().query(
    'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1',
    [name],
  );
  return n;
}

/** What was linked when a process was killed, and once its sessions were gone. */
interface Kill {
  victim: string;
  since: number;
  atKill: Progress;
  after: number;
}

/**
 * Waits until one of the live processes holds the sealer's lock with a written, uncommitted batch, a batch
 * having been committed since `since` and the backlog not done; SIGKILLs it, and waits for its sessions to go
 * (the server rolls its transaction back). A process counts once it listens: during its start-up it may hold
 * the same lock key for another purpose (AdminKeysRepository.lockBootstrap uses it too).
 */
async function killMidBatch(
  live: Map<string, CustosProcess>,
  since: number,
  failed: unknown[],
): Promise<Kill> {
  const until = Date.now() + 150_000;
  for (;;) {
    if (failed.length) throw failed[0];
    const at = await progress();
    if (at.holder && live.has(at.holder) && at.writing && at.linked > since && at.linked < BACKLOG) {
      const victim = live.get(at.holder)!;
      live.delete(victim.name);
      await victim.kill9();
      for (let i = 0; (await sessionsOf(victim.name)) > 0; i++) {
        if (i > 1000) throw new Error(`${victim.name}'s sessions outlived it by 10 s`);
        await sleep(10);
      }
      return { victim: victim.name, since, atKill: at, after: (await progress()).linked };
    }
    if (at.linked === BACKLOG) throw new Error('the backlog was linked before a kill landed mid-batch');
    if (Date.now() > until)
      throw new Error(`no sealer was caught mid-batch within 150 s: ${JSON.stringify(at)}`);
    await sleep(5);
  }
}

async function verifyTenant(t: TenantFixture): Promise<VerifyResult> {
  const res = await app.request('GET', `/v1/tenants/${t.tenantId}/audit/export`, { key: t.auditorKey });
  expect(res.status).toBe(200);
  const keys = await app.request('GET', `/v1/tenants/${t.tenantId}/audit/keys`);
  expect(keys.status).toBe(200);
  return verifyExport(res.raw.split('\n').filter(Boolean), keys.body);
}

async function verifyPlatform(): Promise<VerifyResult> {
  const res = await app.request('GET', '/v1/audit/platform/export', { key: app.bootstrapKey });
  expect(res.status).toBe(200);
  const keys = await app.request('GET', '/v1/audit/platform/keys');
  expect(keys.status).toBe(200);
  return verifyExport(res.raw.split('\n').filter(Boolean), keys.body);
}

describe('a sealer killed with SIGKILL mid-batch', () => {
  it('is taken over where its last committed batch ended: every event sealed once, no gaps, exports verify', async () => {
    const tenants = [await createTenant(app), await createTenant(app), await createTenant(app)];
    const tenantIds = [...tenants.map((t) => t.tenantId), null];
    const chains = tenantIds.map(chainOf);
    // A checkpoint before the backlog, so that the ones after the crashes have one to continue.
    for (const id of tenantIds) await writeEvents(id, 3);
    await sealAll();
    await insertBacklog(tenantIds);

    // Killed as they come up: the first one up may be killed before the others listen, which then take over.
    const live = new Map<string, CustosProcess>();
    const failed: unknown[] = [];
    const starting = Array.from({ length: KILLS }, async (_v, i) => {
      try {
        const p = await startSealer(`sealer-${i + 1}`);
        procs.push(p);
        live.set(p.name, p);
      } catch (err) {
        failed.push(err);
      }
    });
    const kills: Kill[] = [];
    try {
      for (let since = 0; kills.length < KILLS; since = kills[kills.length - 1].after) {
        kills.push(await killMidBatch(live, since, failed));
      }
    } finally {
      await Promise.all(starting);
    }
    expect(new Set(kills.map((k) => k.victim)).size).toBe(KILLS);
    for (const k of kills) {
      // What was committed before the kill stays; the open batch is lost whole, or had just committed.
      expect(k.after).toBeGreaterThanOrEqual(k.atKill.linked);
      expect(k.after - k.atKill.linked).toBeLessThanOrEqual(SEAL_BATCH);
    }
    // At least one took a written, uncommitted batch down with it (another may have raced its commit).
    expect(kills.filter((k) => k.after === k.atKill.linked).length).toBeGreaterThanOrEqual(1);
    for (const p of procs) {
      expect(p.logs.filter((l) => /^(audit sealing failed|could not sign)/.test(l.msg ?? ''))).toEqual([]);
    }

    await sealAll();
    // And the chains carry on normally afterwards.
    for (const id of tenantIds) await writeEvents(id, 2);
    await sealAll();
    expect(app.logs.filter((l) => /audit sealing failed|could not sign/.test(l))).toEqual([]);

    const [links] = await db().query(
      `SELECT count(*)::int AS events, count(l.event_id)::int AS linked,
              count(*) FILTER (WHERE e.action = $2)::int AS backlog,
              count(*) FILTER (WHERE l.chain IS DISTINCT FROM
                CASE WHEN e.tenant_id IS NULL THEN 'platform' ELSE 'tenant:' || e.tenant_id END)::int AS misplaced
         FROM audit_events e LEFT JOIN audit_chain l ON l.event_id = e.id
        WHERE e.tenant_id = ANY($1::uuid[]) OR e.tenant_id IS NULL`,
      [tenantIds, TAG],
    );
    expect(links.linked).toBe(links.events);
    expect(links.backlog).toBe(BACKLOG);
    expect(links.misplaced).toBe(0);
    const twice = await db().query(
      'SELECT event_id FROM audit_chain WHERE chain = ANY($1) GROUP BY event_id HAVING count(*) > 1',
      [chains],
    );
    expect(twice).toEqual([]);

    // Positions 1..n with none missing or repeated, in the events' commit-safe (tx_id, id) order.
    const positions = await db().query(
      `SELECT chain, count(*)::int AS n, count(DISTINCT pos)::int AS distinct_pos, min(pos)::int AS first,
              max(pos)::int AS last, bool_and(pos = rn) AS in_order
         FROM (SELECT l.chain, l.pos, row_number() OVER (PARTITION BY l.chain ORDER BY e.tx_id, e.id) AS rn
                 FROM audit_chain l JOIN audit_events e ON e.id = l.event_id WHERE l.chain = ANY($1)) x
        GROUP BY chain ORDER BY chain`,
      [chains],
    );
    const heads = await db().query(
      `SELECT chain, pos::int AS pos, checkpointed_pos::int AS checkpointed FROM audit_chain_heads
        WHERE chain = ANY($1) ORDER BY chain`,
      [chains],
    );
    expect(positions).toHaveLength(chains.length);
    const chainLength = new Map<string, number>();
    for (const p of positions) {
      const { chain, n } = p;
      expect(p).toEqual({ chain, n, distinct_pos: n, first: 1, last: n, in_order: true });
      chainLength.set(chain, n);
    }
    expect(heads).toEqual(
      positions.map((p: { chain: string; n: number }) => ({ chain: p.chain, pos: p.n, checkpointed: p.n })),
    );

    // Checkpoints: seq 1..k, each starting right after the one before, the last ending at the head.
    const checkpoints = await db().query<{ chain: string; seq: number; first: number; last: number }[]>(
      `SELECT chain, seq::int AS seq, first_pos::int AS first, last_pos::int AS last FROM audit_checkpoints
        WHERE chain = ANY($1) ORDER BY chain, seq`,
      [chains],
    );
    for (const chain of chains) {
      const mine = checkpoints.filter((c) => c.chain === chain);
      expect(mine.length).toBeGreaterThanOrEqual(3);
      mine.forEach((c, i) => {
        expect(c.seq).toBe(i + 1);
        expect(c.first).toBe(i === 0 ? 1 : mine[i - 1].last + 1);
        expect(c.last).toBeGreaterThanOrEqual(c.first);
      });
      expect(mine[mine.length - 1].last).toBe(chainLength.get(chain));
    }

    for (const t of tenants) {
      const n = chainLength.get(chainOf(t.tenantId));
      expect(await verifyTenant(t)).toMatchObject({
        ok: true,
        summary: { events: n, firstPos: 1, lastPos: n },
      });
    }
    const n = chainLength.get('platform');
    expect(await verifyPlatform()).toMatchObject({
      ok: true,
      summary: { events: n, firstPos: 1, lastPos: n },
    });
  }, 240_000);
});
