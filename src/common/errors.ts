/**
 * Domain errors. Services throw these (never HttpException); one exception filter maps each code to an
 * HTTP status with an exhaustive switch, so a new code cannot be forgotten.
 */
export const ERROR_CODES = [
  'invalid_request',
  'validation_failed',
  'unknown_field',
  'malformed_id',
  /** A JSON body nested deeper than the limit (MAX_JSON_DEPTH), refused before validation. */
  'json_too_deep',
  'payload_too_large',
  'unsupported_media_type',
  'unauthenticated',
  'forbidden',
  'not_found',
  'conflict',
  /** Too many failed authentications for the address or credential: 429 with Retry-After. */
  'rate_limited',
  'unknown_provider',
  'credential_type_mismatch',
  'return_url_not_allowed',
  'outbound_url_refused',
  /** At save time, a tenant-given URL whose host does not resolve: the tenant's input, not an outage. */
  'outbound_url_unresolvable',
  'outbound_request_failed',
  'key_backend_unreachable',
  'key_backend_denied',
  'key_backend_invalid',
  'key_unavailable',
  'key_invalid',
  'decryption_failed',
  'temporarily_unavailable',
  'internal_error',
] as const;

/** Every code the admin API can answer with; stable, documented in README's error table. */
export type ErrorCode = (typeof ERROR_CODES)[number];

export class CustosException extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Too many failed authentications from this address or with this credential: 429 with Retry-After. */
export class RateLimitedException extends CustosException {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super('rate_limited', message);
  }
}
