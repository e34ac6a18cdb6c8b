/**
 * What the SDK throws. Every failure is a `CustosError` with a stable `code`: an RFC 6749 error code from
 * Custos (`invalid_client`, `invalid_grant`, `invalid_target`, `invalid_scope`, `temporarily_unavailable`, …),
 * or one of the SDK's own (see `SdkErrorCode`). A missing or unusable connection is a `ConsentRequiredError`.
 * A caller's abort is not wrapped: the signal's own reason is thrown, as `fetch` does.
 *
 * No message ever carries a token, secret, assertion or connect link.
 */

/** Codes the SDK itself produces (the others come from Custos's answers). */
export type SdkErrorCode =
  /** Bad options or request, refused before any I/O. */
  | 'invalid_argument'
  /** The connection to Custos failed (refused, reset, DNS, TLS). */
  | 'network_error'
  /** Custos did not answer within `timeoutMs`. */
  | 'timeout'
  /** Custos answered with something the SDK cannot read (not JSON, missing fields, a redirect). */
  | 'invalid_response'
  /** The client assertion could not be signed with the configured key. */
  | 'signing_failed';

export interface CustosErrorInit {
  status?: number;
  retryAfterSeconds?: number;
  cause?: unknown;
}

export class CustosError extends Error {
  /** An RFC 6749 error code from Custos's answer, or one of `SdkErrorCode`. */
  readonly code: string;
  /** The HTTP status of Custos's answer, when there was one. */
  readonly status?: number;
  /** Custos's `Retry-After`, in seconds, when it sent one. */
  readonly retryAfterSeconds?: number;

  constructor(code: string, message: string, init: CustosErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'CustosError';
    this.code = code;
    if (init.status !== undefined) this.status = init.status;
    if (init.retryAfterSeconds !== undefined) this.retryAfterSeconds = init.retryAfterSeconds;
  }
}

/** Why the user has to (re)connect, as Custos says. */
export type ConsentReason = 'not_connected' | 'needs_reauth' | 'expired' | 'insufficient_scope';

export interface ConsentRequiredInit {
  message: string;
  provider: string;
  scopes: string[];
  connectUri: string;
  expiresAt: Date;
  sessionId: string;
  sessionUri: string;
  reason: ConsentReason;
}

/**
 * The user has no usable connection to the provider. Show them `connectUri` (it expires at `expiresAt`);
 * `waitForConnectSession(sessionUri)` resolves once they have connected (or the link expired).
 *
 * `connectUri` is a one-time link meant for that user only, so it is not enumerable: it stays out of
 * `JSON.stringify(error)` and of loggers that serialise an error's own properties.
 */
export class ConsentRequiredError extends CustosError {
  declare readonly connectUri: string;
  readonly expiresAt: Date;
  /** The connect session's id (empty if the Custos server predates connect_session_id). */
  readonly sessionId: string;
  /** The absolute URL of the connect session (empty if the Custos server predates connect_session_uri). */
  readonly sessionUri: string;
  readonly reason: ConsentReason;
  readonly provider: string;
  /** The scopes the token request asked for. */
  readonly scopes: string[];

  constructor(init: ConsentRequiredInit) {
    super('consent_required', init.message, { status: 400 });
    this.name = 'ConsentRequiredError';
    Object.defineProperty(this, 'connectUri', { value: init.connectUri, enumerable: false });
    this.expiresAt = init.expiresAt;
    this.sessionId = init.sessionId;
    this.sessionUri = init.sessionUri;
    this.reason = init.reason;
    this.provider = init.provider;
    this.scopes = init.scopes;
  }
}
