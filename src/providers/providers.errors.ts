/** Errors of the provider catalog, custom providers and provider apps. */
import { CustosException } from '../common/errors.js';

export const PROVIDER_ERROR_CODES = [
  /** No built-in or custom provider of that key for the tenant (404). */
  'unknown_provider',
  /** A credential of a type the provider does not take (an API key for an OAuth provider, or the reverse). */
  'credential_type_mismatch',
] as const;
export type ProviderErrorCode = (typeof PROVIDER_ERROR_CODES)[number];

export class ProviderException extends CustosException {
  declare readonly code: ProviderErrorCode;

  constructor(code: ProviderErrorCode, message: string, details?: Record<string, unknown>) {
    super(code, message, details);
  }
}
