/**
 * A data-key migration that fails because the KMS key service restarted with its state gone: it is visible
 * (`migration_failed`, the reason, which side, attempts), audited once per failure episode, retried by the
 * background job with backoff rather than hammering, shown in a metric and never in /readyz (a tenant affects only
 * itself), and an admin can resume it (it completes once the KMS is restored) or cancel it (back to the
 * configuration the unmoved keys are wrapped by, so that reads and writes work again). Real SDK, real emulator.
 */
import { ConnectionsService } from '../../../src/connections/connections.service.js';
import { DataKeyService } from '../../../src/crypto/data-key.service.js';
import { KeyBackendService } from '../../../src/crypto/key-backend.service.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, uniqueSecret, type TenantFixture } from '../../support/factories.js';
import { startKmsEmulator, type KmsEmulator, type KmsEmulatorState } from '../../emulators/kms-emulator.js';
import { randomAwsCredentials } from '../../support/aws.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

let app: TestApp;
let kms: KmsEmulator;
const awsCreds = randomAwsCredentials();

/** The KMS key service restarts on the same address: without `state` it has lost every key. */
async function restartKms(state?: KmsEmulatorState): Promise<void> {
  const port = kms.port;
  await kms.close();
  kms = await startKmsEmulator({ port, credentials: [{ ...awsCreds }], ...(state ? { state } : {}) });
}

beforeAll(async () => {
  kms = await startKmsEmulator({ credentials: [{ ...awsCreds }] });
  app = await startTestApp({
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `127.0.0.1:${kms.port}`,
    CUSTOS_KEY_BACKEND_TIMEOUT_MS: '1000',
  });
});
afterAll(async () => {
  await app.close();
  await kms.close();
});

const service = () => app.custos.app.get(KeyBackendService);
const db = () => app.custos.runtime.dataSource;
const read = (t: TenantFixture, id: string) =>
  app.custos.app.get(ConnectionsService).openCredential(t.tenantId, id);
const view = async (t: TenantFixture) =>
  (await app.request('GET', `/v1/tenants/${t.tenantId}/key-backend`, { key: t.auditorKey })).body;
const auditActions = async (t: TenantFixture): Promise<string[]> =>
  (
    await db().query(
      `SELECT action FROM audit_events WHERE tenant_id = $1 AND action LIKE 'key_backend.%' ORDER BY id`,
      [t.tenantId],
    )
  ).map((r: { action: string }) => r.action);

async function putCredential(t: TenantFixture, user: string) {
  const secret = uniqueSecret('tok');
  const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/users/${user}/connections/github`, {
    key: t.adminKey,
    body: { type: 'oauth2', accessToken: secret },
  });
  return { status: res.status, id: res.body?.id as string, secret };
}

/**
 * A tenant on the managed keyring with two epochs of credentials moves to a KMS key; right after the migration
 * has moved the first data key, the KMS restarts with its state gone. `snapshot` receives the KMS's state from
 * just before (its backup).
 */
async function switchToKmsThatLosesItsState(snapshot?: (state: KmsEmulatorState) => void) {
  const t = await createTenant(app);
  const c1 = await putCredential(t, 'u1');
  await service().rotateTenantKey({ type: 'system', id: null }, t.tenantId);
  const c2 = await putCredential(t, 'u2');
  const key = kms.createKey();
  const svc = service() as unknown as { migrate: KeyBackendService['migrate'] };
  const original = svc.migrate.bind(service());
  let restarted = false;
  svc.migrate = (tenantId, opts = {}) =>
    original(tenantId, {
      ...opts,
      beforeWrite: async () => {
        if (restarted) return;
        restarted = true;
        snapshot?.(kms.snapshot());
        await restartKms();
      },
    });
  try {
    const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/key-backend`, {
      key: t.adminKey,
      body: {
        type: 'aws-kms',
        keyId: key.arn,
        region: 'us-east-1',
        endpoint: kms.url,
        credentials: awsCreds,
      },
    });
    expect(res.status).toBe(200);
    await service().settled(t.tenantId);
  } finally {
    svc.migrate = original;
  }
  expect(restarted).toBe(true);
  return { t, c1, c2 };
}

describe('a key migration whose KMS restarted with its state gone', () => {
  it('is visible with its reason, audited once, retried with backoff, and leaves /readyz ready', async () => {
    const { t } = await switchToKmsThatLosesItsState();
    const failed = await view(t);
    expect(failed).toMatchObject({
      type: 'aws-kms',
      status: 'migration_failed',
      // Epoch 1 moved before the restart, epoch 3 was made on the new key; epoch 2 could not be wrapped.
      dataKeys: { total: 3, onCurrentBackend: 2 },
      migration: {
        attempts: 1,
        lastError: { code: 'key_unavailable', reason: 'not_found', side: 'target' },
      },
    });
    expect(failed.migration.failingSince).toEqual(expect.any(String));
    const firstDelay =
      Date.parse(failed.migration.nextAttemptAt) - Date.parse(failed.migration.lastAttemptAt);
    expect(firstDelay).toBeGreaterThan(0);
    expect(await auditActions(t)).toEqual([
      'key_backend.rotated',
      'key_backend.configured',
      'key_backend.migration_failed',
    ]);
    const [event] = await db().query(
      `SELECT outcome, actor_type, details FROM audit_events WHERE tenant_id = $1 AND action = $2`,
      [t.tenantId, 'key_backend.migration_failed'],
    );
    expect(event).toMatchObject({
      outcome: 'failed',
      actor_type: 'system',
      details: { reason: 'not_found', side: 'target', remaining: 1 },
    });

    // The symptom of the report: new secrets go under the lost key, so writes answer 503...
    app.custos.app.get(DataKeyService).flushTenant(t.tenantId);
    const write = await putCredential(t, 'w1');
    expect(write.status).toBe(503);
    // ...which is this tenant's problem, not the deployment's.
    const ready = await app.request('GET', '/readyz');
    expect(ready.status).toBe(200);
    const metrics = await app.request('GET', '/metrics');
    expect(Number(/^custos_key_migrations_failing (\d+)$/m.exec(metrics.raw)?.[1])).toBeGreaterThanOrEqual(1);
    expect(metrics.raw).not.toContain(t.tenantId);

    // The background job leaves it alone until the backoff has passed...
    expect(await service().tenantsMigrating()).not.toContain(t.tenantId);
    // ...and each retry that fails again waits longer, without another audit event.
    const again = await service().migrate(t.tenantId);
    expect(again).toMatchObject({
      migrated: 0,
      remaining: 1,
      failure: { reason: 'not_found', side: 'target' },
    });
    const retried = await view(t);
    expect(retried.migration.attempts).toBe(2);
    expect(retried.migration.failingSince).toBe(failed.migration.failingSince);
    expect(
      Date.parse(retried.migration.nextAttemptAt) - Date.parse(retried.migration.lastAttemptAt),
    ).toBeGreaterThan(firstDelay);
    expect((await auditActions(t)).filter((a) => a === 'key_backend.migration_failed')).toHaveLength(1);
  });

  it('can be cancelled: back to the keyring the unmoved keys are on, and reads and writes work again', async () => {
    const { t, c2 } = await switchToKmsThatLosesItsState();
    const denied = await app.request('POST', `/v1/tenants/${t.tenantId}/key-backend/migration/cancel`, {
      key: t.auditorKey,
    });
    expect(denied.status).toBe(403);

    const res = await app.request('POST', `/v1/tenants/${t.tenantId}/key-backend/migration/cancel`, {
      key: t.adminKey,
    });
    expect(res.status).toBe(200);
    expect(res.body.type).toBe('managed');
    await service().settled(t.tenantId);
    app.custos.app.get(DataKeyService).flushTenant(t.tenantId);
    expect((await read(t, c2.id)).secret).toBe(c2.secret);
    const fresh = await putCredential(t, 'after-cancel');
    expect(fresh.status).toBe(201);
    app.custos.app.get(DataKeyService).flushTenant(t.tenantId);
    expect((await read(t, fresh.id)).secret).toBe(fresh.secret);

    // The keys that had reached the lost KMS key stay visible as stranded there (the source side now).
    expect(await view(t)).toMatchObject({
      type: 'managed',
      status: 'migration_failed',
      migration: { lastError: { reason: 'not_found', side: 'source' } },
    });
    const [cancelled] = await db().query(
      `SELECT actor_type, actor_id, details FROM audit_events WHERE tenant_id = $1 AND action = $2`,
      [t.tenantId, 'key_backend.migration_cancelled'],
    );
    expect(cancelled).toMatchObject({
      actor_type: 'admin_key',
      details: { type: 'managed', previousType: 'aws-kms', keysOnCancelledConfiguration: 2 },
    });
    expect(JSON.stringify(cancelled)).not.toContain(awsCreds.secretAccessKey);
  });

  it('can be resumed: it fails again while the KMS is empty, and completes once its state is restored', async () => {
    let backup: KmsEmulatorState | undefined;
    const { t, c1, c2 } = await switchToKmsThatLosesItsState((s) => (backup = s));
    const early = await app.request('POST', `/v1/tenants/${t.tenantId}/key-backend/migration/resume`, {
      key: t.adminKey,
    });
    expect(early.status).toBe(200);
    expect(early.body).toMatchObject({ status: 'migration_failed', migration: { attempts: 1 } });

    await restartKms(backup);
    const res = await app.request('POST', `/v1/tenants/${t.tenantId}/key-backend/migration/resume`, {
      key: t.adminKey,
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      type: 'aws-kms',
      status: 'active',
      dataKeys: { total: 3, onCurrentBackend: 3 },
      migration: null,
    });
    app.custos.app.get(DataKeyService).flushTenant(t.tenantId);
    for (const c of [c1, c2]) expect((await read(t, c.id)).secret).toBe(c.secret);
    expect((await putCredential(t, 'after-resume')).status).toBe(201);
    expect(await auditActions(t)).toEqual([
      'key_backend.rotated',
      'key_backend.configured',
      'key_backend.migration_failed',
      'key_backend.migration_resumed',
      // The resume began a new episode, which failed once more while the KMS was empty.
      'key_backend.migration_failed',
      'key_backend.migration_resumed',
      'key_backend.migrated',
    ]);

    // Nothing left to resume or cancel.
    for (const action of ['resume', 'cancel']) {
      const none = await app.request('POST', `/v1/tenants/${t.tenantId}/key-backend/migration/${action}`, {
        key: t.adminKey,
      });
      expect({ status: none.status, error: none.body.error }).toEqual({ status: 409, error: 'conflict' });
    }
  });
});
