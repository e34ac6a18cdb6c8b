import crypto from 'node:crypto';
import { inspect } from 'node:util';
import { RootKeyring } from '../../../src/common/root-keyring.js';

function aKey(): string {
  return crypto.randomBytes(32).toString('base64');
}

function parseError(spec: string): string {
  try {
    RootKeyring.parse(spec);
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('expected RootKeyring.parse to throw');
}

describe('RootKeyring.parse', () => {
  it('reads versions and keys; the highest version is current', () => {
    const k1 = aKey();
    const k2 = aKey();
    const keyring = RootKeyring.parse(`v1:${k1},v2:${k2}`);
    expect(keyring.versions()).toEqual(['v1', 'v2']);
    expect(keyring.currentVersion).toBe('v2');
    expect(keyring.key('v1')?.toString('base64')).toBe(k1);
    expect(keyring.key('v2')?.toString('base64')).toBe(k2);
    expect(keyring.key('v3')).toBeUndefined();
  });

  it('orders versions numerically, whatever the order in the spec', () => {
    const keyring = RootKeyring.parse(`v10:${aKey()}, v2:${aKey()} ,v9:${aKey()}`);
    expect(keyring.versions()).toEqual(['v2', 'v9', 'v10']);
    expect(keyring.currentVersion).toBe('v10');
  });

  it('tolerates surrounding whitespace (a trailing newline from a secret file)', () => {
    expect(RootKeyring.parse(`  v1:${aKey()}\n`).versions()).toEqual(['v1']);
  });

  it('hands out copies, so a caller zeroing its key does not damage the keyring', () => {
    const k1 = aKey();
    const keyring = RootKeyring.parse(`v1:${k1}`);
    keyring.key('v1')?.fill(0);
    expect(keyring.key('v1')?.toString('base64')).toBe(k1);
  });

  it.each([
    ['', 'CUSTOS_ROOT_KEYS is empty'],
    ['   ', 'CUSTOS_ROOT_KEYS is empty'],
    [`v1:${aKey()},`, 'CUSTOS_ROOT_KEYS: entry 2 is empty'],
    [`v1:${aKey()},,v2:${aKey()}`, 'CUSTOS_ROOT_KEYS: entry 2 is empty'],
  ])('refuses an empty spec or entry (%j)', (spec, message) => {
    expect(parseError(spec)).toBe(message);
  });

  it.each([
    ['no colon', 'v1'],
    ['no version', `:${aKey()}`],
    ['no v prefix', `1:${aKey()}`],
    ['version zero', `v0:${aKey()}`],
    ['negative version', `v-1:${aKey()}`],
    ['leading zero', `v01:${aKey()}`],
    ['non-numeric version', `vX:${aKey()}`],
  ])('refuses a malformed version (%s)', (_case, entry) => {
    expect(parseError(`v7:${aKey()},${entry}`)).toBe(
      'CUSTOS_ROOT_KEYS: entry 2 must look like v<positive integer>:<base64 of 32 bytes>',
    );
  });

  it('refuses duplicate versions', () => {
    expect(parseError(`v1:${aKey()},v2:${aKey()},v1:${aKey()}`)).toBe(
      'CUSTOS_ROOT_KEYS: entry 3: version v1 appears more than once',
    );
  });

  it.each([
    ['16 bytes', crypto.randomBytes(16).toString('base64')],
    ['31 bytes', crypto.randomBytes(31).toString('base64')],
    ['33 bytes', crypto.randomBytes(33).toString('base64')],
    ['64 bytes', crypto.randomBytes(64).toString('base64')],
    ['empty', ''],
    ['hex', crypto.randomBytes(32).toString('hex')],
    ['unpadded', aKey().slice(0, 43)],
    ['base64url alphabet', `${'-_'.repeat(21)}A=`],
    ['non-canonical last character', `${'A'.repeat(42)}B=`],
    ['characters outside base64', `${'A'.repeat(42)}!=`],
  ])('refuses a key that is not 32 bytes of base64 (%s)', (_case, encoded) => {
    const message = parseError(`v1:${aKey()},v2:${encoded}`);
    expect(message).toBe('CUSTOS_ROOT_KEYS: entry 2 (v2) is not 32 bytes of base64');
  });

  it('never puts key material in an error message', () => {
    const good = aKey();
    const bad = crypto.randomBytes(31).toString('base64');
    const message = parseError(`v1:${good},v2:${bad}`);
    expect(message).not.toContain(good);
    expect(message).not.toContain(bad);
    expect(message).not.toContain(bad.slice(0, 8));
  });
});

describe('RootKeyring.generateSpec', () => {
  it('makes a parseable single-version spec with a fresh random key', () => {
    const spec = RootKeyring.generateSpec();
    expect(spec).toMatch(/^v1:[A-Za-z0-9+/]{43}=$/);
    const keyring = RootKeyring.parse(spec);
    expect(keyring.versions()).toEqual(['v1']);
    expect(keyring.key('v1')).toHaveLength(32);
    expect(RootKeyring.generateSpec()).not.toBe(spec);
  });
});

describe('RootKeyring printing', () => {
  const k1 = aKey();
  const k2 = aKey();
  const keyring = RootKeyring.parse(`v1:${k1},v2:${k2}`);

  it('shows only the versions', () => {
    expect(keyring.toString()).toBe('[RootKeyring v1,v2]');
    expect(String(keyring)).toBe('[RootKeyring v1,v2]');
    expect(inspect(keyring)).toBe('[RootKeyring v1,v2]');
    expect(JSON.stringify({ keyring })).toBe('{"keyring":"[RootKeyring v1,v2]"}');
  });

  it('never reveals a key through toString, inspect, JSON, spread or key listing', () => {
    const renderings = [
      String(keyring),
      inspect(keyring, { showHidden: true, depth: Infinity }),
      inspect({ nested: { keyring } }, { depth: Infinity }),
      JSON.stringify(keyring),
      JSON.stringify({ ...keyring }),
      JSON.stringify(Object.getOwnPropertyNames(keyring)),
    ];
    for (const rendering of renderings) {
      for (const key of [k1, k2]) {
        expect(rendering).not.toContain(key);
        expect(rendering).not.toContain(Buffer.from(key, 'base64').toString('hex'));
      }
    }
  });
});
