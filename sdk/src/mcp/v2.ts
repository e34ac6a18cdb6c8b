/**
 * Custos consent for MCP servers built with `@modelcontextprotocol/server` 2.x (protocol 2026-07-28, stateless).
 *
 * A tool that needs the user's provider token and finds no usable connection answers the call with an
 * `input_required` result: a URL elicitation of the Custos connect link, and a sealed `requestState` bound to
 * the user, to this tool call (tool name and a canonical digest of its arguments) and to a short expiry. The
 * client shows the link, the user connects in the browser, and the client retries the call echoing the state
 * with the user's answer. On that retry the state is verified before anything else; if the user accepted, the
 * retry waits (bounded) for the connect session to finish, and the tool runs again: with the token this time,
 * or with a fresh `input_required` if the user is still not connected. A declined or dismissed prompt ends the
 * call with a tool error.
 *
 * ```ts
 * const custos = new CustosClient({ url, clientId, clientSecret });
 * const consent = custosConsent({
 *   custos,
 *   key: process.env.MCP_STATE_KEY!,                                  // ≥ 32 bytes, the same on every instance
 *   user: (ctx) => ctx.http?.authInfo?.extra?.sub as string | undefined, // the authenticated principal
 *   providerName: 'GitHub',
 * });
 * server.registerTool('whoami', { description: 'Who am I on GitHub' }, consent.tool('whoami', async (ctx) => {
 *   const { accessToken } = await custos.getAccessToken({ provider: 'github', userId: userOf(ctx) });
 *   return { content: [{ type: 'text', text: await whoami(accessToken) }] };
 * }));
 * ```
 *
 * Refusals are tool-error results with a stable code in `_meta["custos/error"]` (McpServer turns anything a
 * tool callback throws into a tool error, so a JSON-RPC error is not available to a tool): `request_state_invalid`,
 * `request_state_expired`, `request_state_user_mismatch`, `request_state_call_mismatch`, `consent_declined`,
 * `consent_cancelled`, `unauthenticated`. Their text never carries the state, a token or a stack trace.
 *
 * Clients that did not declare `elicitation.url` in the request's capabilities (and 2025-era requests, which
 * carry no per-request capabilities; serve those with `@custos/sdk/mcp/v1`) get a tool error whose text carries
 * the link (`consent_required`), since the spec forbids input requests the client did not declare.
 *
 * A `requestState` that is not a Custos one (no `custos1.` prefix) is left to the callback: it belongs to the
 * author's own multi-round-trip logic, and skipping it can only make the call start afresh. If the server sets
 * `ServerOptions.requestState.verify`, wrap that verifier with `skipCustosRequestState` so Custos states reach
 * the tool unchanged.
 */
import {
  CLIENT_CAPABILITIES_META_KEY,
  inputRequired,
  type CallToolResult,
  type ClientCapabilities,
  type InputRequiredResult,
  type ServerContext,
} from '@modelcontextprotocol/server';
import { ConsentRequiredError, type CustosClient } from '../index.js';
import { consentLinkResult, consentMessage, toolError, type ConsentTextOptions } from './consent.js';
import { argumentsDigest, REQUEST_STATE_PREFIX, RequestStateSealer } from './request-state.js';

export {
  CUSTOS_ERROR_META_KEY,
  consentMessage,
  type ConsentTextOptions,
  type CustosToolErrorCode,
  type ProviderName,
} from './consent.js';
export { argumentsDigest, canonicalJson } from './request-state.js';

/** The key of the connect elicitation in `inputRequests` / `inputResponses`. */
export const CONSENT_INPUT_KEY = 'custos_connect';

/** The longest a requestState lives (the spec asks for a short expiry). */
const MAX_STATE_TTL_SECONDS = 600;

export type ToolResult = CallToolResult | InputRequiredResult;

export interface CustosConsentOptions extends ConsentTextOptions {
  custos: Pick<CustosClient, 'waitForConnectSession'>;
  /**
   * The secret the requestState is sealed with: at least 32 bytes (a string counts its UTF-8 bytes). Every
   * server instance behind the same endpoint needs the same key, since the retry may reach any of them; a
   * per-process random key works only when one process serves every call. Rotating it voids states in flight
   * (their users get a refusal and call again).
   */
  key: Uint8Array | string;
  /**
   * The authenticated principal of the request, from MCP authorization (e.g. the verified access token's
   * `sub`), never from anything the client merely says. The state is bound to it; to bind it to the MCP client
   * as well (the spec's "bind elicitation requests to the client and user identity"), include the token's
   * client id, e.g. `${authInfo.clientId} ${sub}`. It is only compared, never sent to Custos.
   */
  user: (ctx: ServerContext) => string | undefined;
  /**
   * How long a requestState stays valid, in seconds (fractions allowed): at most 600, and never past the
   * connect link's own expiry. Default 600.
   */
  stateTtlSeconds?: number;
  /**
   * On a retry where the user accepted the elicitation, how long to wait for the connect session to finish
   * before running the tool again (clients retry as soon as the user has opened the link). Keep it below the
   * clients' request timeout (60 s by default in the MCP SDKs). 0 disables the wait. Default 45 000.
   */
  waitForCompletionMs?: number;
  /** How often that wait reads the connect session; the core client's default when unset. */
  pollIntervalMs?: number;
  /** Errors while waiting for the connect session (Custos unreachable); the tool then runs anyway. */
  onError?: (error: unknown) => void;
}

export interface CustosConsent {
  /**
   * Wraps the callback of tool `name` (the name is part of what the state is bound to, and the callback is not
   * told it): a ConsentRequiredError thrown inside becomes `input_required` (or the link fallback), and a
   * retried call is verified before the callback runs again. Works for tools with and without `inputSchema`.
   */
  tool<A extends [ServerContext] | [unknown, ServerContext] = [ServerContext]>(
    name: string,
    callback: (...args: A) => ToolResult | Promise<ToolResult>,
  ): (...args: A) => Promise<ToolResult>;
}

/** Whether a requestState is one the Custos helper sealed (for routing in a server-wide verifier). */
export function isCustosRequestState(state: string): boolean {
  return state.startsWith(REQUEST_STATE_PREFIX);
}

/**
 * Wraps a `ServerOptions.requestState.verify` hook (e.g. `createRequestStateCodec(...).verify`) so that it
 * leaves Custos states alone: they are verified by the tool wrapper, which knows the call they are bound to.
 */
export function skipCustosRequestState<C>(
  verify: (state: string, ctx: C) => unknown,
): (state: string, ctx: C) => unknown {
  return (state, ctx) => (isCustosRequestState(state) ? undefined : verify(state, ctx));
}

/** The client capabilities the request declared (2026-07-28 carries them on every request). */
function declaredCapabilities(ctx: ServerContext): ClientCapabilities | undefined {
  const envelope = ctx.mcpReq.envelope as Record<string, unknown> | undefined;
  return envelope?.[CLIENT_CAPABILITIES_META_KEY] as ClientCapabilities | undefined;
}

function elicitAction(response: unknown): 'accept' | 'decline' | 'cancel' | undefined {
  if (typeof response !== 'object' || response === null) return undefined;
  const action = (response as { action?: unknown }).action;
  return action === 'accept' || action === 'decline' || action === 'cancel' ? action : undefined;
}

export function custosConsent(options: CustosConsentOptions): CustosConsent {
  const sealer = new RequestStateSealer(options.key);
  const ttlSeconds = options.stateTtlSeconds ?? MAX_STATE_TTL_SECONDS;
  if (!(ttlSeconds > 0 && ttlSeconds <= MAX_STATE_TTL_SECONDS)) {
    throw new RangeError(`stateTtlSeconds must be above 0 and at most ${MAX_STATE_TTL_SECONDS}`);
  }
  const waitMs = options.waitForCompletionMs ?? 45_000;
  const onError = options.onError ?? (() => undefined);

  const userOf = (ctx: ServerContext) => {
    const user = options.user(ctx);
    return typeof user === 'string' && user !== '' ? user : undefined;
  };

  const unauthenticated = () =>
    toolError(
      'unauthenticated',
      'Custos: this call has no authenticated user to ask for consent on behalf of.',
    );

  /** The answer to a ConsentRequiredError: input_required with a sealed state, or the link fallback. */
  const elicit = (
    error: ConsentRequiredError,
    tool: string,
    args: unknown,
    ctx: ServerContext,
  ): ToolResult => {
    if (!declaredCapabilities(ctx)?.elicitation?.url) return consentLinkResult(error, options);
    const user = userOf(ctx);
    if (user === undefined) return unauthenticated();
    const expiresAt = Math.min(Date.now() + ttlSeconds * 1000, error.expiresAt.getTime());
    const requestState = sealer.seal({
      user,
      tool,
      args: argumentsDigest(args),
      expiresAt,
      sessionId: error.sessionId,
      sessionUri: error.sessionUri,
    });
    return inputRequired({
      inputRequests: {
        [CONSENT_INPUT_KEY]: inputRequired.elicitUrl({
          url: error.connectUri,
          message: consentMessage(error, options),
        }),
      },
      requestState,
    });
  };

  /** Verifies a retried call's Custos state; a refusal to answer with, or undefined to run the tool. */
  const resume = async (
    sealed: string,
    tool: string,
    args: unknown,
    ctx: ServerContext,
  ): Promise<CallToolResult | undefined> => {
    const state = sealer.open(sealed);
    if (state === undefined) {
      return toolError('request_state_invalid', 'Custos: the requestState was altered or is not valid here.');
    }
    if (Date.now() >= state.expiresAt) {
      return toolError(
        'request_state_expired',
        'Custos: the consent request has expired. Call the tool again to get a new link.',
      );
    }
    const user = userOf(ctx);
    if (user === undefined) return unauthenticated();
    if (state.user !== user) {
      return toolError('request_state_user_mismatch', 'Custos: the requestState was issued to another user.');
    }
    if (state.tool !== tool || state.args !== argumentsDigest(args)) {
      return toolError(
        'request_state_call_mismatch',
        'Custos: the requestState was issued for another tool call (other tool or other arguments).',
      );
    }
    switch (elicitAction(ctx.mcpReq.inputResponses?.[CONSENT_INPUT_KEY])) {
      case 'decline':
        return toolError('consent_declined', 'The user declined to connect the account this tool needs.');
      case 'cancel':
        return toolError(
          'consent_cancelled',
          'The user dismissed the request to connect the account this tool needs.',
        );
      case 'accept':
        await waitForSession(
          state.sessionUri,
          Math.min(waitMs, state.expiresAt - Date.now()),
          ctx.mcpReq.signal,
        );
        return undefined;
      case undefined:
        // No answer to our request: the tool runs again, and asks again if it must.
        return undefined;
    }
  };

  /** Accept means the user opened the link, not that they finished: give them a little time to finish. */
  const waitForSession = async (sessionUri: string, ms: number, cancelled: AbortSignal) => {
    if (sessionUri === '' || ms <= 0 || cancelled.aborted) return;
    const signal = AbortSignal.any([cancelled, AbortSignal.timeout(ms)]);
    try {
      await options.custos.waitForConnectSession(sessionUri, {
        signal,
        ...(options.pollIntervalMs !== undefined && { intervalMs: options.pollIntervalMs }),
      });
    } catch (err) {
      // Timed out or cancelled: the tool runs and asks again. Anything else is worth reporting, then the same.
      if (!signal.aborted) onError(err);
    }
  };

  const wrap = (
    name: string,
    callback: (...rest: unknown[]) => ToolResult | Promise<ToolResult>,
  ): ((...rest: unknown[]) => Promise<ToolResult>) => {
    return async (...rest) => {
      // McpServer calls (args, ctx) for a tool with an inputSchema and (ctx) for one without.
      const ctx = rest[rest.length - 1] as ServerContext;
      const args = rest.length > 1 ? rest[0] : undefined;
      const sealed = ctx.mcpReq.requestState();
      if (typeof sealed === 'string' && isCustosRequestState(sealed)) {
        const refusal = await resume(sealed, name, args, ctx);
        if (refusal) return refusal;
      }
      try {
        return await callback(...rest);
      } catch (err) {
        if (err instanceof ConsentRequiredError) return elicit(err, name, args, ctx);
        throw err;
      }
    };
  };

  return { tool: wrap as CustosConsent['tool'] };
}
