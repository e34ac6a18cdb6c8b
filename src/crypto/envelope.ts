/**
 * The field envelope: how one secret field (an access token, a refresh token, an API key) is sealed under a
 * tenant's data key, bound to the row and column it belongs to.
 *
 * Envelope layout (version 1), all integers big-endian:
 *
 *   offset  size  field
 *   0       3     magic, ASCII "CSE" (0x43 0x53 0x45)
 *   3       1     envelope version, 0x01
 *   4       1     algorithm id, 0x01 = HKDF-SHA256 → AES-256-GCM (96-bit IV, 128-bit tag)
 *   5       16    data key id, a UUID in binary (RFC 9562 byte order)
 *   21      32    HKDF salt, random per seal
 *   53      12    AES-GCM IV, random per seal
 *   65      n     ciphertext (n = plaintext length, may be 0)
 *   65+n    16    AES-GCM tag
 *
 * The "header" is bytes [0, 65): everything before the ciphertext.
 *
 * Per seal:
 *   aad   = canonicalAad(binding, version)                       (see below)
 *   key   = HKDF-SHA256(ikm = data key, salt, info = "custos/envelope/v1/aes-256-gcm" ‖ aad, L = 32)
 *   ct,tag = AES-256-GCM(key, iv, plaintext, associated data = header ‖ aad)
 *
 * canonicalAad layout (injective: fixed-width prefix and version, then a fixed number of length-prefixed parts):
 *
 *   "custos/field-aad" (16 ASCII bytes) ‖ u8 version ‖
 *   for each of tenantId, scope, recordId, field, dataKeyId: u16 byte length ‖ UTF-8 bytes
 *
 * Binding strings must be non-empty, well-formed UTF-16 (no lone surrogates, which UTF-8 encoding would
 * silently merge), without NUL, and at most MAX_BINDING_PART_BYTES UTF-8 bytes (node's HKDF caps `info` at
 * 1024 bytes). dataKeyId must be a UUID in lowercase canonical form, the form PostgreSQL and
 * crypto.randomUUID() produce; anything else is refused rather than normalised so that one binding has
 * exactly one encoding.
 *
 * Because the header is part of the associated data and the binding goes into both the key derivation and
 * the associated data, a ciphertext copied to another tenant, record or field, or opened with another data
 * key id, does not decrypt.
 */
import crypto from 'node:crypto';
import { CommonException, CustosException } from '../common/errors.js';
import { CryptoException } from './crypto.errors.js';

export const ENVELOPE_VERSION = 1;

/** Where a ciphertext belongs. All of it goes into the AES-GCM associated data, so a ciphertext moved elsewhere fails. */
export interface FieldBinding {
  tenantId: string;
  /** What kind of record holds the field, e.g. 'connection'. */
  scope: string;
  recordId: string;
  /** The column, e.g. 'access_token'. */
  field: string;
  /** The data key the field is sealed under: a lowercase UUID. */
  dataKeyId: string;
}

/** Byte limit for each binding component; keeps the HKDF info within node's 1024-byte limit. */
export const MAX_BINDING_PART_BYTES = 200;

const MAGIC = Buffer.from('CSE', 'ascii');
const ALG_HKDF_SHA256_AES_256_GCM = 1;
const HKDF_LABEL_V1 = Buffer.from('custos/envelope/v1/aes-256-gcm', 'ascii');
const AAD_PREFIX = Buffer.from('custos/field-aad', 'ascii');

export const AES_256_GCM_KEY_BYTES = 32;
export const AES_GCM_IV_BYTES = 12;
export const AES_GCM_TAG_BYTES = 16;
const SALT_BYTES = 32;
const UUID_BYTES = 16;

const OFFSET_VERSION = MAGIC.length;
const OFFSET_ALG = OFFSET_VERSION + 1;
const OFFSET_DATA_KEY_ID = OFFSET_ALG + 1;
const OFFSET_SALT = OFFSET_DATA_KEY_ID + UUID_BYTES;
const OFFSET_IV = OFFSET_SALT + SALT_BYTES;
const HEADER_BYTES = OFFSET_IV + AES_GCM_IV_BYTES;
const MIN_ENVELOPE_BYTES = HEADER_BYTES + AES_GCM_TAG_BYTES;

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** HKDF-SHA256 can produce at most 255 blocks of 32 bytes (RFC 5869). */
const HKDF_SHA256_MAX_OUTPUT = 255 * 32;

const DECRYPTION_FAILED_MESSAGE = 'the secret could not be decrypted';

// ---------------------------------------------------------------------------------------------------------
// Primitives. Exported so that the Wycheproof vectors test exactly what the envelope and the managed key
// backend call, and so that the managed key backend does not grow its own copy.
// ---------------------------------------------------------------------------------------------------------

/** HKDF-SHA256 (RFC 5869). Throws RangeError for an output length outside 1..8160. */
export function hkdfSha256(ikm: Buffer, salt: Buffer, info: Buffer, length: number): Buffer {
  if (!Number.isInteger(length) || length < 1 || length > HKDF_SHA256_MAX_OUTPUT) {
    throw new RangeError(`HKDF-SHA256 output length must be 1..${HKDF_SHA256_MAX_OUTPUT}`);
  }
  return Buffer.from(crypto.hkdfSync('sha256', ikm, salt, info, length));
}

/** AES-256-GCM with a 96-bit IV and a 128-bit tag: the only parameters Custos uses. */
export function aes256GcmEncrypt(
  key: Buffer,
  iv: Buffer,
  aad: Buffer,
  plaintext: Buffer,
): { ciphertext: Buffer; tag: Buffer } {
  assertGcmParameters(key, iv);
  const cipher = crypto.createCipheriv('aes-256-gcm', key, iv, { authTagLength: AES_GCM_TAG_BYTES });
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { ciphertext, tag: cipher.getAuthTag() };
}

/** Inverse of aes256GcmEncrypt. Throws if the tag does not verify or the tag is not exactly 16 bytes. */
export function aes256GcmDecrypt(
  key: Buffer,
  iv: Buffer,
  aad: Buffer,
  ciphertext: Buffer,
  tag: Buffer,
): Buffer {
  assertGcmParameters(key, iv);
  // node would accept a truncated tag if given one; a short tag is a forgery aid, so refuse it here.
  if (tag.length !== AES_GCM_TAG_BYTES) throw new RangeError('AES-GCM tag must be 16 bytes');
  const decipher = crypto.createDecipheriv('aes-256-gcm', key, iv, { authTagLength: AES_GCM_TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}

function assertGcmParameters(key: Buffer, iv: Buffer): void {
  if (key.length !== AES_256_GCM_KEY_BYTES) throw new RangeError('AES-256-GCM key must be 32 bytes');
  if (iv.length !== AES_GCM_IV_BYTES) throw new RangeError('AES-GCM IV must be 12 bytes');
}

/**
 * u16 byte length ‖ UTF-8 bytes, for each part. Injective for a fixed number of parts as long as every part
 * is well-formed (checked by the callers through assertBindingString).
 */
export function lengthPrefixed(parts: readonly string[]): Buffer {
  const chunks: Buffer[] = [];
  for (const part of parts) {
    const bytes = Buffer.from(part, 'utf8');
    if (bytes.length > 0xffff) throw new RangeError('length-prefixed part is longer than 65535 bytes');
    const length = Buffer.alloc(2);
    length.writeUInt16BE(bytes.length);
    chunks.push(length, bytes);
  }
  return Buffer.concat(chunks);
}

/**
 * Returns a reason when `value` cannot be part of a binding, or undefined when it can. Reasons name the
 * component, never its value.
 */
export function bindingStringProblem(value: unknown, maxBytes = MAX_BINDING_PART_BYTES): string | undefined {
  if (typeof value !== 'string' || value.length === 0) return 'must be a non-empty string';
  if (value.includes('\u0000')) return 'must not contain NUL';
  const bytes = Buffer.from(value, 'utf8');
  // A lone surrogate encodes as U+FFFD, so two different strings would share one encoding.
  if (bytes.toString('utf8') !== value) return 'must be well-formed Unicode';
  if (bytes.length > maxBytes) return `must be at most ${maxBytes} UTF-8 bytes`;
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------
// The envelope.
// ---------------------------------------------------------------------------------------------------------

/** The canonical, unambiguous encoding of a binding; see the layout at the top of this file. */
export function canonicalAad(binding: FieldBinding, version: number): Buffer {
  const problem = bindingProblem(binding);
  if (problem) throw new CommonException('internal_error', `canonicalAad: ${problem}`);
  if (!Number.isInteger(version) || version < 1 || version > 0xff) {
    throw new CommonException('internal_error', 'canonicalAad: version must be an integer in 1..255');
  }
  return Buffer.concat([
    AAD_PREFIX,
    Buffer.of(version),
    lengthPrefixed([binding.tenantId, binding.scope, binding.recordId, binding.field, binding.dataKeyId]),
  ]);
}

/** Seals `plaintext` under `dataKey` for the place named by `binding`. */
export function sealField(dataKey: Buffer, binding: FieldBinding, plaintext: Buffer): Buffer {
  if (!Buffer.isBuffer(dataKey) || dataKey.length !== AES_256_GCM_KEY_BYTES) {
    throw new CommonException('internal_error', 'sealField: the data key must be 32 bytes');
  }
  const problem = bindingProblem(binding);
  if (problem) throw new CommonException('internal_error', `sealField: ${problem}`);
  if (!Buffer.isBuffer(plaintext))
    throw new CommonException('internal_error', 'sealField: plaintext must be a Buffer');

  const header = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(header, 0);
  header[OFFSET_VERSION] = ENVELOPE_VERSION;
  header[OFFSET_ALG] = ALG_HKDF_SHA256_AES_256_GCM;
  uuidToBytes(binding.dataKeyId).copy(header, OFFSET_DATA_KEY_ID);
  crypto.randomFillSync(header, OFFSET_SALT, SALT_BYTES + AES_GCM_IV_BYTES);

  const aad = canonicalAad(binding, ENVELOPE_VERSION);
  const fieldKey = deriveFieldKey(dataKey, header.subarray(OFFSET_SALT, OFFSET_IV), aad);
  try {
    const { ciphertext, tag } = aes256GcmEncrypt(
      fieldKey,
      header.subarray(OFFSET_IV, HEADER_BYTES),
      Buffer.concat([header, aad]),
      plaintext,
    );
    return Buffer.concat([header, ciphertext, tag]);
  } finally {
    fieldKey.fill(0);
  }
}

/**
 * Opens an envelope made by sealField with the same data key and binding. Any failure — malformed or
 * truncated envelope, unknown version, wrong key, wrong binding, tampering, invalid arguments — throws
 * CustosException('decryption_failed') with one generic message, so the caller learns nothing about which.
 */
export function openField(dataKey: Buffer, binding: FieldBinding, envelope: Buffer): Buffer {
  let fieldKey: Buffer | undefined;
  try {
    if (!Buffer.isBuffer(dataKey) || dataKey.length !== AES_256_GCM_KEY_BYTES) throw decryptionFailed();
    if (bindingProblem(binding)) throw decryptionFailed();
    const { dataKeyId } = readEnvelopeHeader(envelope);
    if (dataKeyId !== binding.dataKeyId) throw decryptionFailed();

    const header = envelope.subarray(0, HEADER_BYTES);
    const aad = canonicalAad(binding, ENVELOPE_VERSION);
    fieldKey = deriveFieldKey(dataKey, envelope.subarray(OFFSET_SALT, OFFSET_IV), aad);
    return aes256GcmDecrypt(
      fieldKey,
      envelope.subarray(OFFSET_IV, HEADER_BYTES),
      Buffer.concat([header, aad]),
      envelope.subarray(HEADER_BYTES, envelope.length - AES_GCM_TAG_BYTES),
      envelope.subarray(envelope.length - AES_GCM_TAG_BYTES),
    );
  } catch {
    // The cause (an OpenSSL message, a RangeError) is deliberately dropped: it can only help an attacker.
    throw decryptionFailed();
  } finally {
    fieldKey?.fill(0);
  }
}

/**
 * Reads the version and data key id of an envelope without decrypting it, so the caller can fetch the right
 * data key. Throws CustosException('decryption_failed') if the envelope is malformed or of an unknown version.
 */
export function readEnvelopeHeader(envelope: Buffer): { version: number; dataKeyId: string } {
  if (
    !Buffer.isBuffer(envelope) ||
    envelope.length < MIN_ENVELOPE_BYTES ||
    !envelope.subarray(0, MAGIC.length).equals(MAGIC) ||
    envelope[OFFSET_VERSION] !== ENVELOPE_VERSION ||
    envelope[OFFSET_ALG] !== ALG_HKDF_SHA256_AES_256_GCM
  ) {
    throw decryptionFailed();
  }
  return {
    version: ENVELOPE_VERSION,
    dataKeyId: bytesToUuid(envelope.subarray(OFFSET_DATA_KEY_ID, OFFSET_DATA_KEY_ID + UUID_BYTES)),
  };
}

function deriveFieldKey(dataKey: Buffer, salt: Buffer, aad: Buffer): Buffer {
  return hkdfSha256(dataKey, salt, Buffer.concat([HKDF_LABEL_V1, aad]), AES_256_GCM_KEY_BYTES);
}

function bindingProblem(binding: FieldBinding): string | undefined {
  if (typeof binding !== 'object' || binding === null) return 'binding must be an object';
  for (const name of ['tenantId', 'scope', 'recordId', 'field', 'dataKeyId'] as const) {
    const problem = bindingStringProblem(binding[name]);
    if (problem) return `binding.${name} ${problem}`;
  }
  if (!UUID_PATTERN.test(binding.dataKeyId)) return 'binding.dataKeyId must be a lowercase UUID';
  return undefined;
}

function uuidToBytes(uuid: string): Buffer {
  return Buffer.from(uuid.replaceAll('-', ''), 'hex');
}

function bytesToUuid(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function decryptionFailed(): CustosException {
  return new CryptoException('decryption_failed', DECRYPTION_FAILED_MESSAGE);
}
