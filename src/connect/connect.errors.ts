/** Errors of connect sessions and the hosted connect flow. */
import { CustosException } from '../common/errors.js';

export const CONNECT_ERROR_CODES = [
  /** A connect session's returnTo that is not on the tenant's allow-list (400). */
  'return_url_not_allowed',
  /**
   * A connect session for an OAuth provider the tenant has not set up (no OAuth app of its own there): refused
   * when the session is created (400), not when the person clicks. At the token endpoint: invalid_target.
   */
  'provider_not_configured',
] as const;
export type ConnectErrorCode = (typeof CONNECT_ERROR_CODES)[number];

export class ConnectException extends CustosException {
  declare readonly code: ConnectErrorCode;

  constructor(code: ConnectErrorCode, message: string, details?: Record<string, unknown>) {
    super(code, message, details);
  }
}
