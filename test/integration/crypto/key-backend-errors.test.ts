/**
 * Setting a BYOK key backend that does not work says why: one stable code per cause — unreachable (a name that
 * does not resolve, a refused connection, a silent network), denied (access denied, credentials not accepted, a
 * disabled key), not found — with a message that names where it failed and what to check, and nothing saved.
 * `custos doctor` says the same of a tenant's backend that stops working. AWS KMS and Vault Transit, through the
 * real @aws-sdk/client-kms and node-vault clients against the emulators.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { doctor } from '../../../src/cli/doctor.js';
import { openCliContext } from '../../../src/cli/context.js';
import { RootKeyring } from '../../../src/common/root-keyring.js';
import { startTestApp, type Reply, type TestApp } from '../../support/app.js';
import { startBlackholeProxy, type BlackholeProxy } from '../../support/blackhole-proxy.js';
import { databaseUrlFor, workerDatabaseName } from '../../support/env.js';
import { createTenant, type TenantFixture } from '../../support/factories.js';
import { randomAwsCredentials } from '../../support/aws.js';
import { startKmsEmulator, type KmsEmulator } from '../../emulators/kms-emulator.js';
import { startVaultEmulator, type VaultEmulator } from '../../emulators/vault-emulator.js';

const TIMEOUT_MS = '700';
const savedEnv = { ...process.env };
const awsCreds = randomAwsCredentials();
const rootKeys = RootKeyring.generateSpec();

let app: TestApp;
let kms: KmsEmulator;
let vault: VaultEmulator;
let kmsHole: BlackholeProxy;
let vaultHole: BlackholeProxy;
/** An allow-listed port where nothing listens. */
let closedPort: number;
/** Allow-listed ports for the standalone emulators this file spawns. */
const standalonePorts = { kms: 0, vault: 0 };
let allowHosts: string;

async function aClosedPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const { port } = probe.address() as AddressInfo;
  await new Promise((r) => probe.close(r));
  return port;
}

beforeAll(async () => {
  // Custos has no AWS identity of its own here, as on a laptop trying docs/byok.md: nothing in the environment,
  // and the instance-metadata service is never asked.
  for (const name of Object.keys(process.env)) if (name.startsWith('AWS_')) delete process.env[name];
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  process.env.AWS_CONFIG_FILE = '/dev/null';
  process.env.AWS_SHARED_CREDENTIALS_FILE = '/dev/null';
  kms = await startKmsEmulator({ credentials: [awsCreds] });
  vault = await startVaultEmulator({ upsertOnEncrypt: false });
  kmsHole = await startBlackholeProxy('127.0.0.1', kms.port);
  vaultHole = await startBlackholeProxy('127.0.0.1', vault.port);
  closedPort = await aClosedPort();
  standalonePorts.kms = await aClosedPort();
  standalonePorts.vault = await aClosedPort();
  allowHosts = [
    kms.port,
    vault.port,
    kmsHole.port,
    vaultHole.port,
    closedPort,
    standalonePorts.kms,
    standalonePorts.vault,
  ]
    .map((p) => `127.0.0.1:${p}`)
    .join(',');
  app = await startTestApp({
    CUSTOS_ROOT_KEYS: rootKeys,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: allowHosts,
    CUSTOS_KEY_BACKEND_TIMEOUT_MS: TIMEOUT_MS,
  });
});
afterAll(async () => {
  await app.close();
  await kmsHole.close();
  await vaultHole.close();
  await kms.close();
  await vault.close();
  process.env = savedEnv;
});

const put = (t: TenantFixture, body: Record<string, unknown>) =>
  app.request('PUT', `/v1/tenants/${t.tenantId}/key-backend`, { key: t.adminKey, body });

/** A refusal: 400 with the code, the reason and a message naming the endpoint, and the tenant left as it was. */
async function expectRefusal(
  t: TenantFixture,
  res: Reply,
  want: { error: string; reason: string; endpoint?: string; connection?: string; message: RegExp[] },
  secrets: string[] = [],
): Promise<void> {
  expect({ status: res.status, error: res.body.error, reason: res.body.details?.reason }).toEqual({
    status: 400,
    error: want.error,
    reason: want.reason,
  });
  if (want.endpoint) expect(res.body.details.endpoint).toBe(want.endpoint);
  if (want.connection) expect(res.body.details.connection).toBe(want.connection);
  for (const m of want.message) expect(res.body.message).toMatch(m);
  expect(res.body.message).toMatch(/Nothing was saved\.$/);
  for (const s of secrets) expect(res.raw).not.toContain(s);
  const view = await app.request('GET', `/v1/tenants/${t.tenantId}/key-backend`, { key: t.adminKey });
  expect(view.body.type).toBe('managed');
}

const kmsConfig = (over: Record<string, unknown> = {}) => ({
  type: 'aws-kms',
  keyId: kms.createKey().arn,
  region: 'us-east-1',
  endpoint: kms.url,
  credentials: { ...awsCreds },
  ...over,
});

const vaultConfig = (over: Record<string, unknown> = {}) => {
  const keyName = `custos-${randomBytes(4).toString('hex')}`;
  vault.createTransitKey(keyName);
  return { type: 'vault-transit', address: vault.url, keyName, token: vault.rootToken, ...over };
};

describe('AWS KMS', () => {
  it('answers a closed port as key_backend_unreachable: the endpoint, and that the connection was refused', async () => {
    const t = await createTenant(app);
    const endpoint = `http://127.0.0.1:${closedPort}`;
    await expectRefusal(t, await put(t, kmsConfig({ endpoint })), {
      error: 'key_backend_unreachable',
      reason: 'unreachable',
      endpoint,
      connection: 'refused',
      message: [
        new RegExp(
          `^Cannot reach the KMS endpoint http://127\\.0\\.0\\.1:${closedPort}: the connection was refused`,
        ),
        /Check `endpoint`/,
        /CUSTOS_OUTBOUND_ALLOW_HOSTS/,
      ],
    });
  });

  it('answers a silent network (a blackhole) as key_backend_unreachable within the deadline', async () => {
    const t = await createTenant(app);
    const endpoint = `http://127.0.0.1:${kmsHole.port}`;
    kmsHole.blackhole();
    try {
      await expectRefusal(t, await put(t, kmsConfig({ endpoint })), {
        error: 'key_backend_unreachable',
        reason: 'unreachable',
        endpoint,
        connection: 'timeout',
        message: [new RegExp(`^Cannot reach the KMS endpoint ${endpoint}: no answer within the deadline`)],
      });
    } finally {
      kmsHole.restore();
    }
    // The same path works once the network passes bytes again.
    expect((await put(t, kmsConfig({ endpoint }))).status).toBe(200);
  });

  it('answers a host name that does not resolve as key_backend_unreachable, naming the host', async () => {
    const t = await createTenant(app);
    await expectRefusal(t, await put(t, kmsConfig({ endpoint: 'https://kms.custos-test.invalid' })), {
      error: 'key_backend_unreachable',
      reason: 'unreachable',
      endpoint: 'https://kms.custos-test.invalid',
      connection: 'dns',
      message: [
        /^Cannot reach the KMS endpoint https:\/\/kms\.custos-test\.invalid: its host name does not resolve/,
      ],
    });
  });

  it('answers denials as key_backend_denied: a key policy that denies, credentials not accepted, a disabled key', async () => {
    const t = await createTenant(app);
    const denied = kms.createKey();
    kms.setDenyAll(denied.arn, true);
    await expectRefusal(t, await put(t, kmsConfig({ keyId: denied.arn })), {
      error: 'key_backend_denied',
      reason: 'denied',
      endpoint: kms.url,
      message: [new RegExp(`denied access to the key ${denied.arn} \\(AccessDenied\\)`), /kms:Decrypt/],
    });

    const wrongSecret = { ...awsCreds, secretAccessKey: randomBytes(30).toString('base64') };
    await expectRefusal(
      t,
      await put(t, kmsConfig({ credentials: wrongSecret })),
      {
        error: 'key_backend_denied',
        reason: 'unauthenticated',
        message: [/did not accept the credentials/, /check `credentials`/],
      },
      [wrongSecret.secretAccessKey, awsCreds.secretAccessKey],
    );

    const disabled = kms.createKey();
    const config = kmsConfig({ keyId: disabled.arn });
    kms.setDenyAll(disabled.arn, false);
    await disableKmsKey(disabled.keyId);
    await expectRefusal(t, await put(t, config), {
      error: 'key_backend_denied',
      reason: 'disabled',
      message: [new RegExp(`The AWS KMS key ${disabled.arn} is disabled: enable it`)],
    });
  });

  it('answers a key that does not exist as key_backend_not_found, naming the key and the region', async () => {
    const t = await createTenant(app);
    await expectRefusal(t, await put(t, kmsConfig({ keyId: 'alias/no-such-key' })), {
      error: 'key_backend_not_found',
      reason: 'not_found',
      endpoint: kms.url,
      message: [/has no key alias\/no-such-key in region us-east-1: check `keyId`/],
    });
  });

  it("answers docs/byok.md's role example, where Custos has no AWS identity of its own, without blaming credentials", async () => {
    const t = await createTenant(app);
    const res = await put(t, {
      type: 'aws-kms',
      keyId: 'alias/custos',
      region: 'eu-west-1',
      assumeRole: { roleArn: 'arn:aws:iam::111122223333:role/custos-kms' },
    });
    await expectRefusal(t, res, {
      error: 'key_backend_invalid',
      reason: 'no_identity',
      message: [
        /^Custos has no AWS identity of its own, so it cannot assume the role arn:aws:iam::111122223333:role\/custos-kms/,
      ],
    });
    expect(res.body.message).not.toMatch(/credentials were|did not accept/);
  });
});

describe('Vault Transit', () => {
  it('answers a closed port as key_backend_unreachable: the address, and that the connection was refused', async () => {
    const t = await createTenant(app);
    const address = `http://127.0.0.1:${closedPort}`;
    await expectRefusal(t, await put(t, vaultConfig({ address })), {
      error: 'key_backend_unreachable',
      reason: 'unreachable',
      endpoint: address,
      connection: 'refused',
      message: [
        new RegExp(`^Cannot reach the address ${address}: the connection was refused`),
        /Check `address`/,
      ],
    });
  });

  it('answers a silent network (a blackhole) as key_backend_unreachable within the deadline', async () => {
    const t = await createTenant(app);
    const address = `http://127.0.0.1:${vaultHole.port}`;
    vaultHole.blackhole();
    try {
      await expectRefusal(t, await put(t, vaultConfig({ address })), {
        error: 'key_backend_unreachable',
        reason: 'unreachable',
        endpoint: address,
        connection: 'timeout',
        message: [new RegExp(`^Cannot reach the address ${address}: no answer within the deadline`)],
      });
    } finally {
      vaultHole.restore();
    }
  });

  it('answers a token Vault refuses, and a policy without the key, as key_backend_denied', async () => {
    const t = await createTenant(app);
    const unknownToken = `hvs.${randomBytes(12).toString('hex')}`;
    await expectRefusal(
      t,
      await put(t, vaultConfig({ token: unknownToken })),
      {
        error: 'key_backend_denied',
        reason: 'denied',
        endpoint: vault.url,
        message: [/denied access to the transit key transit\/keys\/custos-[0-9a-f]+ \(permission denied\)/],
      },
      [unknownToken],
    );
    const narrow = vault.createToken(['transit/encrypt/some-other-key']);
    await expectRefusal(
      t,
      await put(t, vaultConfig({ token: narrow })),
      {
        error: 'key_backend_denied',
        reason: 'denied',
        message: [/its policy allows "update" on transit\/encrypt\/custos-[0-9a-f]+ and transit\/decrypt\//],
      },
      [narrow],
    );
    const appRole = {
      roleId: `role-${randomBytes(4).toString('hex')}`,
      secretId: randomBytes(16).toString('hex'),
    };
    await expectRefusal(
      t,
      await put(t, { ...vaultConfig(), token: undefined, appRole }),
      {
        error: 'key_backend_denied',
        reason: 'unauthenticated',
        message: [/did not accept the AppRole role id and secret id/],
      },
      [appRole.secretId],
    );
  });

  it('answers a transit key that does not exist as key_backend_not_found, naming the key and the mount', async () => {
    const t = await createTenant(app);
    await expectRefusal(t, await put(t, vaultConfig({ keyName: 'no-such-key' })), {
      error: 'key_backend_not_found',
      reason: 'not_found',
      endpoint: vault.url,
      message: [
        /has no transit key "no-such-key" at mount "transit": create it \(vault write -f transit\/keys\/no-such-key\)/,
      ],
    });
  });
});

describe('custos doctor', () => {
  it('says which tenant’s backend is unreachable or denied, and where, as the admin API does', async () => {
    const reachable = await createTenant(app);
    const refusing = await createTenant(app);
    const silent = await createTenant(app);
    const denyLater = kms.createKey();
    expect((await put(reachable, kmsConfig())).status).toBe(200);
    expect((await put(refusing, kmsConfig({ keyId: denyLater.arn }))).status).toBe(200);
    expect((await put(silent, vaultConfig({ address: `http://127.0.0.1:${vaultHole.port}` }))).status).toBe(
      200,
    );
    kms.setDenyAll(denyLater.arn, true);
    vaultHole.blackhole();
    const env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      AWS_EC2_METADATA_DISABLED: 'true',
      DATABASE_URL: databaseUrlFor(workerDatabaseName()),
      CUSTOS_ROOT_KEYS: rootKeys,
      CUSTOS_OUTBOUND_ALLOW_HOSTS: allowHosts,
      CUSTOS_KEY_BACKEND_TIMEOUT_MS: TIMEOUT_MS,
    };
    try {
      const checks = await doctor(env, () => openCliContext(env));
      const of = (t: TenantFixture) => checks.find((c) => c.name === `key backend (tenant ${t.tenantId})`);
      expect(of(reachable)).toMatchObject({ status: 'ok', detail: 'aws-kms answers' });
      expect(of(refusing)).toMatchObject({ status: 'fail' });
      expect(of(refusing)!.detail).toMatch(
        new RegExp(
          `^aws-kms denied \\(denied\\): AWS KMS at ${kms.url} denied access to the key ${denyLater.arn}`,
        ),
      );
      expect(of(silent)).toMatchObject({ status: 'fail' });
      expect(of(silent)!.detail).toMatch(
        new RegExp(
          `^vault-transit unreachable \\(unreachable\\): Cannot reach the address http://127\\.0\\.0\\.1:${vaultHole.port}: no answer`,
        ),
      );
      expect(JSON.stringify(checks)).not.toContain(awsCreds.secretAccessKey);
      expect(JSON.stringify(checks)).not.toContain(vault.rootToken);
    } finally {
      vaultHole.restore();
    }
  }, 60_000);
});

describe.each(['kms', 'vault'] as const)('npm run emulator:%s', (kind) => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    child?.kill('SIGTERM');
  });

  it('prints a key-backend body that Custos accepts as pasted, and the curl line that sends it', async () => {
    const port = standalonePorts[kind];
    child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        path.resolve(__dirname, '../../emulators/standalone.ts'),
        kind,
        '--port',
        String(port),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    await new Promise<void>((resolve, reject) => {
      child!.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('Ctrl-C to stop.')) resolve();
      });
      child!.once('exit', (code) => reject(new Error(`emulator exited (${code}): ${out}`)));
    });
    const lines = out.split('\n');
    const block = lines.slice(lines.indexOf('{'), lines.indexOf('}') + 1).join('\n');
    const body = JSON.parse(block) as Record<string, unknown>;
    expect(body.type).toBe(kind === 'kms' ? 'aws-kms' : 'vault-transit');
    expect(body[kind === 'kms' ? 'endpoint' : 'address']).toBe(`http://127.0.0.1:${port}`);
    // The curl line sends exactly that body, to the quickstart's variables.
    expect(out).toContain(`-d '${JSON.stringify(body)}'`);
    expect(out).toContain('curl -sS -X PUT "$BASE/v1/tenants/$TENANT/key-backend"');
    expect(out).toContain(`CUSTOS_OUTBOUND_ALLOW_HOSTS=127.0.0.1:${port}`);

    const t = await createTenant(app);
    const res = await put(t, body);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ type: body.type, status: 'active' });
  }, 30_000);
});

async function disableKmsKey(keyId: string): Promise<void> {
  const { KMSClient, DisableKeyCommand } = await import('@aws-sdk/client-kms');
  const client = new KMSClient({
    region: 'us-east-1',
    endpoint: kms.url,
    credentials: { ...awsCreds },
    maxAttempts: 1,
  });
  try {
    await client.send(new DisableKeyCommand({ KeyId: keyId }));
  } finally {
    client.destroy();
  }
}
