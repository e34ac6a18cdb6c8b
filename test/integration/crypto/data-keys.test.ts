import { ConnectionsService } from '../../../src/connections/connections.service.js';
import { DataKeyService } from '../../../src/crypto/data-key.service.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, importConnection, uniqueSecret } from '../../support/factories.js';

describe('tenant data keys', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startTestApp();
  });
  afterAll(() => app.close());

  const put = (tenantId: string, key: string, user: string, apiKey: string) =>
    app.request('PUT', `/v1/tenants/${tenantId}/users/${user}/connections/openai`, {
      key,
      body: { type: 'api_key', apiKey },
    });

  it('creates exactly one first epoch when many writes race on a new tenant', async () => {
    const t = await createTenant(app);
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => put(t.tenantId, t.adminKey, `u${i}`, uniqueSecret('k'))),
    );
    expect(results.every((r) => r.status === 201)).toBe(true);
    const keys = await app.custos.runtime.dataSource.query(
      'SELECT epoch FROM data_keys WHERE tenant_id = $1',
      [t.tenantId],
    );
    expect(keys).toEqual([{ epoch: 1 }]);
  });

  it('reads many credentials with one unwrap per data key while the cache is warm', async () => {
    const t = await createTenant(app);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++)
      ids.push((await put(t.tenantId, t.adminKey, `r${i}`, uniqueSecret('k'))).body.id);
    const dataKeys = app.custos.app.get(DataKeyService);
    const connections = app.custos.app.get(ConnectionsService);
    dataKeys.flushTenant(t.tenantId);
    const before = dataKeys.unwrapCalls;
    for (let round = 0; round < 5; round++)
      await Promise.all(ids.map((id) => connections.openCredential(t.tenantId, id)));
    expect(dataKeys.unwrapCalls - before).toBe(1);
  });

  it('rotates to a new epoch when the current data key is past its age, and still opens older secrets', async () => {
    const t = await createTenant(app);
    const oldSecret = uniqueSecret('old');
    const old = await put(t.tenantId, t.adminKey, 'aging', oldSecret);
    const ds = app.custos.runtime.dataSource;
    await ds.query(`UPDATE data_keys SET created_at = now() - interval '400 days' WHERE tenant_id = $1`, [
      t.tenantId,
    ]);
    const dataKeys = app.custos.app.get(DataKeyService);
    dataKeys.flushTenant(t.tenantId);
    const fresh = await put(t.tenantId, t.adminKey, 'young', uniqueSecret('new'));
    const rows = await ds.query(
      'SELECT epoch, retired_at FROM data_keys WHERE tenant_id = $1 ORDER BY epoch',
      [t.tenantId],
    );
    expect(rows.map((r: { epoch: number }) => r.epoch)).toEqual([1, 2]);
    expect(rows[0].retired_at).not.toBeNull();
    expect(rows[1].retired_at).toBeNull();
    const [oldRow, freshRow] = await Promise.all(
      [old.body.id, fresh.body.id].map(
        async (id) => (await ds.query('SELECT data_key_id FROM connections WHERE id = $1', [id]))[0],
      ),
    );
    expect(oldRow.data_key_id).not.toBe(freshRow.data_key_id);
    const opened = await app.custos.app.get(ConnectionsService).openCredential(t.tenantId, old.body.id);
    expect(opened.secret).toBe(oldSecret);
  });

  it('never stores a data key unwrapped', async () => {
    const t = await createTenant(app);
    await put(t.tenantId, t.adminKey, 'w', uniqueSecret('k'));
    const dataKeys = app.custos.app.get(DataKeyService);
    const { key } = await dataKeys.sealingKey(t.tenantId);
    const rows = await app.custos.runtime.dataSource.query(
      'SELECT wrapped FROM data_keys WHERE tenant_id = $1',
      [t.tenantId],
    );
    expect(rows[0].wrapped.includes(key)).toBe(false);
    expect(rows[0].wrapped.subarray(0, 3).toString()).toBe('CMK');
  });

  it('refuses to open a data key of another tenant', async () => {
    const t1 = await createTenant(app);
    const t2 = await createTenant(app);
    await put(t1.tenantId, t1.adminKey, 'x', uniqueSecret('k'));
    const dataKeys = app.custos.app.get(DataKeyService);
    const { dataKeyId } = await dataKeys.sealingKey(t1.tenantId);
    await expect(dataKeys.keyById(t2.tenantId, dataKeyId)).rejects.toMatchObject({
      code: 'decryption_failed',
    });
  });
});

describe('data keys with the cache disabled', () => {
  it('unwraps on every read when CUSTOS_DATA_KEY_CACHE_TTL_SECONDS=0', async () => {
    const app = await startTestApp({ CUSTOS_DATA_KEY_CACHE_TTL_SECONDS: '0' });
    try {
      const t = await createTenant(app);
      const { id } = await importConnection(app, t, 'u', 'openai', {
        type: 'api_key',
        apiKey: uniqueSecret('k'),
      });
      const dataKeys = app.custos.app.get(DataKeyService);
      const before = dataKeys.unwrapCalls;
      for (let i = 0; i < 3; i++) await app.custos.app.get(ConnectionsService).openCredential(t.tenantId, id);
      expect(dataKeys.unwrapCalls - before).toBe(3);
      expect(dataKeys.cacheSize()).toBe(0);
    } finally {
      await app.close();
    }
  });
});

describe('root keyring rotation', () => {
  it('keeps reading secrets after a new root key version is added', async () => {
    const { RootKeyring } = await import('../../../src/common/root-keyring.js');
    const v1 = RootKeyring.generateSpec();
    const app1 = await startTestApp({ CUSTOS_ROOT_KEYS: v1 });
    const t = await createTenant(app1);
    const secret = uniqueSecret('k');
    const { id } = await importConnection(app1, t, 'u', 'openai', { type: 'api_key', apiKey: secret });
    await app1.close();
    const v2 = RootKeyring.generateSpec().replace(/^v1:/, 'v2:');
    const app2 = await startTestApp({
      CUSTOS_ROOT_KEYS: `${v1},${v2}`,
      CUSTOS_BOOTSTRAP_ADMIN_KEY: app1.bootstrapKey,
    });
    try {
      expect((await app2.custos.app.get(ConnectionsService).openCredential(t.tenantId, id)).secret).toBe(
        secret,
      );
    } finally {
      await app2.close();
    }
    // Without the version that wrapped the data key, the credential is unreadable, not silently wrong.
    const app3 = await startTestApp({ CUSTOS_ROOT_KEYS: v2, CUSTOS_BOOTSTRAP_ADMIN_KEY: app1.bootstrapKey });
    try {
      await expect(
        app3.custos.app.get(ConnectionsService).openCredential(t.tenantId, id),
      ).rejects.toMatchObject({
        code: 'key_unavailable',
      });
    } finally {
      await app3.close();
    }
  });
});
