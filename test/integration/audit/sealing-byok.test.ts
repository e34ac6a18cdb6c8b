/**
 * A tenant's checkpoint signing key is protected by the tenant's own key backend (here Vault Transit, through
 * the protocol-faithful emulator): with the key unreachable, the tenant's events are still linked but not
 * signed, other tenants are not held up, and everything is signed once the key is back.
 */
import { randomBytes } from 'node:crypto';
import { AuditService, systemActor } from '../../../src/audit/audit.service.js';
import { verifyExport } from '../../../src/audit/audit-format.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { sealFor } from '../../support/audit.js';
import { createTenant, type TenantFixture } from '../../support/factories.js';
import { startVaultEmulator, type VaultEmulator } from '../../emulators/vault-emulator.js';

let app: TestApp;
let vault: VaultEmulator;

beforeAll(async () => {
  vault = await startVaultEmulator();
  app = await startTestApp({
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `127.0.0.1:${vault.port}`,
    CUSTOS_KEY_BACKEND_TIMEOUT_MS: '600',
    CUSTOS_KEY_BACKEND_BREAKER_SECONDS: '1',
    CUSTOS_AUDIT_SEAL_INTERVAL_MS: '60000',
  });
});
afterAll(async () => {
  await app.close();
  await vault.close();
});

async function write(t: TenantFixture, n: number): Promise<void> {
  const audit = app.custos.app.get(AuditService);
  for (let i = 0; i < n; i++) {
    await audit.record({ tenantId: t.tenantId, action: 'byok.test', outcome: 'allowed', actor: systemActor });
  }
}

const sealAll = (tenantIds: (string | null)[]) => sealFor(app, tenantIds);

const pending = async (t: TenantFixture) => {
  const [row] = await app.custos.runtime.dataSource.query(
    'SELECT (pos - checkpointed_pos)::int AS n FROM audit_chain_heads WHERE chain = $1',
    [`tenant:${t.tenantId}`],
  );
  return (row as { n: number } | undefined)?.n ?? 0;
};

async function verify(t: TenantFixture) {
  const exp = await app.request('GET', `/v1/tenants/${t.tenantId}/audit/export`, { key: t.auditorKey });
  const keys = await app.request('GET', `/v1/tenants/${t.tenantId}/audit/keys`);
  return verifyExport(exp.raw.split('\n').filter(Boolean), keys.body);
}

it('signs with a key the tenant’s Vault protects, waits while it is unreachable, and catches up', async () => {
  const byok = await createTenant(app);
  const managed = await createTenant(app);
  const keyName = `custos-${randomBytes(4).toString('hex')}`;
  vault.createTransitKey(keyName);
  const roleId = `role-${randomBytes(6).toString('hex')}`;
  const secretId = randomBytes(24).toString('hex');
  vault.addAppRole(roleId, secretId, ['transit/']);
  const put = await app.request('PUT', `/v1/tenants/${byok.tenantId}/key-backend`, {
    key: byok.adminKey,
    body: { type: 'vault-transit', address: vault.url, keyName, appRole: { roleId, secretId } },
  });
  expect(put.status).toBe(200);
  await write(byok, 3);
  await sealAll([byok.tenantId]);
  expect(await pending(byok)).toBe(0);

  // Cached keys dropped, then the tenant's key made unreachable: its signing key cannot be opened.
  const flush = await app.request('POST', `/v1/tenants/${byok.tenantId}/key-backend/flush`, {
    key: byok.adminKey,
  });
  expect(flush.status).toBe(200);
  vault.removeAppRole(roleId);
  vault.revokeAppRoleTokens(roleId);
  const decryptsBefore = vault.callsByOp['transit.decrypt'] ?? 0;
  await write(byok, 2);
  await write(managed, 2);
  // The managed tenant is sealed and signed meanwhile; the BYOK tenant's events are linked, not signed.
  await sealAll([managed.tenantId]);
  const [{ unlinked }] = await app.custos.runtime.dataSource.query(
    `SELECT count(*)::int AS unlinked FROM audit_events e
      WHERE e.tenant_id = $1 AND NOT EXISTS (SELECT 1 FROM audit_chain l WHERE l.event_id = e.id)`,
    [byok.tenantId],
  );
  expect(unlinked).toBe(0);
  expect(await pending(byok)).toBeGreaterThan(0);
  expect(await pending(managed)).toBe(0);
  expect(app.logs.join('\n')).toContain('could not sign an audit checkpoint');

  vault.addAppRole(roleId, secretId, ['transit/']);
  await new Promise((r) => setTimeout(r, 1100)); // the key backend's breaker closes
  await sealAll([byok.tenantId]);
  expect(await pending(byok)).toBe(0);
  expect(vault.callsByOp['transit.decrypt'] ?? 0).toBeGreaterThan(decryptsBefore);
  expect(await verify(byok)).toMatchObject({ ok: true });
  expect(await verify(managed)).toMatchObject({ ok: true });
});
