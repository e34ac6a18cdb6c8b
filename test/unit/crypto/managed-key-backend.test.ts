import crypto from 'node:crypto';
import { inspect } from 'node:util';
import { CustosException } from '../../../src/common/errors.js';
import type { DataKeyContext } from '../../../src/crypto/key-backend.js';
import { openField, sealField } from '../../../src/crypto/envelope.js';
import { ManagedKeyBackend } from '../../../src/crypto/managed-key-backend.js';
import { RootKeyring } from '../../../src/common/root-keyring.js';

function aRootKey(): string {
  return crypto.randomBytes(32).toString('base64');
}

function aContext(overrides: Partial<DataKeyContext> = {}): DataKeyContext {
  return { tenantId: 'tenant-a', dataKeyId: crypto.randomUUID(), ...overrides };
}

async function expectCode(
  promise: Promise<unknown>,
  code: CustosException['code'],
): Promise<CustosException> {
  const error: unknown = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(CustosException);
  expect((error as CustosException).code).toBe(code);
  return error as CustosException;
}

describe('ManagedKeyBackend', () => {
  const v1 = aRootKey();
  const v2 = aRootKey();
  const keyringV1 = RootKeyring.parse(`v1:${v1}`);
  const keyringV1V2 = RootKeyring.parse(`v1:${v1},v2:${v2}`);
  const keyringV2Only = RootKeyring.parse(`v2:${v2}`);

  it('is the managed backend', () => {
    expect(new ManagedKeyBackend(keyringV1).type).toBe('managed');
  });

  it('generates a fresh 32-byte data key and unwraps it back', async () => {
    const backend = new ManagedKeyBackend(keyringV1);
    const ctx = aContext();
    const generated = await backend.generateDataKey(ctx);
    expect(generated.plaintext).toHaveLength(32);
    expect(generated.keyRef).toBe('v1');
    expect(generated.wrapped.includes(generated.plaintext)).toBe(false);
    expect(await backend.unwrapDataKey(generated.wrapped, ctx)).toEqual(generated.plaintext);

    const other = await backend.generateDataKey(ctx);
    expect(other.plaintext.equals(generated.plaintext)).toBe(false);
    expect(other.wrapped.equals(generated.wrapped)).toBe(false);
  });

  it('writes the documented layout: "CMK", format 1, length-prefixed root version, IV, ciphertext, tag', async () => {
    const { wrapped } = await new ManagedKeyBackend(keyringV1V2).generateDataKey(aContext());
    expect(wrapped.subarray(0, 3).toString('ascii')).toBe('CMK');
    expect(wrapped[3]).toBe(1);
    expect(wrapped[4]).toBe(2);
    expect(wrapped.subarray(5, 7).toString('ascii')).toBe('v2');
    expect(wrapped).toHaveLength(7 + 12 + 32 + 16);
  });

  it('produces data keys that seal and open envelopes', async () => {
    const backend = new ManagedKeyBackend(keyringV1);
    const ctx = aContext();
    const { plaintext, wrapped } = await backend.generateDataKey(ctx);
    const binding = {
      tenantId: ctx.tenantId,
      scope: 'connection',
      recordId: 'r-1',
      field: 'access_token',
      dataKeyId: ctx.dataKeyId,
    };
    const envelope = sealField(plaintext, binding, Buffer.from('token'));
    const unwrapped = await backend.unwrapDataKey(wrapped, ctx);
    expect(openField(unwrapped, binding, envelope).toString()).toBe('token');
  });

  it.each([
    ['another tenant', { tenantId: 'tenant-b' }],
    ['another data key id', { dataKeyId: '00000000-0000-4000-8000-000000000000' }],
  ])('refuses to unwrap for %s (key_invalid)', async (_case, overrides) => {
    const backend = new ManagedKeyBackend(keyringV1);
    const ctx = aContext();
    const { wrapped } = await backend.generateDataKey(ctx);
    await expectCode(backend.unwrapDataKey(wrapped, { ...ctx, ...overrides }), 'key_invalid');
  });

  it('refuses a blob with any single byte changed', async () => {
    const backend = new ManagedKeyBackend(keyringV1V2);
    const ctx = aContext();
    const { wrapped } = await backend.generateDataKey(ctx);
    for (let position = 0; position < wrapped.length; position++) {
      const tampered = Buffer.from(wrapped);
      tampered[position] ^= 0x01;
      // Byte 6 is the digit of "v2": flipped, it names v3, which this keyring does not hold.
      await expectCode(
        backend.unwrapDataKey(tampered, ctx),
        position === 6 ? 'key_unavailable' : 'key_invalid',
      );
    }
  });

  it('refuses a blob re-labelled with another root version that is present (v2 → v1)', async () => {
    const backend = new ManagedKeyBackend(keyringV1V2);
    const ctx = aContext();
    const { wrapped } = await backend.generateDataKey(ctx);
    const relabelled = Buffer.from(wrapped);
    relabelled.write('v1', 5, 'ascii');
    await expectCode(backend.unwrapDataKey(relabelled, ctx), 'key_invalid');
  });

  it('refuses malformed blobs with key_invalid', async () => {
    const backend = new ManagedKeyBackend(keyringV1);
    const ctx = aContext();
    const { wrapped } = await backend.generateDataKey(ctx);
    const candidates = [
      Buffer.alloc(0),
      wrapped.subarray(0, 4),
      wrapped.subarray(0, wrapped.length - 1),
      Buffer.concat([wrapped, Buffer.of(0)]),
      Buffer.concat([Buffer.from('CMK'), Buffer.of(2), wrapped.subarray(4)]),
      Buffer.concat([Buffer.from('XMK'), wrapped.subarray(3)]),
      Buffer.concat([Buffer.from('CMK'), Buffer.of(1, 0), Buffer.alloc(60)]),
      Buffer.concat([Buffer.from('CMK'), Buffer.of(1, 2), Buffer.from('x1'), wrapped.subarray(7)]),
    ];
    for (const candidate of candidates) {
      await expectCode(backend.unwrapDataKey(candidate, ctx), 'key_invalid');
    }
  });

  it('gives generic error messages without key material', async () => {
    const backend = new ManagedKeyBackend(keyringV1);
    const ctx = aContext();
    const { wrapped, plaintext } = await backend.generateDataKey(ctx);
    const error = await expectCode(backend.unwrapDataKey(wrapped, aContext()), 'key_invalid');
    for (const secret of [v1, plaintext.toString('base64'), plaintext.toString('hex')]) {
      expect(error.message).not.toContain(secret);
    }
  });

  describe('root key rotation', () => {
    it('keeps unwrapping v1 blobs after v2 is added, and wraps new keys under v2', async () => {
      const ctx = aContext();
      const old = await new ManagedKeyBackend(keyringV1).generateDataKey(ctx);
      expect(old.keyRef).toBe('v1');

      const rotated = new ManagedKeyBackend(keyringV1V2);
      expect(await rotated.unwrapDataKey(old.wrapped, ctx)).toEqual(old.plaintext);
      const fresh = await rotated.generateDataKey(aContext());
      expect(fresh.keyRef).toBe('v2');
    });

    it('reports key_unavailable for a blob whose root version is no longer in the keyring', async () => {
      const ctx = aContext();
      const { wrapped } = await new ManagedKeyBackend(keyringV1).generateDataKey(ctx);
      const error = await expectCode(
        new ManagedKeyBackend(keyringV2Only).unwrapDataKey(wrapped, ctx),
        'key_unavailable',
      );
      expect(error.message).toBe('root key version v1 is not in the keyring');
    });

    it('rewraps a v1 blob under v2 without changing the data key', async () => {
      const ctx = aContext();
      const old = await new ManagedKeyBackend(keyringV1).generateDataKey(ctx);
      const rewrapped = await new ManagedKeyBackend(keyringV1V2).rewrapDataKey(old.wrapped, ctx);
      expect(rewrapped.keyRef).toBe('v2');
      expect(rewrapped.wrapped.subarray(5, 7).toString('ascii')).toBe('v2');
      // Once v1 is retired, the rewrapped blob still opens to the same data key.
      expect(await new ManagedKeyBackend(keyringV2Only).unwrapDataKey(rewrapped.wrapped, ctx)).toEqual(
        old.plaintext,
      );
    });

    it('refuses to rewrap for the wrong context', async () => {
      const ctx = aContext();
      const old = await new ManagedKeyBackend(keyringV1).generateDataKey(ctx);
      await expectCode(
        new ManagedKeyBackend(keyringV1V2).rewrapDataKey(old.wrapped, aContext({ tenantId: 'tenant-b' })),
        'key_invalid',
      );
    });
  });

  it('passes check() with a working keyring', async () => {
    await expect(new ManagedKeyBackend(keyringV1V2).check()).resolves.toBeUndefined();
  });

  it('refuses an invalid context when generating', async () => {
    const backend = new ManagedKeyBackend(keyringV1);
    await expectCode(backend.generateDataKey({ tenantId: '', dataKeyId: 'k' }), 'internal_error');
    await expectCode(backend.generateDataKey({ tenantId: 't', dataKeyId: 'k\u0000' }), 'internal_error');
  });

  it('never reveals root or wrap keys when printed', async () => {
    const backend = new ManagedKeyBackend(keyringV1V2);
    await backend.check(); // populate the derived wrap key cache
    const renderings = [
      String(backend),
      inspect(backend, { showHidden: true, depth: Infinity }),
      JSON.stringify(backend),
    ];
    for (const rendering of renderings) {
      expect(rendering).not.toContain(v1);
      expect(rendering).not.toContain(v2);
      expect(rendering).not.toMatch(/[0-9a-f]{64}/);
    }
  });
});
