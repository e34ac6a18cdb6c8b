import crypto from 'node:crypto';
import fc from 'fast-check';
import { CustosException } from '../../../src/common/errors.js';
import {
  ENVELOPE_VERSION,
  MAX_BINDING_PART_BYTES,
  canonicalAad,
  openField,
  readEnvelopeHeader,
  sealField,
  type FieldBinding,
} from '../../../src/crypto/envelope.js';

const HEADER_BYTES = 65;
const TAG_BYTES = 16;

function aDataKey(): Buffer {
  return crypto.randomBytes(32);
}

function aBinding(overrides: Partial<FieldBinding> = {}): FieldBinding {
  return {
    tenantId: 'tenant-a',
    scope: 'connection',
    recordId: '5b3c8a0e-6f1d-4c2a-9e7b-1a2b3c4d5e6f',
    field: 'access_token',
    dataKeyId: '0f8e7d6c-5b4a-4938-8776-655443322110',
    ...overrides,
  };
}

function expectCode(fn: () => unknown, code: CustosException['code']): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(CustosException);
  expect((caught as CustosException).code).toBe(code);
}

describe('sealField / openField', () => {
  it('opens what it sealed', () => {
    const key = aDataKey();
    const binding = aBinding();
    const plaintext = Buffer.from('ya29.a0AfH6SMBx-the-access-token');
    expect(openField(key, binding, sealField(key, binding, plaintext))).toEqual(plaintext);
  });

  it('seals and opens an empty plaintext', () => {
    const key = aDataKey();
    const envelope = sealField(key, aBinding(), Buffer.alloc(0));
    expect(envelope).toHaveLength(HEADER_BYTES + TAG_BYTES);
    expect(openField(key, aBinding(), envelope)).toEqual(Buffer.alloc(0));
  });

  it('has the documented layout: "CSE", version, algorithm, key id, salt, IV, ciphertext, tag', () => {
    const binding = aBinding();
    const plaintext = Buffer.from('abc');
    const envelope = sealField(aDataKey(), binding, plaintext);
    expect(envelope.subarray(0, 3).toString('ascii')).toBe('CSE');
    expect(envelope[3]).toBe(ENVELOPE_VERSION);
    expect(envelope[4]).toBe(1);
    expect(envelope.subarray(5, 21).toString('hex')).toBe(binding.dataKeyId.replaceAll('-', ''));
    expect(envelope).toHaveLength(HEADER_BYTES + plaintext.length + TAG_BYTES);
  });

  it('uses a fresh salt and IV for every seal, so two seals of the same input differ', () => {
    const key = aDataKey();
    const plaintext = Buffer.from('same secret');
    const first = sealField(key, aBinding(), plaintext);
    const second = sealField(key, aBinding(), plaintext);
    expect(first.equals(second)).toBe(false);
    expect(first.subarray(21, 53).equals(second.subarray(21, 53))).toBe(false); // salt
    expect(first.subarray(53, 65).equals(second.subarray(53, 65))).toBe(false); // IV
    expect(first.subarray(HEADER_BYTES).equals(second.subarray(HEADER_BYTES))).toBe(false);
  });

  it('never puts the plaintext in the envelope', () => {
    const plaintext = Buffer.from('sk_live_51HrQpJ-very-recognisable-secret-value');
    const envelope = sealField(aDataKey(), aBinding(), plaintext);
    expect(envelope.includes(plaintext)).toBe(false);
    expect(envelope.includes(plaintext.subarray(0, 8))).toBe(false);
  });

  it('fails when any single byte of the envelope is changed', () => {
    const key = aDataKey();
    const binding = aBinding();
    const envelope = sealField(key, binding, Buffer.from('tok'));
    for (let position = 0; position < envelope.length; position++) {
      for (const mask of [0x01, 0x80]) {
        const tampered = Buffer.from(envelope);
        tampered[position] ^= mask;
        expectCode(() => openField(key, binding, tampered), 'decryption_failed');
      }
    }
  });

  describe('a ciphertext copied to another row, field or tenant does not open', () => {
    const changes: Array<[keyof FieldBinding, string]> = [
      ['tenantId', 'tenant-b'],
      ['scope', 'provider_app'],
      ['recordId', '5b3c8a0e-6f1d-4c2a-9e7b-1a2b3c4d5e70'],
      ['field', 'refresh_token'],
      ['dataKeyId', '0f8e7d6c-5b4a-4938-8776-655443322111'],
    ];
    it.each(changes)('when %s differs', (name, value) => {
      const key = aDataKey();
      const envelope = sealField(key, aBinding(), Buffer.from('secret'));
      expectCode(() => openField(key, aBinding({ [name]: value }), envelope), 'decryption_failed');
    });
  });

  it('fails with another data key', () => {
    const envelope = sealField(aDataKey(), aBinding(), Buffer.from('secret'));
    expectCode(() => openField(aDataKey(), aBinding(), envelope), 'decryption_failed');
  });

  it('fails on truncated, empty, unknown-version and wrong-magic envelopes', () => {
    const key = aDataKey();
    const binding = aBinding();
    const envelope = sealField(key, binding, Buffer.from('secret'));
    const withByte = (offset: number, value: number): Buffer => {
      const copy = Buffer.from(envelope);
      copy[offset] = value;
      return copy;
    };
    const broken: Buffer[] = [
      Buffer.alloc(0),
      envelope.subarray(0, 3),
      envelope.subarray(0, HEADER_BYTES),
      envelope.subarray(0, envelope.length - 1),
      envelope.subarray(0, HEADER_BYTES + TAG_BYTES - 1),
      Buffer.concat([envelope, Buffer.of(0)]),
      withByte(3, 2), // unknown version
      withByte(3, 0),
      withByte(4, 2), // unknown algorithm
      withByte(0, 'X'.charCodeAt(0)), // wrong magic
    ];
    for (const candidate of broken) {
      expectCode(() => openField(key, binding, candidate), 'decryption_failed');
    }
  });

  it('gives one generic message that names nothing secret', () => {
    const plaintext = Buffer.from('secret-value');
    const key = aDataKey();
    const envelope = sealField(key, aBinding(), plaintext);
    const messages = new Set<string>();
    for (const attempt of [
      () => openField(aDataKey(), aBinding(), envelope),
      () => openField(key, aBinding({ tenantId: 'other' }), envelope),
      () => openField(key, aBinding(), envelope.subarray(0, 10)),
      () => openField(Buffer.alloc(5), aBinding(), envelope),
    ]) {
      try {
        attempt();
      } catch (error) {
        messages.add((error as Error).message);
      }
    }
    expect(messages.size).toBe(1);
    const [message] = [...messages];
    expect(message).not.toContain('secret-value');
    expect(message).not.toContain(key.toString('hex'));
    expect(message).not.toContain(key.toString('base64'));
  });

  it('round-trips any plaintext up to 4 KiB', () => {
    const key = aDataKey();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), (bytes) => {
        const plaintext = Buffer.from(bytes);
        const envelope = sealField(key, aBinding(), plaintext);
        expect(envelope).toHaveLength(HEADER_BYTES + plaintext.length + TAG_BYTES);
        expect(openField(key, aBinding(), envelope).equals(plaintext)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  describe('refuses invalid input when sealing', () => {
    it.each([0, 16, 31, 33, 64])('a %i-byte data key', (length) => {
      expectCode(() => sealField(Buffer.alloc(length), aBinding(), Buffer.from('x')), 'internal_error');
    });

    const badBindings: Array<[string, Partial<FieldBinding>]> = [
      ['empty tenantId', { tenantId: '' }],
      ['empty scope', { scope: '' }],
      ['empty recordId', { recordId: '' }],
      ['empty field', { field: '' }],
      ['NUL in tenantId', { tenantId: 'a\u0000b' }],
      ['NUL in field', { field: 'access_token\u0000' }],
      ['lone surrogate in recordId', { recordId: 'a\uD800' }],
      ['over-long recordId', { recordId: 'r'.repeat(MAX_BINDING_PART_BYTES + 1) }],
      ['non-UUID dataKeyId', { dataKeyId: 'key-1' }],
      ['uppercase dataKeyId', { dataKeyId: '0F8E7D6C-5B4A-4938-8776-655443322110' }],
    ];
    it.each(badBindings)('%s', (_name, overrides) => {
      expectCode(() => sealField(aDataKey(), aBinding(overrides), Buffer.from('x')), 'internal_error');
    });

    it('accepts each binding part at the byte limit', () => {
      const key = aDataKey();
      const long = 'é'.repeat(MAX_BINDING_PART_BYTES / 2);
      const binding = aBinding({ tenantId: long, scope: long, recordId: long, field: long });
      expect(openField(key, binding, sealField(key, binding, Buffer.from('x'))).toString()).toBe('x');
    });
  });
});

describe('readEnvelopeHeader', () => {
  it('reads the version and the data key id without the key', () => {
    const binding = aBinding();
    const envelope = sealField(aDataKey(), binding, Buffer.from('secret'));
    expect(readEnvelopeHeader(envelope)).toEqual({ version: ENVELOPE_VERSION, dataKeyId: binding.dataKeyId });
  });

  it('refuses malformed envelopes and unknown versions', () => {
    const envelope = sealField(aDataKey(), aBinding(), Buffer.from('secret'));
    const unknownVersion = Buffer.from(envelope);
    unknownVersion[3] = 9;
    const wrongMagic = Buffer.from(envelope);
    wrongMagic[1] = 0;
    for (const candidate of [Buffer.alloc(0), envelope.subarray(0, 40), unknownVersion, wrongMagic]) {
      expectCode(() => readEnvelopeHeader(candidate), 'decryption_failed');
    }
  });
});

describe('canonicalAad', () => {
  it('separates components that plain concatenation would merge', () => {
    const a = canonicalAad(aBinding({ recordId: 'a', field: 'bc' }), 1);
    const b = canonicalAad(aBinding({ recordId: 'ab', field: 'c' }), 1);
    expect(a.equals(b)).toBe(false);
  });

  it('includes the version', () => {
    expect(canonicalAad(aBinding(), 1).equals(canonicalAad(aBinding(), 2))).toBe(false);
  });

  it('is deterministic', () => {
    expect(canonicalAad(aBinding(), 1).equals(canonicalAad(aBinding(), 1))).toBe(true);
  });

  it('never gives two different bindings the same bytes', () => {
    // A tiny alphabet with a multi-byte character and the length-prefix byte values makes near-collisions
    // (shifted boundaries, equal byte strings split differently) common.
    const part = fc.string({
      unit: fc.constantFrom('a', 'b', '\u0001', '\u0002', 'é', '\u{1F511}'),
      minLength: 1,
      maxLength: 6,
    });
    const binding = fc.record({
      tenantId: part,
      scope: part,
      recordId: part,
      field: part,
      dataKeyId: fc.constantFrom(
        '0f8e7d6c-5b4a-4938-8776-655443322110',
        '00000000-0000-4000-8000-000000000000',
      ),
    });
    const version = fc.integer({ min: 1, max: 255 });
    fc.assert(
      fc.property(binding, version, binding, version, (b1, v1, b2, v2) => {
        const same =
          v1 === v2 &&
          b1.tenantId === b2.tenantId &&
          b1.scope === b2.scope &&
          b1.recordId === b2.recordId &&
          b1.field === b2.field &&
          b1.dataKeyId === b2.dataKeyId;
        expect(canonicalAad(b1, v1).equals(canonicalAad(b2, v2))).toBe(same);
      }),
      { numRuns: 2000 },
    );
  });

  it('never gives bindings that differ in one component the same bytes', () => {
    const names = ['tenantId', 'scope', 'recordId', 'field'] as const;
    fc.assert(
      fc.property(
        fc.constantFrom(...names),
        fc.string({ unit: 'binary', minLength: 1, maxLength: 20 }),
        fc.string({ unit: 'binary', minLength: 1, maxLength: 20 }),
        (name, x, y) => {
          fc.pre(x !== y && !x.includes('\u0000') && !y.includes('\u0000'));
          const a = canonicalAad(aBinding({ [name]: x }), 1);
          const b = canonicalAad(aBinding({ [name]: y }), 1);
          expect(a.equals(b)).toBe(false);
        },
      ),
    );
  });
});
