/**
 * The managed key backend: data keys wrapped with AES-256-GCM under a root keyring held by Custos
 * (CUSTOS_ROOT_KEYS). Only data keys ever pass through here, never credentials.
 *
 * Wrapped data key layout (format version 1):
 *
 *   offset  size  field
 *   0       3     magic, ASCII "CMK" (0x43 0x4d 0x4b)
 *   3       1     format version, 0x01
 *   4       1     L = byte length of the root key version name (2..10)
 *   5       L     root key version name, ASCII, e.g. "v2"
 *   5+L     12    AES-GCM IV, random per wrap
 *   17+L    32    ciphertext of the 32-byte data key
 *   49+L    16    AES-GCM tag
 *
 * The "header" is bytes [0, 5+L).
 *
 *   wrapKey = HKDF-SHA256(ikm = root key, salt = empty, info = "custos/managed-key-backend/v1/wrap-data-key", L = 32)
 *   aad     = header ‖ u16-length-prefixed("custos/data-key", tenantId, dataKeyId, root key version)
 *
 * The root key is not used directly: the HKDF step with a purpose label keeps a root key usable for other
 * purposes later without two uses ever sharing an AES key. The derived key is deterministic per root version,
 * so it is derived once and kept with the keyring. Random 96-bit IVs under one wrap key are safe up to 2^32
 * wraps (NIST SP 800-38D); data keys are per tenant and epoch, so a root version never comes near that.
 */
import crypto from 'node:crypto';
import { CommonException, CustosException } from '../common/errors.js';
import type {
  DataKeyContext,
  GeneratedDataKey,
  KeyBackend,
  KeyBackendType,
  WrappedDataKey,
} from './key-backend.js';
import {
  AES_256_GCM_KEY_BYTES,
  AES_GCM_IV_BYTES,
  AES_GCM_TAG_BYTES,
  aes256GcmDecrypt,
  aes256GcmEncrypt,
  bindingStringProblem,
  hkdfSha256,
  lengthPrefixed,
} from './envelope.js';
import type { RootKeyring } from '../common/root-keyring.js';
import { CryptoException } from './crypto.errors.js';

const MAGIC = Buffer.from('CMK', 'ascii');
const FORMAT_VERSION = 1;
const WRAP_KEY_INFO = Buffer.from('custos/managed-key-backend/v1/wrap-data-key', 'ascii');
const AAD_PURPOSE = 'custos/data-key';
const DATA_KEY_BYTES = AES_256_GCM_KEY_BYTES;
const ROOT_VERSION_PATTERN = /^v[1-9][0-9]{0,8}$/;
const OFFSET_FORMAT = MAGIC.length;
const OFFSET_VERSION_LENGTH = OFFSET_FORMAT + 1;
const OFFSET_VERSION = OFFSET_VERSION_LENGTH + 1;

const PROBE_CONTEXT: DataKeyContext = {
  tenantId: 'custos-readiness-probe',
  dataKeyId: '00000000-0000-0000-0000-000000000000',
};

const KEY_INVALID_MESSAGE = 'the data key could not be unwrapped';

export class ManagedKeyBackend implements KeyBackend {
  readonly type: KeyBackendType = 'managed';
  /** Root version → derived wrap key. A private field so the keys never show up in logs or inspection. */
  readonly #wrapKeys = new Map<string, Buffer>();

  constructor(private readonly keyring: RootKeyring) {}

  async generateDataKey(ctx: DataKeyContext): Promise<GeneratedDataKey> {
    const plaintext = crypto.randomBytes(DATA_KEY_BYTES);
    try {
      return { plaintext, ...this.wrap(plaintext, ctx) };
    } catch (error) {
      plaintext.fill(0);
      throw error;
    }
  }

  async unwrapDataKey(wrapped: Buffer, ctx: DataKeyContext): Promise<Buffer> {
    return this.unwrap(wrapped, ctx);
  }

  async wrapDataKey(plaintext: Buffer, ctx: DataKeyContext): Promise<WrappedDataKey> {
    if (!Buffer.isBuffer(plaintext) || plaintext.length !== DATA_KEY_BYTES) {
      throw new CommonException('internal_error', 'managed key backend: a data key is 32 bytes');
    }
    return this.wrap(plaintext, ctx);
  }

  /**
   * Rewraps a data key under the keyring's current root version, for key rotation. Always produces a fresh
   * wrap (new IV), also when the blob is already under the current version. The data key itself is unchanged,
   * so no credential sealed under it needs touching.
   */
  async rewrapDataKey(wrapped: Buffer, ctx: DataKeyContext): Promise<WrappedDataKey> {
    const plaintext = this.unwrap(wrapped, ctx);
    try {
      return this.wrap(plaintext, ctx);
    } finally {
      plaintext.fill(0);
    }
  }

  async check(): Promise<void> {
    const generated = await this.generateDataKey(PROBE_CONTEXT);
    const unwrapped = await this.unwrapDataKey(generated.wrapped, PROBE_CONTEXT);
    try {
      if (!crypto.timingSafeEqual(generated.plaintext, unwrapped)) {
        throw new CryptoException('key_unavailable', 'the managed key backend failed its round trip check');
      }
    } finally {
      generated.plaintext.fill(0);
      unwrapped.fill(0);
    }
  }

  toString(): string {
    return `[ManagedKeyBackend ${this.keyring.toString()}]`;
  }

  private wrap(plaintext: Buffer, ctx: DataKeyContext): WrappedDataKey {
    const problem = contextProblem(ctx);
    if (problem) throw new CommonException('internal_error', `managed key backend: ${problem}`);
    const rootVersion = this.keyring.currentVersion;
    const versionBytes = Buffer.from(rootVersion, 'ascii');
    const header = Buffer.concat([MAGIC, Buffer.of(FORMAT_VERSION, versionBytes.length), versionBytes]);
    const iv = crypto.randomBytes(AES_GCM_IV_BYTES);
    const { ciphertext, tag } = aes256GcmEncrypt(
      this.wrapKey(rootVersion),
      iv,
      wrapAad(header, ctx, rootVersion),
      plaintext,
    );
    return { wrapped: Buffer.concat([header, iv, ciphertext, tag]), keyRef: rootVersion };
  }

  private unwrap(wrapped: Buffer, ctx: DataKeyContext): Buffer {
    if (contextProblem(ctx)) throw keyInvalid();
    const parsed = parseWrapped(wrapped);
    if (!this.keyring.versions().includes(parsed.rootVersion)) {
      throw new CryptoException(
        'key_unavailable',
        `root key version ${parsed.rootVersion} is not in the keyring`,
      );
    }
    try {
      return aes256GcmDecrypt(
        this.wrapKey(parsed.rootVersion),
        parsed.iv,
        wrapAad(parsed.header, ctx, parsed.rootVersion),
        parsed.ciphertext,
        parsed.tag,
      );
    } catch {
      throw keyInvalid();
    }
  }

  private wrapKey(rootVersion: string): Buffer {
    let wrapKey = this.#wrapKeys.get(rootVersion);
    if (wrapKey === undefined) {
      const rootKey = this.keyring.key(rootVersion);
      if (rootKey === undefined) {
        throw new CryptoException('key_unavailable', `root key version ${rootVersion} is not in the keyring`);
      }
      try {
        wrapKey = hkdfSha256(rootKey, Buffer.alloc(0), WRAP_KEY_INFO, AES_256_GCM_KEY_BYTES);
      } finally {
        rootKey.fill(0);
      }
      this.#wrapKeys.set(rootVersion, wrapKey);
    }
    return wrapKey;
  }
}

interface ParsedWrapped {
  header: Buffer;
  rootVersion: string;
  iv: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}

/** Checks the structure only; throws key_invalid for anything that is not a well-formed format-1 blob. */
function parseWrapped(wrapped: Buffer): ParsedWrapped {
  if (
    !Buffer.isBuffer(wrapped) ||
    wrapped.length <= OFFSET_VERSION ||
    !wrapped.subarray(0, MAGIC.length).equals(MAGIC) ||
    wrapped[OFFSET_FORMAT] !== FORMAT_VERSION
  ) {
    throw keyInvalid();
  }
  const versionLength = wrapped[OFFSET_VERSION_LENGTH];
  const ivOffset = OFFSET_VERSION + versionLength;
  const ciphertextOffset = ivOffset + AES_GCM_IV_BYTES;
  const tagOffset = ciphertextOffset + DATA_KEY_BYTES;
  if (wrapped.length !== tagOffset + AES_GCM_TAG_BYTES) throw keyInvalid();
  // latin1 maps every byte to one character, so a non-ASCII byte cannot be smuggled past the pattern.
  const rootVersion = wrapped.subarray(OFFSET_VERSION, ivOffset).toString('latin1');
  if (!ROOT_VERSION_PATTERN.test(rootVersion)) throw keyInvalid();
  return {
    header: wrapped.subarray(0, ivOffset),
    rootVersion,
    iv: wrapped.subarray(ivOffset, ciphertextOffset),
    ciphertext: wrapped.subarray(ciphertextOffset, tagOffset),
    tag: wrapped.subarray(tagOffset),
  };
}

function wrapAad(header: Buffer, ctx: DataKeyContext, rootVersion: string): Buffer {
  return Buffer.concat([header, lengthPrefixed([AAD_PURPOSE, ctx.tenantId, ctx.dataKeyId, rootVersion])]);
}

function contextProblem(ctx: DataKeyContext): string | undefined {
  if (typeof ctx !== 'object' || ctx === null) return 'context must be an object';
  for (const name of ['tenantId', 'dataKeyId'] as const) {
    const problem = bindingStringProblem(ctx[name]);
    if (problem) return `context.${name} ${problem}`;
  }
  return undefined;
}

function keyInvalid(): CustosException {
  return new CryptoException('key_invalid', KEY_INVALID_MESSAGE);
}
