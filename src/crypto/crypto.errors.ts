/** Errors of the key backends, data keys and envelopes. */
import { CustosException } from '../common/errors.js';

export const CRYPTO_ERROR_CODES = [
  /**
   * A tenant's key backend could not be reached when it was configured: its name does not resolve, the
   * connection is refused or times out, it answers 5xx or throttles (the tenant's input: 400).
   */
  'key_backend_unreachable',
  /**
   * A tenant's key backend refused Custos's access when it was configured: access denied, credentials not
   * accepted, the key disabled or pending deletion (400).
   */
  'key_backend_denied',
  /** A tenant's key backend has no such key when it was configured (wrong key id, alias, region or mount) (400). */
  'key_backend_not_found',
  /** A tenant's key backend settings are not usable (400). */
  'key_backend_invalid',
  /** The key backend is unavailable now (an outage, throttling, an open circuit): 503, retry later. */
  'key_unavailable',
  /** A wrapped key the backend refuses to unwrap, or that unwraps to something unusable: 500. */
  'key_invalid',
  /** A sealed value that does not open with its key (tampered, moved to another row): 500. */
  'decryption_failed',
] as const;
export type CryptoErrorCode = (typeof CRYPTO_ERROR_CODES)[number];

export class CryptoException extends CustosException {
  declare readonly code: CryptoErrorCode;

  constructor(code: CryptoErrorCode, message: string, details?: Record<string, unknown>) {
    super(code, message, details);
  }
}
