/**
 * @custos/sdk: a user's own third-party token from Custos (RFC 8693 token exchange), for connector authors.
 * The MCP helpers are in `@custos/sdk/mcp/v1` and `@custos/sdk/mcp/v2`.
 */
export {
  CustosClient,
  getAccessToken,
  type AccessToken,
  type ConnectSession,
  type ConnectSessionStatus,
  type CustosClientOptions,
  type ForgetFilter,
  type TokenRequest,
  type WaitOptions,
} from './client.js';
export {
  ConsentRequiredError,
  CustosError,
  type ConsentReason,
  type CustosErrorInit,
  type SdkErrorCode,
} from './errors.js';
export type { CacheOptions } from './cache.js';
export type { PrivateKeyInput } from './credentials.js';
export type { RetryEvent, RetryOptions } from './retry.js';
