/**
 * The tool `whoami`, the same for both protocol versions: the user's own provider token from Custos (the user's
 * bearer token as the RFC 8693 subject token, exactly the scopes this tool needs), then the provider's userinfo
 * endpoint with it. A missing connection surfaces as ConsentRequiredError, which each protocol version turns
 * into its own way of sending the user to the connect link.
 */
import { ConsentRequiredError, CustosError, type CustosClient } from '@custos/sdk';
import type { AuthenticatedUser } from './auth.js';
import type { ExampleConfig } from './config.js';
import { fetchUserinfo, ProviderError } from './userinfo.js';

export const WHOAMI = {
  name: 'whoami',
  title: 'Who am I at the provider',
  description:
    'Asks the connected provider who the signed-in user is (its userinfo endpoint), as that user. ' +
    'The first call may ask the user to connect their account.',
} as const;

/** A tool result, in the shape both SDKs accept. */
export interface ToolResult {
  [key: string]: unknown;
  content: { type: 'text'; text: string }[];
  structuredContent?: Record<string, unknown>;
  isError?: boolean;
}

const failure = (text: string): ToolResult => ({ content: [{ type: 'text', text }], isError: true });

export function createWhoami(custos: CustosClient, config: ExampleConfig) {
  /** The user's provider token from Custos; ConsentRequiredError passes through, other failures are results. */
  async function providerToken(user: AuthenticatedUser, signal?: AbortSignal): Promise<string | ToolResult> {
    try {
      const { accessToken } = await custos.getAccessToken({
        provider: config.provider,
        subjectToken: user.token,
        scope: config.whoamiScopes,
        signal,
      });
      return accessToken;
    } catch (err) {
      if (err instanceof ConsentRequiredError) throw err;
      if (err instanceof CustosError) return failure(custosFailure(err));
      return failure('Custos could not be reached; try again later.');
    }
  }

  /** Throws ConsentRequiredError when the user must connect (or reconnect) first; other failures are tool errors. */
  return async function whoami(user: AuthenticatedUser, signal?: AbortSignal): Promise<ToolResult> {
    for (let attempt = 1; ; attempt++) {
      const token = await providerToken(user, signal);
      if (typeof token !== 'string') return token;
      try {
        const profile = await fetchUserinfo(config.userinfoUrl, token, signal);
        return { content: [{ type: 'text', text: JSON.stringify(profile) }], structuredContent: profile };
      } catch (err) {
        if (err instanceof ProviderError && err.status === 401) {
          // The provider no longer takes this token (revoked, say): drop the cached copy and ask Custos once
          // more, which knows whether the connection still stands or the user must connect again.
          custos.forget({ provider: config.provider, subjectToken: user.token });
          if (attempt === 1) continue;
          return failure('The provider refused the user’s token; reconnect the account and try again.');
        }
        return failure(err instanceof ProviderError ? err.message : 'The provider could not be reached.');
      }
    }
  };
}

/** What the user (and the model) may read about a Custos refusal: its code and a fixed sentence, never a token. */
function custosFailure(err: CustosError): string {
  switch (err.code) {
    case 'temporarily_unavailable':
    case 'key_unavailable':
    case 'slow_down':
      return `Custos is busy or unavailable (${err.code}); try again later.`;
    case 'invalid_grant':
      return 'Custos did not accept the user’s sign-in for this server (invalid_grant).';
    case 'invalid_client':
      return 'This server’s Custos credentials were refused (invalid_client).';
    case 'invalid_target':
    case 'invalid_scope':
    case 'unauthorized_client':
      return `This server may not use the provider or scopes it asked for (${err.code}).`;
    default:
      return `Custos refused the request (${err.code}).`;
  }
}
