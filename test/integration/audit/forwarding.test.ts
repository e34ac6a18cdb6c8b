/**
 * Forwarding the sealed trail to a SIEM (CUSTOS_AUDIT_FORWARD): signed NDJSON POSTs to a loopback receiver,
 * at least once, retried while the receiver fails, and verifiable on the receiver's side.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AuditForwarder } from '../../../src/audit/audit-forwarder.js';
import { AuditService, systemActor } from '../../../src/audit/audit.service.js';
import { AUDIT_FORMAT, verifyExport } from '../../../src/audit/audit-format.js';
import { ConfigError, loadConfig } from '../../../src/config/config.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { sealFor } from '../../support/audit.js';
import { createTenant } from '../../support/factories.js';

const secret = `siem-${'x'.repeat(40)}-${Math.random().toString(36).slice(2)}`;
let app: TestApp;
let server: http.Server;
let failNext = 0;
const received: { chain: string; body: string; signatureOk: boolean }[] = [];

function signatureOk(header: string | undefined, body: string): boolean {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header ?? '');
  if (!m) return false;
  const want = createHmac('sha256', secret).update(`${m[1]}.${body}`).digest();
  return timingSafeEqual(want, Buffer.from(m[2], 'hex')) && Math.abs(Date.now() / 1000 - Number(m[1])) < 300;
}

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      if (failNext > 0) {
        failNext--;
        res.writeHead(503).end();
        return;
      }
      received.push({
        chain: String(req.headers['custos-audit-chain']),
        body,
        signatureOk: signatureOk(req.headers['custos-signature'] as string | undefined, body),
      });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  app = await startTestApp({
    CUSTOS_AUDIT_SEAL_INTERVAL_MS: '60000',
    CUSTOS_AUDIT_FORWARD: `http://127.0.0.1:${port}/siem`,
    CUSTOS_AUDIT_FORWARD_SECRET: secret,
  });
});
afterAll(async () => {
  await app.close();
  await new Promise((r) => server.close(r));
});

const sealAll = (tenantIds: (string | null)[]) => sealFor(app, tenantIds);

const linesFor = (chain: string) =>
  received
    .filter((r) => r.chain === chain)
    .flatMap((r) => r.body.split('\n'))
    .filter((l) => l !== '');

describe('forwarding to a SIEM', () => {
  it('delivers every sealed event with its checkpoints, signed, in a form the receiver can verify', async () => {
    const t = await createTenant(app);
    const audit = app.custos.app.get(AuditService);
    for (let i = 0; i < 30; i++) {
      await audit.record({
        tenantId: t.tenantId,
        action: 'siem.test',
        outcome: 'allowed',
        actor: systemActor,
      });
    }
    await sealAll([t.tenantId]);
    const chain = `tenant:${t.tenantId}`;
    expect(received.filter((r) => r.chain === chain).length).toBeGreaterThan(0);
    expect(received.every((r) => r.signatureOk)).toBe(true);
    const header = JSON.stringify({
      kind: 'export',
      format: AUDIT_FORMAT,
      chain,
      from: null,
      to: null,
      exportedAt: '',
    });
    const jwks = (await app.request('GET', `/v1/tenants/${t.tenantId}/audit/keys`)).body;
    const result = await verifyExport([header, ...linesFor(chain)], jwks);
    const [{ n }] = await app.custos.runtime.dataSource.query(
      'SELECT count(*)::int AS n FROM audit_events WHERE tenant_id = $1',
      [t.tenantId],
    );
    expect(result).toMatchObject({ ok: true, summary: { events: n, firstSeq: 1 } });
  });

  it('keeps what the receiver refused and delivers it once the receiver is back', async () => {
    const t = await createTenant(app);
    const chain = `tenant:${t.tenantId}`;
    const audit = app.custos.app.get(AuditService);
    failNext = 1000;
    await audit.record({
      tenantId: t.tenantId,
      action: 'siem.retry',
      outcome: 'allowed',
      actor: systemActor,
    });
    await sealAll([t.tenantId]);
    expect(linesFor(chain)).toEqual([]);
    const [{ seq }] = await app.custos.runtime.dataSource.query(
      'SELECT checkpoint_seq::int AS seq FROM audit_chain_heads WHERE chain = $1',
      [chain],
    );
    expect(seq).toBeGreaterThan(0);
    failNext = 0;
    // Past the pause that follows a failure.
    await app.custos.app.get(AuditForwarder).forward(Date.now() + 120_000);
    const lines = linesFor(chain).map((l) => JSON.parse(l) as { kind: string; action?: string });
    expect(lines.filter((l) => l.kind === 'event').map((l) => l.action)).toContain('siem.retry');
    expect(lines.filter((l) => l.kind === 'checkpoint').length).toBe(seq);
  });

  it('refuses a forwarding URL without a signing secret at start', () => {
    expect(() => loadConfig({ CUSTOS_AUDIT_FORWARD: 'https://siem.example.com/in' })).toThrow(ConfigError);
    expect(() => loadConfig({ CUSTOS_AUDIT_FORWARD: 'ftp://siem.example.com/in' })).toThrow(ConfigError);
    expect(loadConfig({ CUSTOS_AUDIT_FORWARD: 'stdout' }).auditForward).toEqual({ to: 'stdout' });
  });
});
