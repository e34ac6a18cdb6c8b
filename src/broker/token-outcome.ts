/**
 * What the token endpoint decided, in the broker's own terms. BrokerService never chooses an HTTP status or
 * builds a body: token-response.ts maps each outcome to RFC 6749's answer, in one exhaustive switch.
 */

/** The RFC 6749 / 8693 error codes a refusal carries (RFC 6749 §5.2, RFC 8693 §2.2.2). */
export type OAuthRefusalCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unsupported_grant_type'
  | 'invalid_target'
  | 'invalid_scope';

/** Why the user must (re)connect before a credential can be released. */
export type ConsentReason = 'not_connected' | 'needs_reauth' | 'expired' | 'insufficient_scope';

export type TokenOutcome =
  /** The user's credential, released after its `allowed` event was committed. */
  | {
      kind: 'released';
      accessToken: string;
      issuedTokenType: string;
      tokenType: 'Bearer' | 'N_A';
      expiresIn?: number;
      scope?: string;
    }
  /** No usable connection: a fresh connect link for the user. */
  | {
      kind: 'consent_required';
      description: string;
      connectUri: string;
      expiresIn: number;
      /** The connect session behind the link, which the connector may read to learn when the user is done. */
      sessionId: string;
      sessionUri: string;
      reason: ConsentReason;
    }
  /** Refused; `basicChallenge` when the client authenticated (and failed) with HTTP Basic. */
  | { kind: 'refused'; error: OAuthRefusalCode; description: string; basicChallenge: boolean }
  /** Too many failed requests from this address or client id. */
  | { kind: 'throttled'; retryAfterSeconds: number }
  /** A backing service (or the tenant's key backend) is unavailable: retry later. */
  | { kind: 'unavailable'; keyBackend: boolean }
  /** An unexpected failure, already logged. */
  | { kind: 'failed' };
