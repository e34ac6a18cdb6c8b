/**
 * Domain errors. Each domain throws its own exception type with its own code list (crypto/crypto.errors.ts,
 * providers/providers.errors.ts, connect/connect.errors.ts; the codes every domain shares are here). Services
 * never choose an HTTP status or build a response body: http/error-codes.ts maps every code, exhaustively,
 * to a status, and the one exception filter turns that into the admin API's body, RFC 6749's error at the
 * token endpoint or a page on the hosted connect flow.
 */

/** The codes every domain may throw: the request's shape, access, lookups, outbound calls, outages. */
export const COMMON_ERROR_CODES = [
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
  'outbound_url_refused',
  /** At save time, a tenant-given URL whose host does not resolve: the tenant's input, not an outage. */
  'outbound_url_unresolvable',
  'outbound_request_failed',
  'temporarily_unavailable',
  'internal_error',
] as const;
export type CommonErrorCode = (typeof COMMON_ERROR_CODES)[number];

/**
 * The base of every domain exception: a stable code from the domain's list, a message for the caller and
 * optional details (shown on 4xx only). Never constructed directly (ESLint refuses `new CustosException` in
 * src/): throw the domain's own type, so that the code comes from the list of the domain that owns it.
 */
export class CustosException extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** An error with one of the shared codes. */
export class CommonException extends CustosException {
  declare readonly code: CommonErrorCode;

  constructor(code: CommonErrorCode, message: string, details?: Record<string, unknown>) {
    super(code, message, details);
  }
}

/** Too many failed authentications from this address or with this credential: 429 with Retry-After. */
export class RateLimitedException extends CommonException {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super('rate_limited', message);
  }
}
