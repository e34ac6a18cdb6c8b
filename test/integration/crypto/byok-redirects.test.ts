/**
 * A tenant's key backend that answers with a redirect (a hostile endpoint, a compromised proxy, a Vault standby):
 * Custos never follows it, never sends the tenant's Vault token or an AWS signature to the redirect target (even
 * an allow-listed one, even the instance-metadata address), and fails the call cleanly.
 */
import { randomBytes } from 'node:crypto';
import { ConnectionsService } from '../../../src/connections/connections.service.js';
import { DataKeyService } from '../../../src/crypto/data-key.service.js';
import { KeyBackendService } from '../../../src/crypto/key-backend.service.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import {
  createTenant,
  importUniqueToken,
  uniqueSecret,
  type TenantFixture,
} from '../../support/factories.js';
import { startKmsEmulator, type KmsEmulator } from '../../emulators/kms-emulator.js';
import { startVaultEmulator, type VaultEmulator } from '../../emulators/vault-emulator.js';
import { randomAwsCredentials, startTrap, type Trap } from '../../support/aws.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

let app: TestApp;
let kms: KmsEmulator;
let vault: VaultEmulator;
let trap: Trap;
const awsCreds = randomAwsCredentials();

beforeAll(async () => {
  kms = await startKmsEmulator({ credentials: [awsCreds] });
  vault = await startVaultEmulator();
  trap = await startTrap('application/json');
  app = await startTestApp({
    // The trap is allow-listed on purpose: only the refusal to follow redirects keeps the token from it.
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `127.0.0.1:${kms.port},127.0.0.1:${vault.port},127.0.0.1:${trap.port}`,
    CUSTOS_KEY_BACKEND_TIMEOUT_MS: '1000',
  });
});
afterAll(async () => {
  await app.close();
  await kms.close();
  await vault.close();
  await trap.close();
});
afterEach(() => {
  kms.faults.clear();
  vault.faults.clear();
});

const read = (t: TenantFixture, id: string) =>
  app.custos.app.get(ConnectionsService).openCredential(t.tenantId, id);

interface Case {
  name: 'vault-transit' | 'aws-kms';
  setup(): { config: Record<string, unknown>; secret: string };
  faults(): KmsEmulator['faults'] | VaultEmulator['faults'];
}

const cases: Case[] = [
  {
    name: 'vault-transit',
    setup() {
      const keyName = `k-${randomBytes(4).toString('hex')}`;
      vault.createTransitKey(keyName);
      const token = vault.createToken(['transit/']);
      return { config: { type: 'vault-transit', address: vault.url, keyName, token }, secret: token };
    },
    faults: () => vault.faults,
  },
  {
    name: 'aws-kms',
    setup() {
      const key = kms.createKey();
      return {
        config: {
          type: 'aws-kms',
          keyId: key.arn,
          region: 'us-east-1',
          endpoint: kms.url,
          credentials: awsCreds,
        },
        secret: awsCreds.secretAccessKey,
      };
    },
    faults: () => kms.faults,
  },
];

describe.each(cases)('$name answering with a redirect', (c) => {
  it('is refused when configured, and nothing reaches the redirect target', async () => {
    const t = await createTenant(app);
    const { config } = c.setup();
    c.faults().redirectTo = trap.url;
    const before = trap.received.length;
    const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/key-backend`, {
      key: t.adminKey,
      body: config,
    });
    expect({ status: res.status, error: res.body.error, reason: res.body.details?.reason }).toEqual({
      status: 400,
      error: 'key_backend_invalid',
      reason: 'misconfigured',
    });
    expect(trap.received.slice(before)).toEqual([]);
  });

  it('fails reads and writes with 503 key_unavailable, never sending the token or a signature on', async () => {
    const t = await createTenant(app);
    const { config, secret } = c.setup();
    const put = await app.request('PUT', `/v1/tenants/${t.tenantId}/key-backend`, {
      key: t.adminKey,
      body: config,
    });
    expect(put.status).toBe(200);
    await app.custos.app.get(KeyBackendService).settled(t.tenantId);
    const cred = await importUniqueToken(app, t, 'alice');
    const before = trap.received.length;

    for (const target of [trap.url, 'http://169.254.169.254/latest/meta-data/']) {
      c.faults().redirectTo = target;
      app.custos.app.get(DataKeyService).flushTenant(t.tenantId);
      await expect(read(t, cred.id)).rejects.toMatchObject({
        code: 'key_unavailable',
        details: { reason: 'misconfigured' },
      });
      const write = await app.request('PUT', `/v1/tenants/${t.tenantId}/users/bob/connections/github`, {
        key: t.adminKey,
        body: { type: 'oauth2', accessToken: uniqueSecret('x') },
      });
      expect({ status: write.status, error: write.body.error }).toEqual({
        status: 503,
        error: 'key_unavailable',
      });
      expect(write.headers['retry-after']).toBeDefined();
    }
    expect(trap.received.slice(before)).toEqual([]);
    expect(app.logs.join('')).not.toContain(secret);

    // The endpoint stops redirecting: everything works again.
    c.faults().redirectTo = undefined;
    expect((await read(t, cred.id)).secret).toBe(cred.secret);
  });
});
