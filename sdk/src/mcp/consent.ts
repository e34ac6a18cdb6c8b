/**
 * What both MCP helpers tell the user about a missing connection, and the tool-error results they answer with
 * when URL elicitation is not possible or a retried call is refused. Free of any MCP SDK import, so either
 * protocol version's helper can use it.
 */
import type { ConsentRequiredError } from '../index.js';

/** How a provider is named to the user: a fixed name, or a function of the provider key Custos uses. */
export type ProviderName = string | ((provider: string) => string);

export interface ConsentTextOptions {
  /** How the provider is named to the user; by default its key in Custos (e.g. `github`). */
  providerName?: ProviderName;
  /** Replaces the whole message shown with the link. It must not carry secrets or personal data. */
  message?: (error: ConsentRequiredError) => string;
}

/** The `_meta` key of the stable error code on every tool-error result the helpers produce. */
export const CUSTOS_ERROR_META_KEY = 'custos/error';

/**
 * The stable codes of the helpers' tool-error results, for clients and tests to match on (the text is for
 * people and may change).
 */
export type CustosToolErrorCode =
  /** The user must connect the provider and the client cannot open a URL elicitation: the text has the link. */
  | 'consent_required'
  /** The user declined to open the connect link (protocol 2026-07-28). */
  | 'consent_declined'
  /** The user dismissed the connect prompt (protocol 2026-07-28). */
  | 'consent_cancelled'
  /** The echoed requestState is malformed, was altered, or was sealed with another key. */
  | 'request_state_invalid'
  /** The echoed requestState is past its expiry. */
  | 'request_state_expired'
  /** The echoed requestState was issued to another user. */
  | 'request_state_user_mismatch'
  /** The echoed requestState was issued for another tool or other arguments. */
  | 'request_state_call_mismatch'
  /** No authenticated user to bind the consent request to. */
  | 'unauthenticated';

/** A tool result with `isError`, assignable to the `CallToolResult` of both MCP SDK lines. */
export interface CustosToolError {
  [key: string]: unknown;
  content: { type: 'text'; text: string }[];
  isError: true;
  _meta: { [CUSTOS_ERROR_META_KEY]: CustosToolErrorCode } & Record<string, unknown>;
}

export function toolError(code: CustosToolErrorCode, text: string): CustosToolError {
  return { content: [{ type: 'text', text }], isError: true, _meta: { [CUSTOS_ERROR_META_KEY]: code } };
}

function nameOf(provider: string, providerName: ProviderName | undefined): string {
  if (typeof providerName === 'function') return providerName(provider);
  return providerName ?? provider;
}

/** "Connect your GitHub account to continue: you have not connected it yet." and the like. */
export function consentMessage(error: ConsentRequiredError, options: ConsentTextOptions = {}): string {
  if (options.message) return options.message(error);
  const name = nameOf(error.provider, options.providerName);
  switch (error.reason) {
    case 'not_connected':
      return `Connect your ${name} account to continue: you have not connected it yet.`;
    case 'needs_reauth':
      return `Reconnect your ${name} account to continue: ${name} needs you to sign in again.`;
    case 'expired':
      return `Reconnect your ${name} account to continue: your access to ${name} has expired.`;
    case 'insufficient_scope':
      return `Grant more access to your ${name} account to continue: this tool needs permissions you have not given yet.`;
    default:
      // A reason this version does not know (a newer Custos): still name the provider.
      return `Connect your ${name} account to continue.`;
  }
}

/**
 * The fallback for a client that cannot open a URL elicitation: a tool error whose text carries the link, so
 * the user (through the model) can still open it. The link holds no secret and only works for this user.
 */
export function consentLinkResult(
  error: ConsentRequiredError,
  options: ConsentTextOptions = {},
): CustosToolError {
  return toolError(
    'consent_required',
    `${consentMessage(error, options)} Open this link to connect, then call the tool again: ${error.connectUri} ` +
      `(valid until ${error.expiresAt.toISOString()}).`,
  );
}
