/**
 * The Vault emulator, driven only through the real node-vault client over HTTP on 127.0.0.1: transit key
 * management, encrypt/decrypt with associated data, data keys, rewrap, min_decryption_version, token and AppRole
 * authentication, namespaces, extra mounts and the fault knobs.
 */
import crypto from 'node:crypto';
import NodeVault from 'node-vault';
import { startVaultEmulator, type VaultEmulator } from '../../emulators/vault-emulator.js';

// node-vault falls back to these when an option is missing; the tests must not pick up a developer's Vault.
for (const name of ['VAULT_ADDR', 'VAULT_TOKEN', 'VAULT_NAMESPACE', 'VAULT_PREFIX']) delete process.env[name];

interface ApiError extends Error {
  code?: string;
  response?: { statusCode: number; body: { errors?: string[] } };
}

type VaultClient = ReturnType<typeof NodeVault>;

function clientFor(
  vault: VaultEmulator,
  options: { token?: string; namespace?: string; timeout?: number } = {},
) {
  return NodeVault({
    endpoint: vault.url,
    token: 'token' in options ? options.token : vault.rootToken,
    namespace: options.namespace,
    noCustomHTTPVerbs: true,
    requestOptions: { timeout: options.timeout ?? 5000 },
  });
}

async function apiError(promise: Promise<unknown>): Promise<ApiError> {
  const error: unknown = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(Error);
  return error as ApiError;
}

async function expectVaultError(
  promise: Promise<unknown>,
  status: number,
  message?: string,
): Promise<ApiError> {
  const error = await apiError(promise);
  expect(error.response?.statusCode).toBe(status);
  if (message !== undefined) {
    expect(error.response?.body.errors).toEqual([message]);
    expect(error.message).toBe(message);
  }
  return error;
}

const b64 = (value: string | Buffer) => Buffer.from(value).toString('base64');
const aKeyName = () => `key-${crypto.randomUUID()}`;

describe('Vault emulator through node-vault', () => {
  let vault: VaultEmulator;
  let root: VaultClient;

  beforeAll(async () => {
    vault = await startVaultEmulator({ mounts: ['transit', 'tenants/byok'] });
    root = clientFor(vault);
  });

  afterAll(async () => {
    await vault.close();
  });

  afterEach(() => vault.faults.clear());

  async function encrypt(name: string, plaintext: string | Buffer, associatedData?: string): Promise<string> {
    const response = await root.write(`transit/encrypt/${name}`, {
      plaintext: b64(plaintext),
      ...(associatedData === undefined ? {} : { associated_data: b64(associatedData) }),
    });
    return response.data.ciphertext as string;
  }

  async function decrypt(name: string, ciphertext: string, associatedData?: string): Promise<string> {
    const response = await root.write(`transit/decrypt/${name}`, {
      ciphertext,
      ...(associatedData === undefined ? {} : { associated_data: b64(associatedData) }),
    });
    return Buffer.from(response.data.plaintext as string, 'base64').toString('utf8');
  }

  describe('transit keys', () => {
    it('creates an aes256-gcm96 key and reads it back in Vault response shape', async () => {
      const name = aKeyName();
      const created = await root.write(`transit/keys/${name}`, {});
      expect(created).toMatchObject({
        lease_id: '',
        renewable: false,
        lease_duration: 0,
        wrap_info: null,
        auth: null,
      });
      expect(created.request_id).toMatch(/^[0-9a-f-]{36}$/);
      const read = await root.read(`transit/keys/${name}`);
      expect(read.data).toMatchObject({
        name,
        type: 'aes256-gcm96',
        latest_version: 1,
        min_decryption_version: 1,
        min_encryption_version: 0,
        deletion_allowed: false,
        supports_encryption: true,
        supports_decryption: true,
      });
      expect(Object.keys(read.data.keys)).toEqual(['1']);
      expect(read.data.keys['1']).toBeGreaterThan(1_600_000_000);
    });

    it('answers 404 for a key that does not exist, and refuses unknown key types', async () => {
      await expectVaultError(root.read(`transit/keys/${aKeyName()}`), 404);
      await expectVaultError(
        root.write(`transit/keys/${aKeyName()}`, { type: 'rot13' }),
        400,
        'unknown key type rot13',
      );
    });

    it('lists keys with GET ?list=true (noCustomHTTPVerbs)', async () => {
      const name = aKeyName();
      await root.write(`transit/keys/${name}`, {});
      const listed = await root.list('transit/keys');
      expect(listed.data.keys).toContain(name);
    });

    it('deletes a key only after deletion_allowed is set', async () => {
      const name = aKeyName();
      await root.write(`transit/keys/${name}`, {});
      await expectVaultError(
        root.delete(`transit/keys/${name}`),
        400,
        'deletion is not allowed for this key',
      );
      const configured = await root.write(`transit/keys/${name}/config`, { deletion_allowed: true });
      expect(configured.data.deletion_allowed).toBe(true);
      await root.delete(`transit/keys/${name}`);
      await expectVaultError(root.read(`transit/keys/${name}`), 404);
    });

    it('rotates: new ciphertexts use the new version and old ones still decrypt', async () => {
      const name = aKeyName();
      const v1 = await encrypt(name, 'first');
      const rotated = await root.write(`transit/keys/${name}/rotate`, {});
      expect(rotated.data.latest_version).toBe(2);
      const v2 = await encrypt(name, 'second');
      expect(v1).toMatch(/^vault:v1:/);
      expect(v2).toMatch(/^vault:v2:/);
      expect(await decrypt(name, v1)).toBe('first');
      expect(await decrypt(name, v2)).toBe('second');
      expect(Object.keys((await root.read(`transit/keys/${name}`)).data.keys)).toEqual(['1', '2']);
    });

    it('min_decryption_version refuses older ciphertexts with Vault’s error, and cannot exceed latest', async () => {
      const name = aKeyName();
      const v1 = await encrypt(name, 'old');
      await root.write(`transit/keys/${name}/rotate`, {});
      const v2 = await encrypt(name, 'new');
      await expectVaultError(
        root.write(`transit/keys/${name}/config`, { min_decryption_version: 3 }),
        400,
        'cannot set min decryption version of 3, latest key version is 2',
      );
      const configured = await root.write(`transit/keys/${name}/config`, { min_decryption_version: 2 });
      expect(configured.data.min_decryption_version).toBe(2);
      await expectVaultError(
        root.write(`transit/decrypt/${name}`, { ciphertext: v1 }),
        400,
        'ciphertext or signature version is disallowed by policy (too old)',
      );
      expect(await decrypt(name, v2)).toBe('new');
      await root.write(`transit/keys/${name}/config`, { min_decryption_version: '1' });
      expect(await decrypt(name, v1)).toBe('old');
    });
  });

  describe('encrypt and decrypt', () => {
    it('round-trips with associated data bound as AES-GCM AAD', async () => {
      const name = aKeyName();
      await root.write(`transit/keys/${name}`, {});
      const ciphertext = await encrypt(name, 'secret value', 'tenant-a');
      expect(ciphertext).toMatch(/^vault:v1:[A-Za-z0-9+/]+={0,2}$/);
      expect(await decrypt(name, ciphertext, 'tenant-a')).toBe('secret value');
      for (const wrong of ['tenant-b', undefined]) {
        await expectVaultError(
          root.write(`transit/decrypt/${name}`, {
            ciphertext,
            ...(wrong === undefined ? {} : { associated_data: b64(wrong) }),
          }),
          400,
          'cipher: message authentication failed',
        );
      }
    });

    it('creates a missing key on encrypt (upsert) but never on decrypt', async () => {
      const name = aKeyName();
      await expectVaultError(
        root.write(`transit/decrypt/${name}`, {
          ciphertext: 'vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
        }),
        400,
        'encryption key not found',
      );
      await expectVaultError(root.read(`transit/keys/${name}`), 404);
      await encrypt(name, 'x');
      expect((await root.read(`transit/keys/${name}`)).data.latest_version).toBe(1);
    });

    it('answers "encryption key not found" on encrypt when upsert is off', async () => {
      const strict = await startVaultEmulator({ upsertOnEncrypt: false });
      try {
        await expectVaultError(
          clientFor(strict).write('transit/encrypt/missing', { plaintext: b64('x') }),
          400,
          'encryption key not found',
        );
      } finally {
        await strict.close();
      }
    });

    it('refuses malformed ciphertexts with Vault’s messages', async () => {
      const name = aKeyName();
      const good = await encrypt(name, 'x');
      const body = good.slice('vault:v1:'.length);
      const cases: Array<[string, string]> = [
        [body, 'invalid ciphertext: no prefix'],
        [`vault:v1:${body}:extra`, 'invalid ciphertext: wrong number of fields'],
        [`vault:vX:${body}`, 'invalid ciphertext: version number could not be decoded'],
        [`vault:v9:${body}`, 'invalid ciphertext: version is too new'],
        ['vault:v1:not*base64', 'invalid ciphertext: could not decode base64'],
        ['vault:v1:AAAA', 'invalid ciphertext length'],
      ];
      for (const [ciphertext, message] of cases) {
        await expectVaultError(root.write(`transit/decrypt/${name}`, { ciphertext }), 400, message);
      }
      const other = aKeyName();
      await encrypt(other, 'y');
      await expectVaultError(
        root.write(`transit/decrypt/${other}`, { ciphertext: good }),
        400,
        'cipher: message authentication failed',
      );
    });

    it('refuses a plaintext that is not base64, and a missing one', async () => {
      const name = aKeyName();
      await expectVaultError(
        root.write(`transit/encrypt/${name}`, { plaintext: 'not base64!' }),
        400,
        'illegal base64 data at input byte 3',
      );
      await expectVaultError(root.write(`transit/encrypt/${name}`, {}), 400, 'missing plaintext to encrypt');
    });

    it('encrypts with an explicit key_version within bounds', async () => {
      const name = aKeyName();
      await root.write(`transit/keys/${name}`, {});
      await root.write(`transit/keys/${name}/rotate`, {});
      const pinned = await root.write(`transit/encrypt/${name}`, { plaintext: b64('p'), key_version: 1 });
      expect(pinned.data).toMatchObject({ key_version: 1 });
      expect(pinned.data.ciphertext).toMatch(/^vault:v1:/);
      await expectVaultError(
        root.write(`transit/encrypt/${name}`, { plaintext: b64('p'), key_version: 3 }),
        400,
        'requested version for encryption is higher than the latest key version',
      );
    });
  });

  describe('data keys and rewrap', () => {
    it('datakey/plaintext returns a 256-bit key and its wrapped form; datakey/wrapped only the latter', async () => {
      const name = aKeyName();
      await root.write(`transit/keys/${name}`, {});
      const plain = await root.write(`transit/datakey/plaintext/${name}`, {});
      const key = Buffer.from(plain.data.plaintext as string, 'base64');
      expect(key).toHaveLength(32);
      expect(plain.data).toMatchObject({ key_version: 1 });
      const unwrapped = await root.write(`transit/decrypt/${name}`, { ciphertext: plain.data.ciphertext });
      expect(Buffer.from(unwrapped.data.plaintext as string, 'base64').equals(key)).toBe(true);

      const wrapped = await root.write(`transit/datakey/wrapped/${name}`, { bits: 512 });
      expect(wrapped.data.plaintext).toBeUndefined();
      const opened = await root.write(`transit/decrypt/${name}`, { ciphertext: wrapped.data.ciphertext });
      expect(Buffer.from(opened.data.plaintext as string, 'base64')).toHaveLength(64);

      await expectVaultError(
        root.write(`transit/datakey/wrapped/${name}`, { bits: 100 }),
        400,
        'invalid bit length',
      );
      await expectVaultError(
        root.write(`transit/datakey/other/${name}`, {}),
        400,
        "Invalid path, must be 'plaintext' or 'wrapped'",
      );
      await expectVaultError(
        root.write(`transit/datakey/plaintext/${aKeyName()}`, {}),
        400,
        'encryption key not found',
      );
    });

    it('datakey ignores associated_data with a warning, as Vault does', async () => {
      const name = aKeyName();
      await root.write(`transit/keys/${name}`, {});
      const plain = await root.write(`transit/datakey/plaintext/${name}`, {
        associated_data: b64('tenant-a'),
      });
      expect(plain.warnings).toEqual(['Endpoint ignored these unrecognized parameters: [associated_data]']);
      // The key was wrapped without the associated data, so only a decrypt without it succeeds.
      await expectVaultError(
        root.write(`transit/decrypt/${name}`, {
          ciphertext: plain.data.ciphertext,
          associated_data: b64('tenant-a'),
        }),
        400,
        'cipher: message authentication failed',
      );
      await expect(
        root.write(`transit/decrypt/${name}`, { ciphertext: plain.data.ciphertext }),
      ).resolves.toBeDefined();
    });

    it('rewrap moves a ciphertext to the latest version without exposing it', async () => {
      const name = aKeyName();
      const v1 = await encrypt(name, 'payload');
      await root.write(`transit/keys/${name}/rotate`, {});
      const rewrapped = await root.write(`transit/rewrap/${name}`, { ciphertext: v1 });
      expect(rewrapped.data.key_version).toBe(2);
      expect(rewrapped.data.ciphertext).toMatch(/^vault:v2:/);
      await root.write(`transit/keys/${name}/config`, { min_decryption_version: 2 });
      expect(await decrypt(name, rewrapped.data.ciphertext as string)).toBe('payload');
    });

    it('rewrap cannot handle a ciphertext bound to associated data, as in Vault', async () => {
      const name = aKeyName();
      const bound = await encrypt(name, 'payload', 'tenant-a');
      const error = await expectVaultError(
        root.write(`transit/rewrap/${name}`, { ciphertext: bound, associated_data: b64('tenant-a') }),
        400,
        'cipher: message authentication failed',
      );
      expect(error.response?.statusCode).toBe(400);
      expect(await decrypt(name, bound, 'tenant-a')).toBe('payload');
    });
  });

  describe('mounts and namespaces', () => {
    it('serves transit on every configured mount, with keys kept apart', async () => {
      const name = aKeyName();
      const ciphertext = (await root.write(`tenants/byok/encrypt/${name}`, { plaintext: b64('m') })).data
        .ciphertext;
      const opened = await root.write(`tenants/byok/decrypt/${name}`, { ciphertext });
      expect(Buffer.from(opened.data.plaintext as string, 'base64').toString()).toBe('m');
      await expectVaultError(root.read(`transit/keys/${name}`), 404);
      await expectVaultError(
        root.write(`elsewhere/encrypt/${name}`, { plaintext: b64('m') }),
        404,
        `no handler for route "elsewhere/encrypt/${name}". route entry not found.`,
      );
    });

    it('accepts X-Vault-Namespace and keeps each namespace’s keys apart', async () => {
      const name = aKeyName();
      const teamA = clientFor(vault, { namespace: 'team-a' });
      const ciphertext = (await teamA.write(`transit/encrypt/${name}`, { plaintext: b64('ns') })).data
        .ciphertext;
      const opened = await teamA.write(`transit/decrypt/${name}`, { ciphertext });
      expect(Buffer.from(opened.data.plaintext as string, 'base64').toString()).toBe('ns');
      await expectVaultError(root.read(`transit/keys/${name}`), 404);
      await expectVaultError(clientFor(vault, { namespace: 'team-b' }).read(`transit/keys/${name}`), 404);
      expect((await clientFor(vault, { namespace: '/team-a/' }).read(`transit/keys/${name}`)).data.name).toBe(
        name,
      );
    });
  });

  describe('authentication', () => {
    it('answers 403 permission denied without a token, with an unknown token and with a revoked one', async () => {
      const name = aKeyName();
      await root.write(`transit/keys/${name}`, {});
      await expectVaultError(
        clientFor(vault, { token: undefined }).read(`transit/keys/${name}`),
        403,
        'permission denied',
      );
      await expectVaultError(
        clientFor(vault, { token: 'hvs.unknown' }).read(`transit/keys/${name}`),
        403,
        'permission denied',
      );
      const token = vault.createToken();
      const client = clientFor(vault, { token });
      await expect(client.read(`transit/keys/${name}`)).resolves.toBeDefined();
      vault.revokeToken(token);
      await expectVaultError(client.read(`transit/keys/${name}`), 403, 'permission denied');
    });

    it('restricts a token to its policy path prefixes', async () => {
      const name = aKeyName();
      const ciphertext = await encrypt(name, 'p');
      const encryptOnly = clientFor(vault, { token: vault.createToken([`transit/encrypt/${name}`]) });
      await expect(
        encryptOnly.write(`transit/encrypt/${name}`, { plaintext: b64('q') }),
      ).resolves.toBeDefined();
      await expectVaultError(
        encryptOnly.write(`transit/decrypt/${name}`, { ciphertext }),
        403,
        'permission denied',
      );
      await expectVaultError(encryptOnly.read(`transit/keys/${name}`), 403, 'permission denied');
      const self = await encryptOnly.tokenLookupSelf();
      expect(self.data.policies).toEqual(['default']);
    });

    it('expires a token after its TTL', async () => {
      const client = clientFor(vault, { token: vault.createToken(undefined, { ttlSeconds: 1 }) });
      const self = await client.tokenLookupSelf();
      expect(self.data.ttl).toBeLessThanOrEqual(1);
      await new Promise((resolve) => setTimeout(resolve, 1100));
      await expectVaultError(client.tokenLookupSelf(), 403, 'permission denied');
    });

    it('logs in with AppRole and issues a working, restricted, renewable token', async () => {
      const name = aKeyName();
      const roleId = crypto.randomUUID();
      const secretId = crypto.randomUUID();
      vault.addAppRole(roleId, secretId, [`transit/encrypt/${name}`]);
      const client = clientFor(vault, { token: undefined });
      const login = await client.approleLogin({ role_id: roleId, secret_id: secretId });
      expect(login.auth).toMatchObject({
        lease_duration: 3600,
        renewable: true,
        metadata: { role_name: roleId },
      });
      expect(login.auth.client_token).toMatch(/^hvs\./);
      // node-vault keeps the token from a login for later calls.
      expect(client.token).toBe(login.auth.client_token);
      await expect(client.write(`transit/encrypt/${name}`, { plaintext: b64('a') })).resolves.toBeDefined();
      await expectVaultError(client.read(`transit/keys/${name}`), 403, 'permission denied');

      expect(vault.revokeAppRoleTokens(roleId)).toBe(1);
      await expectVaultError(
        client.write(`transit/encrypt/${name}`, { plaintext: b64('a') }),
        403,
        'permission denied',
      );
    });

    it('answers 400 with Vault’s messages for a bad role id or secret id', async () => {
      const roleId = crypto.randomUUID();
      vault.addAppRole(roleId, crypto.randomUUID());
      const client = clientFor(vault, { token: undefined });
      await expectVaultError(
        client.approleLogin({ role_id: roleId, secret_id: crypto.randomUUID() }),
        400,
        'invalid secret id',
      );
      await expectVaultError(
        client.approleLogin({ role_id: crypto.randomUUID(), secret_id: crypto.randomUUID() }),
        400,
        'invalid role ID',
      );
      expect(client.token).toBeUndefined();
    });

    it('answers sys/health without a token', async () => {
      const health = await clientFor(vault, { token: undefined }).health();
      expect(health).toMatchObject({ initialized: true, sealed: false, standby: false });
    });
  });

  describe('fault knobs', () => {
    it('counts requests per operation, faulted or not', async () => {
      const name = aKeyName();
      const before = { requests: vault.requests, encrypt: vault.callsByOp['transit.encrypt'] ?? 0 };
      await encrypt(name, 'c');
      vault.faults.errorRate = 1;
      await apiError(encrypt(name, 'c'));
      expect(vault.requests).toBe(before.requests + 2);
      expect(vault.callsByOp['transit.encrypt']).toBe(before.encrypt + 2);
    });

    it('latencyMs delays every answer', async () => {
      vault.faults.latencyMs = 250;
      const started = performance.now();
      await root.health();
      expect(performance.now() - started).toBeGreaterThanOrEqual(240);
    });

    it("errorRate 1 answers 500 'internal error', or 503 'Vault is sealed'", async () => {
      vault.faults.errorRate = 1;
      await expectVaultError(
        root.write(`transit/encrypt/${aKeyName()}`, { plaintext: b64('x') }),
        500,
        'internal error',
      );
      vault.faults.errorKind = 'sealed';
      try {
        await expectVaultError(
          root.write(`transit/encrypt/${aKeyName()}`, { plaintext: b64('x') }),
          503,
          'Vault is sealed',
        );
      } finally {
        vault.faults.errorKind = 'internal';
      }
    });

    it('redirectTo answers 307 to the same path at another address, without serving the request', async () => {
      const before = vault.callsByOp['transit.encrypt'] ?? 0;
      vault.faults.redirectTo = 'http://169.254.169.254/';
      try {
        const res = await fetch(`${vault.url}/v1/transit/encrypt/k`, {
          method: 'POST',
          redirect: 'manual',
          headers: { 'x-vault-token': vault.rootToken },
          body: '{}',
        });
        expect({ status: res.status, location: res.headers.get('location') }).toEqual({
          status: 307,
          location: 'http://169.254.169.254/v1/transit/encrypt/k',
        });
      } finally {
        vault.faults.clear();
      }
      expect(vault.callsByOp['transit.encrypt']).toBe(before + 1);
    });

    it('hang holds requests until the client times out; clearing it releases held requests', async () => {
      const name = aKeyName();
      await root.write(`transit/keys/${name}`, {});
      vault.faults.hang = true;
      const timedOut = await apiError(clientFor(vault, { timeout: 300 }).read(`transit/keys/${name}`));
      expect(timedOut.code).toBe('ECONNABORTED');
      expect(timedOut.response).toBeUndefined();

      const held = root.read(`transit/keys/${name}`);
      let settled = false;
      void held.finally(() => (settled = true)).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(settled).toBe(false);
      vault.faults.hang = false;
      await expect(held).resolves.toMatchObject({ data: { name } });
    });
  });
});
