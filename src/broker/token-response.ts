/** The one mapping of the token endpoint's outcomes to RFC 6749 answers: status, headers and body. */
import type { OAuthRefusalCode, TokenOutcome } from './token-outcome.js';

export interface TokenResponse {
  status: number;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

/** RFC 6749 §5.1: token responses are never cached. */
const NO_STORE = { 'cache-control': 'no-store', pragma: 'no-cache' } as const;

/** RFC 6749 §5.2: invalid_client is 401 (with a challenge when the client used HTTP Basic); the rest 400. */
function refusalStatus(error: OAuthRefusalCode): number {
  switch (error) {
    case 'invalid_client':
      return 401;
    case 'invalid_request':
    case 'invalid_grant':
    case 'unsupported_grant_type':
    case 'invalid_target':
    case 'invalid_scope':
      return 400;
  }
}

export function tokenResponse(outcome: TokenOutcome): TokenResponse {
  switch (outcome.kind) {
    case 'released': {
      const body: Record<string, unknown> = {
        access_token: outcome.accessToken,
        issued_token_type: outcome.issuedTokenType,
        token_type: outcome.tokenType,
      };
      if (outcome.expiresIn !== undefined) body.expires_in = outcome.expiresIn;
      if (outcome.scope !== undefined) body.scope = outcome.scope;
      return { status: 200, headers: { ...NO_STORE }, body };
    }
    case 'consent_required':
      return {
        status: 400,
        headers: { ...NO_STORE },
        body: {
          error: 'consent_required',
          error_description: outcome.description,
          connect_uri: outcome.connectUri,
          expires_in: outcome.expiresIn,
          connect_session_id: outcome.sessionId,
          connect_session_uri: outcome.sessionUri,
          consent_reason: outcome.reason,
        },
      };
    case 'refused':
      return {
        status: refusalStatus(outcome.error),
        headers: outcome.basicChallenge
          ? { ...NO_STORE, 'www-authenticate': 'Basic realm="custos", charset="UTF-8"' }
          : { ...NO_STORE },
        body: { error: outcome.error, error_description: outcome.description },
      };
    case 'throttled':
      return {
        status: 429,
        headers: { ...NO_STORE, 'retry-after': String(outcome.retryAfterSeconds) },
        body: {
          error: 'slow_down',
          error_description: `Too many failed requests; retry after ${outcome.retryAfterSeconds} seconds`,
        },
      };
    case 'unavailable':
      return {
        status: 503,
        headers: { ...NO_STORE, 'retry-after': '5' },
        body: outcome.keyBackend
          ? { error: 'key_unavailable', error_description: 'The tenant’s key backend is unavailable' }
          : {
              error: 'temporarily_unavailable',
              error_description: 'A backing service is unavailable; retry later',
            },
      };
    case 'failed':
      return {
        status: 500,
        headers: { ...NO_STORE },
        body: { error: 'server_error', error_description: 'Internal error' },
      };
  }
}
