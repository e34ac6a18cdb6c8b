/**
 * The BYOK key backends (AWS KMS and Vault Transit) against the emulators, through the real SDK clients over HTTP
 * on 127.0.0.1: round trips, context binding, rotation and rewrap, and how every failure maps to a CustosException
 * code and reason.
 */
import crypto from 'node:crypto';
import nodeHttp from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  DisableKeyCommand,
  EnableKeyCommand,
  KMSClient,
  ScheduleKeyDeletionCommand,
} from '@aws-sdk/client-kms';
import NodeVault from 'node-vault';
import { CustosException } from '../../../src/common/errors.js';
import { OutboundHttpClient } from '../../../src/common/outbound-http.js';
import { AwsKmsKeyBackend, type AwsKmsKeyBackendOptions } from '../../../src/crypto/aws-kms-key-backend.js';
import type { DataKeyContext } from '../../../src/crypto/key-backend.js';
import {
  VaultTransitKeyBackend,
  type VaultTransitKeyBackendOptions,
} from '../../../src/crypto/vault-transit-key-backend.js';
import {
  startKmsEmulator,
  type KmsEmulator,
  type KmsEmulatorCredentials,
} from '../../emulators/kms-emulator.js';
import { startVaultEmulator, type VaultEmulator } from '../../emulators/vault-emulator.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';
for (const name of ['VAULT_ADDR', 'VAULT_TOKEN', 'VAULT_NAMESPACE', 'VAULT_PREFIX']) delete process.env[name];

const REGION = 'eu-central-1';
/** The guarded client, letting http through to the emulators on loopback (as CUSTOS_OUTBOUND_ALLOW_HOSTS does). */
const http = new OutboundHttpClient({ allowHosts: ['127.0.0.1'] });
afterAll(() => http.destroy());

function aContext(overrides: Partial<DataKeyContext> = {}): DataKeyContext {
  return { tenantId: `tenant-${crypto.randomUUID()}`, dataKeyId: crypto.randomUUID(), ...overrides };
}

function aCredential(): KmsEmulatorCredentials {
  return {
    accessKeyId: `AKIA${crypto.randomBytes(8).toString('hex').toUpperCase()}`,
    secretAccessKey: crypto.randomBytes(30).toString('base64'),
  };
}

async function caught(promise: Promise<unknown>): Promise<CustosException> {
  const error: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(CustosException);
  return error as CustosException;
}

async function expectFailure(
  promise: Promise<unknown>,
  code: 'key_unavailable' | 'key_invalid',
  reason: string,
): Promise<CustosException> {
  const error = await caught(promise);
  expect({ code: error.code, reason: error.details?.reason }).toEqual({ code, reason });
  return error;
}

/** A server that records what reaches it: where a followed redirect would land. */
async function startTrap(): Promise<{
  url: string;
  received: nodeHttp.IncomingHttpHeaders[];
  close(): Promise<void>;
}> {
  const received: nodeHttp.IncomingHttpHeaders[] = [];
  const server = nodeHttp.createServer((req, res) => {
    received.push(req.headers);
    res.end('{}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** A guarded client that lets only this emulator port through (the trap is on loopback too, and not listed). */
const guardFor = (port: number) => new OutboundHttpClient({ allowHosts: [`127.0.0.1:${port}`] });

/** A port nothing listens on: bound once, then released. */
async function aClosedPort(): Promise<number> {
  const emulator = await startKmsEmulator();
  const port = emulator.port;
  await emulator.close();
  return port;
}

describe('AwsKmsKeyBackend', () => {
  const credentials = aCredential();
  let kms: KmsEmulator;
  let admin: KMSClient;
  const backends: AwsKmsKeyBackend[] = [];

  function backendFor(keyId: string, overrides: Partial<AwsKmsKeyBackendOptions> = {}): AwsKmsKeyBackend {
    const backend = new AwsKmsKeyBackend({
      keyId,
      region: REGION,
      endpoint: kms.url,
      credentials,
      http,
      ...overrides,
    });
    backends.push(backend);
    return backend;
  }

  beforeAll(async () => {
    kms = await startKmsEmulator({ region: REGION, credentials: [credentials] });
    admin = new KMSClient({ endpoint: kms.url, region: REGION, credentials, maxAttempts: 1 });
  });

  afterAll(async () => {
    for (const backend of backends) backend.close();
    admin.destroy();
    await kms.close();
  });

  afterEach(() => kms.faults.clear());

  it('is the aws-kms backend', () => {
    expect(backendFor(kms.createKey().keyId).type).toBe('aws-kms');
  });

  it('generates a 32-byte data key wrapped by the key, with the key ARN as keyRef, and unwraps it', async () => {
    const key = kms.createKey();
    const backend = backendFor(key.keyId);
    const ctx = aContext();
    const generated = await backend.generateDataKey(ctx);
    expect(generated.plaintext).toHaveLength(32);
    expect(generated.keyRef).toBe(key.arn);
    expect(kms.describeCiphertext(generated.wrapped).keyId).toBe(key.keyId);
    expect((await backend.unwrapDataKey(generated.wrapped, ctx)).equals(generated.plaintext)).toBe(true);
  });

  it('works when configured by alias, still reporting the key ARN', async () => {
    const alias = `alias/tenant-${crypto.randomUUID()}`;
    const key = kms.createKey({ alias });
    const backend = backendFor(alias);
    const ctx = aContext();
    const generated = await backend.generateDataKey(ctx);
    expect(generated.keyRef).toBe(key.arn);
    expect((await backend.unwrapDataKey(generated.wrapped, ctx)).equals(generated.plaintext)).toBe(true);
  });

  it('binds each data key to its tenant and data key id through the encryption context', async () => {
    const backend = backendFor(kms.createKey().keyId);
    const ctx = aContext();
    const { wrapped } = await backend.generateDataKey(ctx);
    await expectFailure(
      backend.unwrapDataKey(wrapped, { ...ctx, tenantId: 'tenant-b' }),
      'key_invalid',
      'invalid_ciphertext',
    );
    await expectFailure(
      backend.unwrapDataKey(wrapped, { ...ctx, dataKeyId: crypto.randomUUID() }),
      'key_invalid',
      'invalid_ciphertext',
    );
  });

  it('refuses a tampered blob and one wrapped by another key as key_invalid', async () => {
    const [a, b] = [kms.createKey(), kms.createKey()];
    const ctx = aContext();
    const { wrapped } = await backendFor(a.keyId).generateDataKey(ctx);
    const tampered = Buffer.from(wrapped);
    tampered[tampered.length - 1] ^= 0x80;
    await expectFailure(
      backendFor(a.keyId).unwrapDataKey(tampered, ctx),
      'key_invalid',
      'invalid_ciphertext',
    );
    await expectFailure(backendFor(b.keyId).unwrapDataKey(wrapped, ctx), 'key_invalid', 'wrong_key');
    await expectFailure(
      backendFor(a.keyId).unwrapDataKey(Buffer.alloc(0), ctx),
      'key_invalid',
      'invalid_ciphertext',
    );
  });

  it('reports a disabled key as key_unavailable/disabled, and works again once re-enabled', async () => {
    const key = kms.createKey();
    const backend = backendFor(key.keyId);
    const ctx = aContext();
    const generated = await backend.generateDataKey(ctx);
    await admin.send(new DisableKeyCommand({ KeyId: key.keyId }));
    await expectFailure(backend.unwrapDataKey(generated.wrapped, ctx), 'key_unavailable', 'disabled');
    await expectFailure(backend.generateDataKey(aContext()), 'key_unavailable', 'disabled');
    await expectFailure(backend.check(), 'key_unavailable', 'disabled');
    await admin.send(new EnableKeyCommand({ KeyId: key.keyId }));
    expect((await backend.unwrapDataKey(generated.wrapped, ctx)).equals(generated.plaintext)).toBe(true);
    await expect(backend.check()).resolves.toBeUndefined();
  });

  it('reports pending deletion, denied access, a missing key and unknown credentials with their reasons', async () => {
    const doomed = kms.createKey();
    await admin.send(new ScheduleKeyDeletionCommand({ KeyId: doomed.keyId, PendingWindowInDays: 7 }));
    await expectFailure(
      backendFor(doomed.keyId).generateDataKey(aContext()),
      'key_unavailable',
      'pending_deletion',
    );

    const denied = kms.createKey();
    kms.setDenyAll(denied.keyId, true);
    await expectFailure(backendFor(denied.keyId).check(), 'key_unavailable', 'denied');

    await expectFailure(backendFor(crypto.randomUUID()).check(), 'key_unavailable', 'not_found');

    const stranger = backendFor(kms.createKey().keyId, { credentials: aCredential() });
    await expectFailure(stranger.check(), 'key_unavailable', 'unauthenticated');
  });

  it('never puts credentials in an error', async () => {
    const secret = aCredential();
    const backend = backendFor(kms.createKey().keyId, { credentials: secret });
    const error = await expectFailure(backend.check(), 'key_unavailable', 'unauthenticated');
    const shown = `${error.message} ${JSON.stringify(error.details)} ${String(error.stack)}`;
    expect(shown).not.toContain(secret.secretAccessKey);
    expect(shown).not.toContain(secret.accessKeyId);
  });

  it('rewraps after rotation inside KMS: new material, same ARN, still unwraps', async () => {
    const key = kms.createKey();
    const backend = backendFor(key.arn);
    const ctx = aContext();
    const generated = await backend.generateDataKey(ctx);
    await backend.rotateKey();
    expect(kms.materialVersions(key.keyId)).toBe(2);
    const decryptsBefore = kms.callsByOp.Decrypt ?? 0;
    const rewrapped = await backend.rewrapDataKey(generated.wrapped, ctx);
    expect(kms.callsByOp.Decrypt ?? 0).toBe(decryptsBefore);
    expect(kms.describeCiphertext(rewrapped.wrapped).materialVersion).toBe(2);
    expect(rewrapped.wrapped.equals(generated.wrapped)).toBe(false);
    expect(rewrapped.keyRef).toBe(key.arn);
    expect((await backend.unwrapDataKey(rewrapped.wrapped, ctx)).equals(generated.plaintext)).toBe(true);
    expect((await backend.unwrapDataKey(generated.wrapped, ctx)).equals(generated.plaintext)).toBe(true);
    await expectFailure(
      backend.rewrapDataKey(generated.wrapped, { ...ctx, tenantId: 'tenant-b' }),
      'key_invalid',
      'invalid_ciphertext',
    );
  });

  it('rewraps onto a new key from the old keyRef, changing the keyRef', async () => {
    const [oldKey, newKey] = [kms.createKey(), kms.createKey()];
    const ctx = aContext();
    const generated = await backendFor(oldKey.keyId).generateDataKey(ctx);
    const moved = await backendFor(newKey.keyId).rewrapDataKey(generated.wrapped, ctx, generated.keyRef);
    expect(moved.keyRef).toBe(newKey.arn);
    expect(moved.keyRef).not.toBe(generated.keyRef);
    expect(
      (await backendFor(newKey.keyId).unwrapDataKey(moved.wrapped, ctx)).equals(generated.plaintext),
    ).toBe(true);
    await expectFailure(
      backendFor(oldKey.keyId).unwrapDataKey(moved.wrapped, ctx),
      'key_invalid',
      'wrong_key',
    );
    // Without naming the old key as the source, a blob of another key is refused.
    await expectFailure(
      backendFor(newKey.keyId).rewrapDataKey(generated.wrapped, ctx),
      'key_invalid',
      'wrong_key',
    );
  });

  it('describes the key', async () => {
    const key = kms.createKey();
    await expect(backendFor(key.keyId).describeKey()).resolves.toEqual({
      arn: key.arn,
      keyId: key.keyId,
      state: 'Enabled',
      enabled: true,
    });
  });

  it('check() does a real GenerateDataKey + Decrypt round trip', async () => {
    const backend = backendFor(kms.createKey().keyId);
    const before = { generate: kms.callsByOp.GenerateDataKey ?? 0, decrypt: kms.callsByOp.Decrypt ?? 0 };
    await backend.check();
    expect(kms.callsByOp.GenerateDataKey).toBe(before.generate + 1);
    expect(kms.callsByOp.Decrypt).toBe(before.decrypt + 1);
  });

  it('retries throttling once and then reports key_unavailable/throttled', async () => {
    const backend = backendFor(kms.createKey().keyId);
    kms.faults.errorRate = 1;
    const before = kms.callsByOp.GenerateDataKey ?? 0;
    await expectFailure(backend.generateDataKey(aContext()), 'key_unavailable', 'throttled');
    expect(kms.callsByOp.GenerateDataKey).toBe(before + 2);
  });

  it('reports a KMS 500 as unreachable', async () => {
    const backend = backendFor(kms.createKey().keyId);
    kms.faults.errorRate = 1;
    kms.faults.errorKind = 'internal';
    try {
      await expectFailure(backend.generateDataKey(aContext()), 'key_unavailable', 'unreachable');
    } finally {
      kms.faults.errorKind = 'throttling';
    }
  });

  it('gives up on a KMS that does not answer within timeoutMs', async () => {
    const backend = backendFor(kms.createKey().keyId, { timeoutMs: 300 });
    kms.faults.hang = true;
    const started = performance.now();
    await expectFailure(backend.generateDataKey(aContext()), 'key_unavailable', 'unreachable');
    // Bounded by the deadline (retries included), far below Jest's own timeout.
    expect(performance.now() - started).toBeLessThan(3000);
  });

  it('reports a closed port as unreachable', async () => {
    const backend = backendFor(kms.createKey().keyId, {
      endpoint: `http://127.0.0.1:${await aClosedPort()}`,
    });
    await expectFailure(backend.check(), 'key_unavailable', 'unreachable');
  });

  it('never follows a redirect: a 3xx is misconfigured, and the signature goes nowhere else', async () => {
    const trap = await startTrap();
    const backend = backendFor(kms.createKey().keyId);
    try {
      for (const target of [trap.url, 'http://169.254.169.254/latest/meta-data/']) {
        kms.faults.redirectTo = target;
        const error = await expectFailure(backend.check(), 'key_unavailable', 'misconfigured');
        expect(error.message).toContain('redirect');
      }
      expect(trap.received).toEqual([]);
    } finally {
      await trap.close();
    }
  });

  it('sends only through the guarded client: an address it refuses is never contacted', async () => {
    const guarded = guardFor(1);
    const backend = backendFor(kms.createKey().keyId, { http: guarded });
    const before = kms.requests;
    await expectFailure(backend.check(), 'key_unavailable', 'misconfigured');
    expect(kms.requests).toBe(before);
    guarded.destroy();
  });

  it('refuses to exist without explicit credentials (no default chain behind a tenant’s key)', () => {
    expect(
      () =>
        new AwsKmsKeyBackend({
          keyId: 'k',
          region: REGION,
          http,
          credentials: undefined as unknown as AwsKmsKeyBackendOptions['credentials'],
        }),
    ).toThrow(CustosException);
  });

  it('refuses a malformed context: internal_error on generate, key_invalid on unwrap', async () => {
    const backend = backendFor(kms.createKey().keyId);
    const ctx = aContext();
    const { wrapped } = await backend.generateDataKey(ctx);
    expect((await caught(backend.generateDataKey({ ...ctx, tenantId: '' }))).code).toBe('internal_error');
    await expectFailure(
      backend.unwrapDataKey(wrapped, { ...ctx, tenantId: 'a\u0000b' }),
      'key_invalid',
      'invalid_ciphertext',
    );
  });
});

describe('VaultTransitKeyBackend', () => {
  let vault: VaultEmulator;
  let admin: ReturnType<typeof NodeVault>;

  function backendFor(overrides: Partial<VaultTransitKeyBackendOptions> = {}): VaultTransitKeyBackend {
    const options: VaultTransitKeyBackendOptions = {
      address: vault.url,
      keyName: 'custos',
      token: vault.rootToken,
      http,
    };
    return new VaultTransitKeyBackend({ ...options, ...overrides });
  }

  function aKey(options: { mount?: string; namespace?: string } = {}): string {
    const name = `key-${crypto.randomUUID()}`;
    vault.createTransitKey(name, options);
    return name;
  }

  beforeAll(async () => {
    vault = await startVaultEmulator({ mounts: ['transit', 'byok/transit'] });
    admin = NodeVault({ endpoint: vault.url, token: vault.rootToken, noCustomHTTPVerbs: true });
  });

  afterAll(async () => {
    await vault.close();
  });

  afterEach(() => vault.faults.clear());

  it('is the vault-transit backend and needs exactly one of token and appRole', () => {
    expect(backendFor().type).toBe('vault-transit');
    expect(() => backendFor({ token: undefined })).toThrow(CustosException);
    expect(() => backendFor({ appRole: { roleId: 'r', secretId: 's' } })).toThrow(CustosException);
    expect(() => backendFor({ keyName: '../sys' })).toThrow(CustosException);
  });

  it('generates a 32-byte data key wrapped as vault:v1 ciphertext bytes, and unwraps it', async () => {
    const keyName = aKey();
    const backend = backendFor({ keyName });
    const ctx = aContext();
    const generated = await backend.generateDataKey(ctx);
    expect(generated.plaintext).toHaveLength(32);
    expect(generated.keyRef).toBe('vault:v1');
    expect(generated.wrapped.toString('utf8')).toMatch(/^vault:v1:[A-Za-z0-9+/]+={0,2}$/);
    expect((await backend.unwrapDataKey(generated.wrapped, ctx)).equals(generated.plaintext)).toBe(true);
  });

  it('binds each data key to its tenant and data key id through associated data', async () => {
    const backend = backendFor({ keyName: aKey() });
    const ctx = aContext();
    const { wrapped } = await backend.generateDataKey(ctx);
    await expectFailure(
      backend.unwrapDataKey(wrapped, { ...ctx, tenantId: 'tenant-b' }),
      'key_invalid',
      'invalid_ciphertext',
    );
    await expectFailure(
      backend.unwrapDataKey(wrapped, { ...ctx, dataKeyId: crypto.randomUUID() }),
      'key_invalid',
      'invalid_ciphertext',
    );
    // The binding is in Vault's AAD: a decrypt without it fails too.
    await expect(
      admin.write(`transit/decrypt/${backend.keyName}`, { ciphertext: wrapped.toString() }),
    ).rejects.toThrow('cipher: message authentication failed');
  });

  it('refuses tampered and malformed wrapped keys as key_invalid, the latter without asking Vault', async () => {
    const backend = backendFor({ keyName: aKey() });
    const ctx = aContext();
    const { wrapped } = await backend.generateDataKey(ctx);
    const text = wrapped.toString('utf8');
    const flipped = text.slice(0, -3) + (text.at(-3) === 'A' ? 'B' : 'A') + text.slice(-2);
    await expectFailure(
      backend.unwrapDataKey(Buffer.from(flipped), ctx),
      'key_invalid',
      'invalid_ciphertext',
    );
    const before = vault.requests;
    await expectFailure(
      backend.unwrapDataKey(Buffer.from('not a ciphertext'), ctx),
      'key_invalid',
      'invalid_ciphertext',
    );
    await expectFailure(
      backend.unwrapDataKey(Buffer.from([0xff, 0xfe]), ctx),
      'key_invalid',
      'invalid_ciphertext',
    );
    expect(vault.requests).toBe(before);
  });

  it('reports a revoked token as key_unavailable/denied, and a lacking permission likewise', async () => {
    const keyName = aKey();
    const token = vault.createToken();
    const backend = backendFor({ keyName, token });
    const ctx = aContext();
    const { wrapped } = await backend.generateDataKey(ctx);
    vault.revokeToken(token);
    await expectFailure(backend.unwrapDataKey(wrapped, ctx), 'key_unavailable', 'denied');

    const encryptOnly = backendFor({ keyName, token: vault.createToken([`transit/encrypt/${keyName}`]) });
    const generated = await encryptOnly.generateDataKey(ctx);
    await expectFailure(encryptOnly.unwrapDataKey(generated.wrapped, ctx), 'key_unavailable', 'denied');
  });

  it('logs in with AppRole, and logs in again once when its token is revoked', async () => {
    const keyName = aKey();
    const roleId = crypto.randomUUID();
    const secretId = crypto.randomUUID();
    vault.addAppRole(roleId, secretId, [`transit/encrypt/${keyName}`, `transit/decrypt/${keyName}`]);
    const backend = backendFor({ keyName, token: undefined, appRole: { roleId, secretId } });
    const logins = () => vault.callsByOp['approle.login'] ?? 0;
    const before = logins();
    const ctx = aContext();
    const generated = await backend.generateDataKey(ctx);
    await backend.unwrapDataKey(generated.wrapped, ctx);
    expect(logins()).toBe(before + 1);

    expect(vault.revokeAppRoleTokens(roleId)).toBe(1);
    expect((await backend.unwrapDataKey(generated.wrapped, ctx)).equals(generated.plaintext)).toBe(true);
    expect(logins()).toBe(before + 2);

    vault.revokeAppRoleTokens(roleId);
    vault.removeAppRole(roleId);
    await expectFailure(backend.unwrapDataKey(generated.wrapped, ctx), 'key_unavailable', 'unauthenticated');
  });

  it('does not log in again when the token it just logged in with is denied by policy', async () => {
    const keyName = aKey();
    const ctx = aContext();
    const { wrapped } = await backendFor({ keyName }).generateDataKey(ctx);
    const roleId = crypto.randomUUID();
    const secretId = crypto.randomUUID();
    vault.addAppRole(roleId, secretId, [`transit/encrypt/${keyName}`]);
    const backend = backendFor({ keyName, token: undefined, appRole: { roleId, secretId } });
    const logins = () => vault.callsByOp['approle.login'] ?? 0;
    const before = logins();
    await expectFailure(backend.unwrapDataKey(wrapped, ctx), 'key_unavailable', 'denied');
    expect(logins()).toBe(before + 1);
    // A token from an earlier call may have been revoked since: one more login, then the 403 stands.
    await expectFailure(backend.unwrapDataKey(wrapped, ctx), 'key_unavailable', 'denied');
    expect(logins()).toBe(before + 2);
  });

  it('logs in once for concurrent first calls', async () => {
    const keyName = aKey();
    const roleId = crypto.randomUUID();
    const secretId = crypto.randomUUID();
    vault.addAppRole(roleId, secretId);
    const backend = backendFor({ keyName, token: undefined, appRole: { roleId, secretId } });
    const before = vault.callsByOp['approle.login'] ?? 0;
    await Promise.all(Array.from({ length: 10 }, () => backend.generateDataKey(aContext())));
    expect(vault.callsByOp['approle.login']).toBe(before + 1);
  });

  it('reports bad AppRole credentials as unauthenticated, without the secret id in the error', async () => {
    const roleId = crypto.randomUUID();
    vault.addAppRole(roleId, crypto.randomUUID());
    const secretId = crypto.randomUUID();
    const backend = backendFor({ keyName: aKey(), token: undefined, appRole: { roleId, secretId } });
    const error = await expectFailure(backend.check(), 'key_unavailable', 'unauthenticated');
    const shown = `${error.message} ${JSON.stringify(error.details)}`;
    expect(shown).not.toContain(secretId);
    expect(shown).not.toContain(roleId);
  });

  it('rotates, rewraps to the new version (keyRef changes) and retires the old version', async () => {
    const keyName = aKey();
    const backend = backendFor({ keyName });
    const ctx = aContext();
    const generated = await backend.generateDataKey(ctx);
    expect(await backend.latestVersion()).toBe(1);
    expect(await backend.rotateKey()).toBe(2);
    expect(await backend.latestVersion()).toBe(2);

    const rewrapped = await backend.rewrapDataKey(generated.wrapped, ctx);
    expect(generated.keyRef).toBe('vault:v1');
    expect(rewrapped.keyRef).toBe('vault:v2');
    expect(rewrapped.wrapped.toString()).toMatch(/^vault:v2:/);
    expect((await backend.unwrapDataKey(rewrapped.wrapped, ctx)).equals(generated.plaintext)).toBe(true);

    await backend.setMinDecryptionVersion(2);
    await expectFailure(
      backend.unwrapDataKey(generated.wrapped, ctx),
      'key_unavailable',
      'version_disallowed',
    );
    expect((await backend.unwrapDataKey(rewrapped.wrapped, ctx)).equals(generated.plaintext)).toBe(true);
    await expectFailure(
      backend.rewrapDataKey(rewrapped.wrapped, { ...ctx, tenantId: 'tenant-b' }),
      'key_invalid',
      'invalid_ciphertext',
    );
  });

  it('works on another mount and in a namespace', async () => {
    const keyName = aKey({ mount: 'byok/transit', namespace: 'team-a' });
    const backend = backendFor({ keyName, mount: 'byok/transit', namespace: 'team-a' });
    const ctx = aContext();
    const generated = await backend.generateDataKey(ctx);
    expect((await backend.unwrapDataKey(generated.wrapped, ctx)).equals(generated.plaintext)).toBe(true);
    await backend.check();
    // The same key name outside the namespace does not exist.
    await expectFailure(
      backendFor({ keyName, mount: 'byok/transit' }).check(),
      'key_unavailable',
      'not_found',
    );
  });

  it('check() does a real round trip, and reports a missing key as not_found without creating it', async () => {
    const keyName = aKey();
    const before = {
      encrypt: vault.callsByOp['transit.encrypt'] ?? 0,
      decrypt: vault.callsByOp['transit.decrypt'] ?? 0,
    };
    await backendFor({ keyName }).check();
    expect(vault.callsByOp['transit.encrypt']).toBe(before.encrypt + 1);
    expect(vault.callsByOp['transit.decrypt']).toBe(before.decrypt + 2);

    const missing = `missing-${crypto.randomUUID()}`;
    await expectFailure(backendFor({ keyName: missing }).check(), 'key_unavailable', 'not_found');
    await expect(admin.read(`transit/keys/${missing}`)).rejects.toMatchObject({
      response: { statusCode: 404 },
    });
  });

  it('reports a sealed or failing Vault as unreachable', async () => {
    const backend = backendFor({ keyName: aKey() });
    vault.faults.errorRate = 1;
    vault.faults.errorKind = 'sealed';
    try {
      await expectFailure(backend.check(), 'key_unavailable', 'unreachable');
    } finally {
      vault.faults.errorKind = 'internal';
    }
    await expectFailure(backend.check(), 'key_unavailable', 'unreachable');
  });

  it('gives up on a Vault that does not answer within timeoutMs', async () => {
    const backend = backendFor({ keyName: aKey(), timeoutMs: 300 });
    vault.faults.hang = true;
    const started = performance.now();
    await expectFailure(backend.generateDataKey(aContext()), 'key_unavailable', 'unreachable');
    expect(performance.now() - started).toBeLessThan(3000);
  });

  it('reports a closed port as unreachable', async () => {
    const backend = backendFor({ address: `http://127.0.0.1:${await aClosedPort()}` });
    await expectFailure(backend.check(), 'key_unavailable', 'unreachable');
  });

  it('never follows a redirect, and never sends the token to its target (not even an address on the allow-list)', async () => {
    const trap = await startTrap();
    // The trap is allow-listed too: only the refusal to follow redirects keeps the token from it.
    const open = new OutboundHttpClient({ allowHosts: ['127.0.0.1'] });
    const keyName = aKey();
    const roleId = crypto.randomUUID();
    const secretId = crypto.randomUUID();
    vault.addAppRole(roleId, secretId);
    const backends = [
      backendFor({ keyName, http: open }),
      backendFor({ keyName, http: open, token: undefined, appRole: { roleId, secretId } }),
    ];
    try {
      for (const target of [trap.url, 'http://169.254.169.254/latest/meta-data/']) {
        vault.faults.redirectTo = target;
        for (const backend of backends) {
          const error = await expectFailure(backend.check(), 'key_unavailable', 'misconfigured');
          expect(`${error.message} ${JSON.stringify(error.details)}`).not.toContain(vault.rootToken);
        }
      }
      expect(trap.received).toEqual([]);
      vault.faults.redirectTo = undefined;
      for (const backend of backends) await backend.check();
    } finally {
      open.destroy();
      await trap.close();
    }
  });

  it('sends only through the guarded client: an address it refuses is never contacted', async () => {
    const guarded = guardFor(1);
    const before = vault.requests;
    await expectFailure(
      backendFor({ keyName: aKey(), http: guarded }).check(),
      'key_unavailable',
      'misconfigured',
    );
    expect(vault.requests).toBe(before);
    guarded.destroy();
  });

  it('never puts the token in an error', async () => {
    const token = vault.createToken(['nothing/']);
    const error = await expectFailure(
      backendFor({ keyName: aKey(), token }).check(),
      'key_unavailable',
      'denied',
    );
    expect(`${error.message} ${JSON.stringify(error.details)}`).not.toContain(token);
  });
});
