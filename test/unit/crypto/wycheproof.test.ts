import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../../../src/common/paths.js';
import { aes256GcmDecrypt, aes256GcmEncrypt, hkdfSha256 } from '../../../src/crypto/envelope.js';

// Project Wycheproof (C2SP/wycheproof, testvectors_v1, Apache-2.0); see test/fixtures/wycheproof/README.md.
const fixtures = path.join(packageRoot, 'test', 'fixtures', 'wycheproof');

interface VectorFile<G> {
  algorithm: string;
  testGroups: G[];
}

interface AeadGroup {
  keySize: number;
  ivSize: number;
  tagSize: number;
  tests: Array<{
    tcId: number;
    key: string;
    iv: string;
    aad: string;
    msg: string;
    ct: string;
    tag: string;
    result: 'valid' | 'invalid' | 'acceptable';
    flags: string[];
  }>;
}

interface HkdfGroup {
  tests: Array<{
    tcId: number;
    ikm: string;
    salt: string;
    info: string;
    size: number;
    okm: string;
    result: 'valid' | 'invalid' | 'acceptable';
  }>;
}

function load<G>(file: string): VectorFile<G> {
  return JSON.parse(fs.readFileSync(path.join(fixtures, file), 'utf8')) as VectorFile<G>;
}

const hex = (value: string): Buffer => Buffer.from(value, 'hex');

describe('Wycheproof AES-GCM vectors against aes256GcmEncrypt / aes256GcmDecrypt', () => {
  const file = load<AeadGroup>('aes_gcm_test.json');
  // Only the parameters the envelope and the managed key backend use: 256-bit key, 96-bit IV, 128-bit tag.
  const vectors = file.testGroups
    .filter((group) => group.keySize === 256 && group.ivSize === 96 && group.tagSize === 128)
    .flatMap((group) => group.tests);
  const valid = vectors.filter((v) => v.result === 'valid');
  const invalid = vectors.filter((v) => v.result === 'invalid');

  // The count is in the test name, so a run reports it without console output.
  it(`runs ${vectors.length} AES-256-GCM / 96-bit IV / 128-bit tag vectors (${valid.length} valid, ${invalid.length} invalid)`, () => {
    expect(file.algorithm).toBe('AES-GCM');
    expect(valid.length).toBeGreaterThan(0);
    expect(invalid.length).toBeGreaterThan(0);
    expect(valid.length + invalid.length).toBe(vectors.length);
  });

  it.each(valid.map((v) => [v.tcId, v] as const))('accepts valid tcId %i', (_tcId, v) => {
    const { ciphertext, tag } = aes256GcmEncrypt(hex(v.key), hex(v.iv), hex(v.aad), hex(v.msg));
    expect(ciphertext.toString('hex')).toBe(v.ct);
    expect(tag.toString('hex')).toBe(v.tag);
    expect(aes256GcmDecrypt(hex(v.key), hex(v.iv), hex(v.aad), hex(v.ct), hex(v.tag)).toString('hex')).toBe(
      v.msg,
    );
  });

  it.each(invalid.map((v) => [v.tcId, v] as const))('rejects invalid tcId %i', (_tcId, v) => {
    expect(() => aes256GcmDecrypt(hex(v.key), hex(v.iv), hex(v.aad), hex(v.ct), hex(v.tag))).toThrow();
  });

  it('refuses truncated tags, other key sizes and other IV sizes', () => {
    const [v] = valid;
    expect(() =>
      aes256GcmDecrypt(hex(v.key), hex(v.iv), hex(v.aad), hex(v.ct), hex(v.tag).subarray(0, 12)),
    ).toThrow(/tag must be 16 bytes/);
    expect(() => aes256GcmEncrypt(Buffer.alloc(16), hex(v.iv), hex(v.aad), hex(v.msg))).toThrow(/32 bytes/);
    expect(() => aes256GcmEncrypt(hex(v.key), Buffer.alloc(16), hex(v.aad), hex(v.msg))).toThrow(/12 bytes/);
  });
});

describe('Wycheproof HKDF-SHA256 vectors against hkdfSha256', () => {
  const file = load<HkdfGroup>('hkdf_sha256_test.json');
  const vectors = file.testGroups.flatMap((group) => group.tests);
  const valid = vectors.filter((v) => v.result === 'valid');
  const invalid = vectors.filter((v) => v.result === 'invalid');

  it(`runs ${vectors.length} HKDF-SHA256 vectors (${valid.length} valid, ${invalid.length} invalid)`, () => {
    expect(file.algorithm).toBe('HKDF-SHA-256');
    expect(valid.length).toBeGreaterThan(0);
    expect(valid.length + invalid.length).toBe(vectors.length);
  });

  it.each(valid.map((v) => [v.tcId, v] as const))('accepts valid tcId %i', (_tcId, v) => {
    expect(hkdfSha256(hex(v.ikm), hex(v.salt), hex(v.info), v.size).toString('hex')).toBe(v.okm);
  });

  it.each(invalid.map((v) => [v.tcId, v] as const))('rejects invalid tcId %i', (_tcId, v) => {
    expect(() => hkdfSha256(hex(v.ikm), hex(v.salt), hex(v.info), v.size)).toThrow();
  });
});
