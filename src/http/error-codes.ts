/**
 * Every error code Custos answers with, from every domain's list, and the one exhaustive mapping of a code
 * to its HTTP status. A domain that adds a code gets a type error here until the code has a status; a domain
 * that adds an errors file must add its list to DOMAIN_ERROR_CODES (test/unit/http/error-codes.test.ts
 * finds every *.errors.ts and checks). The codes are stable and listed in the error table of docs/api.md.
 */
import { COMMON_ERROR_CODES, type CommonErrorCode } from '../common/errors.js';
import { CONNECT_ERROR_CODES, type ConnectErrorCode } from '../connect/connect.errors.js';
import { CRYPTO_ERROR_CODES, type CryptoErrorCode } from '../crypto/crypto.errors.js';
import { PROVIDER_ERROR_CODES, type ProviderErrorCode } from '../providers/providers.errors.js';

export type ErrorCode = CommonErrorCode | CryptoErrorCode | ProviderErrorCode | ConnectErrorCode;

/** Each domain's code list, by the file that declares it. */
export const DOMAIN_ERROR_CODES: Record<string, readonly ErrorCode[]> = {
  'common/errors.ts': COMMON_ERROR_CODES,
  'crypto/crypto.errors.ts': CRYPTO_ERROR_CODES,
  'providers/providers.errors.ts': PROVIDER_ERROR_CODES,
  'connect/connect.errors.ts': CONNECT_ERROR_CODES,
};

/** Every code the API can answer with. */
export const ERROR_CODES: readonly ErrorCode[] = Object.values(DOMAIN_ERROR_CODES).flat();

const KNOWN = new Set<string>(ERROR_CODES);

export function isErrorCode(code: string): code is ErrorCode {
  return KNOWN.has(code);
}

export function statusFor(code: ErrorCode): number {
  switch (code) {
    case 'invalid_request':
    case 'validation_failed':
    case 'unknown_field':
    case 'malformed_id':
    case 'json_too_deep':
    case 'outbound_url_refused':
    case 'outbound_url_unresolvable':
    case 'credential_type_mismatch':
    case 'return_url_not_allowed':
    case 'provider_not_configured':
    case 'key_backend_unreachable':
    case 'key_backend_denied':
    case 'key_backend_not_found':
    case 'key_backend_invalid':
      return 400;
    case 'unauthenticated':
      return 401;
    case 'forbidden':
      return 403;
    case 'not_found':
    case 'unknown_provider':
      return 404;
    case 'conflict':
      return 409;
    case 'payload_too_large':
      return 413;
    case 'unsupported_media_type':
      return 415;
    case 'rate_limited':
      return 429;
    case 'outbound_request_failed':
      return 502;
    case 'key_unavailable':
    case 'temporarily_unavailable':
      return 503;
    case 'key_invalid':
    case 'decryption_failed':
    case 'internal_error':
      return 500;
  }
}
