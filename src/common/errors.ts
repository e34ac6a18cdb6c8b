/**
 * Domain errors. Services throw these (never HttpException); one exception filter maps each code to an
 * HTTP status with an exhaustive switch, so a new code cannot be forgotten.
 */
export type ErrorCode =
  | 'invalid_request'
  | 'validation_failed'
  | 'unknown_field'
  | 'malformed_id'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'unauthenticated'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'unknown_provider'
  | 'credential_type_mismatch'
  | 'return_url_not_allowed'
  | 'outbound_url_refused'
  | 'outbound_request_failed'
  | 'key_backend_unreachable'
  | 'key_backend_denied'
  | 'key_backend_invalid'
  | 'key_unavailable'
  | 'key_invalid'
  | 'decryption_failed'
  | 'temporarily_unavailable'
  | 'internal_error';

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
