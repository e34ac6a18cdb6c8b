/**
 * The token endpoint in the OpenAPI document: its form (every parameter, with its values) and its RFC 6749
 * answers, so that "Try it out" at /docs can send a real token exchange.
 */
import type { SchemaObject } from '@nestjs/swagger';
import {
  ACCESS_TOKEN_TYPE,
  API_KEY_TOKEN_TYPE,
  JWT_TOKEN_TYPE,
  TOKEN_EXCHANGE_GRANT,
  USER_ID_TOKEN_TYPE,
} from './broker.service.js';
import { CLIENT_ASSERTION_TYPE } from '../identity/client-auth.js';
import { EXAMPLE } from '../common/openapi.js';

/** The form of `POST /oauth/token` (application/x-www-form-urlencoded). */
export const tokenFormSchema: SchemaObject = {
  type: 'object',
  required: ['grant_type', 'subject_token', 'subject_token_type', 'audience'],
  properties: {
    grant_type: {
      type: 'string',
      enum: [TOKEN_EXCHANGE_GRANT],
      description: 'Always the RFC 8693 token exchange.',
    },
    subject_token: {
      type: 'string',
      description:
        'Whose token to get: the user’s token (a JWT) from an identity provider the tenant trusts; or, for a ' +
        'connector with `trusted` delegation, the user id itself.',
    },
    subject_token_type: {
      type: 'string',
      enum: [JWT_TOKEN_TYPE, USER_ID_TOKEN_TYPE],
      description: `\`${JWT_TOKEN_TYPE}\` for a user token; \`${USER_ID_TOKEN_TYPE}\` for a user id (trusted delegation only).`,
    },
    audience: {
      type: 'string',
      pattern: '^[a-z0-9][a-z0-9_-]{0,62}$',
      description: 'The provider key (e.g. `github`): whose token the connector wants.',
    },
    scope: {
      type: 'string',
      description:
        'Optional, space-separated: the scopes this call needs. The user must have granted them; where the ' +
        'provider can narrow scopes on refresh, the token released is narrowed to them.',
    },
    requested_token_type: {
      type: 'string',
      enum: [ACCESS_TOKEN_TYPE, API_KEY_TOKEN_TYPE],
      description: `Optional: \`${ACCESS_TOKEN_TYPE}\` for OAuth providers, \`${API_KEY_TOKEN_TYPE}\` for API-key providers.`,
    },
    client_id: {
      type: 'string',
      description:
        'The connector’s client id (`cus_ci_…`), with a client assertion. With HTTP Basic, the client id is the ' +
        'Basic username instead. (client_secret_post is not supported: a `client_secret` here is refused.)',
    },
    client_assertion_type: {
      type: 'string',
      enum: [CLIENT_ASSERTION_TYPE],
      description: 'With private_key_jwt (RFC 7523): the assertion type.',
    },
    client_assertion: {
      type: 'string',
      description:
        'With private_key_jwt: a JWT signed with one of the connector’s keys, `iss` and `sub` its client id, ' +
        '`aud` this endpoint’s URL, a short `exp` and a unique `jti` (used once).',
    },
  },
};

/** RFC 6749 §5.1, with RFC 8693's issued_token_type. */
export const tokenResponseSchema: SchemaObject = {
  type: 'object',
  required: ['access_token', 'issued_token_type', 'token_type'],
  properties: {
    access_token: { type: 'string', description: 'The user’s own provider access token (or API key).' },
    issued_token_type: { type: 'string', enum: [ACCESS_TOKEN_TYPE, API_KEY_TOKEN_TYPE] },
    token_type: {
      type: 'string',
      description: '`Bearer` for OAuth tokens; `N_A` for API keys (RFC 8693).',
    },
    expires_in: { type: 'integer', description: 'Seconds until the provider token expires, when known.' },
    scope: { type: 'string', description: 'The scopes the released token carries, space-separated.' },
  },
};

/** RFC 6749 §5.2 errors, and Custos's consent_required answer. */
export const tokenErrorSchema: SchemaObject = {
  type: 'object',
  required: ['error', 'error_description'],
  properties: {
    error: {
      type: 'string',
      enum: [
        'invalid_request',
        'invalid_client',
        'invalid_grant',
        'unsupported_grant_type',
        'invalid_target',
        'invalid_scope',
        'consent_required',
        'slow_down',
        'temporarily_unavailable',
        'key_unavailable',
      ],
    },
    error_description: { type: 'string' },
    connect_uri: {
      type: 'string',
      description: 'consent_required: the one-time link to show the user (bound to that user).',
    },
    expires_in: { type: 'integer', description: 'consent_required: seconds the link stays valid.' },
    connect_session_id: { type: 'string', description: 'consent_required: the connect session’s id.' },
    connect_session_uri: {
      type: 'string',
      description: 'consent_required: where the connector can read how the session ends.',
    },
    consent_reason: {
      type: 'string',
      enum: ['not_connected', 'needs_reauth', 'expired', 'insufficient_scope'],
      description: 'consent_required: why the user must connect (again).',
    },
  },
};

export const tokenFormExample = {
  grant_type: TOKEN_EXCHANGE_GRANT,
  subject_token: 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZUBleGFtcGxlLmNvbSJ9.c2lnbmF0dXJl',
  subject_token_type: JWT_TOKEN_TYPE,
  audience: 'github',
  scope: 'repo',
};

export const trustedFormExample = {
  grant_type: TOKEN_EXCHANGE_GRANT,
  subject_token: EXAMPLE.userId,
  subject_token_type: USER_ID_TOKEN_TYPE,
  audience: 'github',
};

export const privateKeyJwtFormExample = {
  ...tokenFormExample,
  client_id: EXAMPLE.clientId,
  client_assertion_type: CLIENT_ASSERTION_TYPE,
  client_assertion: 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImMxIn0.eyJpc3MiOiJjdXNfY2lfLi4uIn0.c2lnbmF0dXJl',
};

export const tokenResponseExample = {
  access_token: 'gho_16C7e42F292c6912E7710c838347Ae178B4a',
  issued_token_type: ACCESS_TOKEN_TYPE,
  token_type: 'Bearer',
  expires_in: 3599,
  scope: 'repo',
};

export const consentRequiredExample = {
  error: 'consent_required',
  error_description: 'The user has not connected this provider',
  connect_uri: 'http://127.0.0.1:8080/connect/cst_Gh_N8gUhHKcxfbfBmHE5idnUD8caFd9GaKXS8msKG84',
  expires_in: 900,
  connect_session_id: EXAMPLE.sessionId,
  connect_session_uri: `http://127.0.0.1:8080/v1/tenants/${EXAMPLE.tenantId}/connect/sessions/${EXAMPLE.sessionId}`,
  consent_reason: 'not_connected',
};
