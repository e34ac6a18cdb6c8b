/**
 * The managed backend's root keyring, parsed from CUSTOS_ROOT_KEYS: `v1:<base64 of 32 bytes>,v2:<base64>,…`.
 * The highest version wraps new data keys; every version unwraps. Nothing on this class ever prints a key:
 * toString, util.inspect and JSON.stringify show only the version names.
 */
import crypto from 'node:crypto';
import { inspect } from 'node:util';

const ROOT_KEY_BYTES = 32;
/** `v` and a positive integer without leading zeros (so "v01" cannot shadow "v1"); at most 9 digits. */
const VERSION_PATTERN = /^v[1-9][0-9]{0,8}$/;
/** Standard base64 of exactly 32 bytes: 43 characters and one '=' of padding. */
const KEY_BASE64_PATTERN = /^[A-Za-z0-9+/]{43}=$/;
const VARIABLE = 'CUSTOS_ROOT_KEYS';

export class RootKeyring {
  /** Version → key, in ascending version order. A private field, so no reflection or spread reaches it. */
  readonly #keys: ReadonlyMap<string, Buffer>;

  private constructor(keys: Map<string, Buffer>) {
    this.#keys = keys;
  }

  /** Parses CUSTOS_ROOT_KEYS. Error messages name entries by position and version, never by content. */
  static parse(spec: string): RootKeyring {
    if (typeof spec !== 'string' || spec.trim() === '') throw new Error(`${VARIABLE} is empty`);
    const parsed: Array<{ number: number; version: string; key: Buffer }> = [];
    const seen = new Set<string>();
    try {
      for (const [index, raw] of spec.split(',').entries()) {
        const position = `${VARIABLE}: entry ${index + 1}`;
        const entry = raw.trim();
        if (entry === '') throw new Error(`${position} is empty`);
        const colon = entry.indexOf(':');
        const version = colon === -1 ? '' : entry.slice(0, colon);
        if (!VERSION_PATTERN.test(version)) {
          throw new Error(`${position} must look like v<positive integer>:<base64 of 32 bytes>`);
        }
        if (seen.has(version)) throw new Error(`${position}: version ${version} appears more than once`);
        seen.add(version);
        const encoded = entry.slice(colon + 1);
        const key = Buffer.from(encoded, 'base64');
        // The round trip refuses non-canonical encodings (stray bits in the last character).
        if (
          !KEY_BASE64_PATTERN.test(encoded) ||
          key.length !== ROOT_KEY_BYTES ||
          key.toString('base64') !== encoded
        ) {
          key.fill(0);
          throw new Error(`${position} (${version}) is not 32 bytes of base64`);
        }
        parsed.push({ number: Number(version.slice(1)), version, key });
      }
    } catch (error) {
      for (const { key } of parsed) key.fill(0);
      throw error;
    }
    parsed.sort((a, b) => a.number - b.number);
    return new RootKeyring(new Map(parsed.map(({ version, key }) => [version, key])));
  }

  /**
   * Checks a spec without keeping it: parses, then zeroes the parsed keys. Configuration loading uses it so
   * that a bad CUSTOS_ROOT_KEYS stops Custos before anything starts. Throws as `parse` does.
   */
  static validate(spec: string): void {
    const keyring = RootKeyring.parse(spec);
    for (const key of keyring.#keys.values()) key.fill(0);
  }

  /** A new single-version spec with a random key: `v1:<base64>`. For first start and for tests. */
  static generateSpec(): string {
    return `v1:${crypto.randomBytes(ROOT_KEY_BYTES).toString('base64')}`;
  }

  /** The version that wraps new data keys: the highest. */
  get currentVersion(): string {
    const versions = this.versions();
    return versions[versions.length - 1];
  }

  /** All versions, lowest first. */
  versions(): string[] {
    return [...this.#keys.keys()];
  }

  /** A copy of the key for `version` (the caller may and should zero it), or undefined if absent. */
  key(version: string): Buffer | undefined {
    const key = this.#keys.get(version);
    return key === undefined ? undefined : Buffer.from(key);
  }

  toString(): string {
    return `[RootKeyring ${this.versions().join(',')}]`;
  }

  toJSON(): string {
    return this.toString();
  }

  [inspect.custom](): string {
    return this.toString();
  }
}
