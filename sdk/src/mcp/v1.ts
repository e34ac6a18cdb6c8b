/**
 * Custos consent for MCP servers built with `@modelcontextprotocol/sdk` 1.x (protocol 2025-11-25).
 *
 * A tool that needs the user's provider token and finds no usable connection answers the call with the
 * protocol's URLElicitationRequiredError (JSON-RPC -32042) carrying the Custos connect link. A background
 * watcher follows the connect session and sends `notifications/elicitation/complete` to this client when the
 * user has connected, so the client can retry the call by itself.
 *
 * ```ts
 * const custos = new CustosClient({ url, clientId, clientSecret });
 * // In the code that builds the McpServer of an MCP session:
 * const consent = custosConsent(server, custos, { providerName: 'GitHub' });
 * server.registerTool('whoami', { description: 'Who am I on GitHub' }, consent.tool(async (extra) => {
 *   const { accessToken } = await custos.getAccessToken({ provider: 'github', userId: userOf(extra) });
 *   return { content: [{ type: 'text', text: await whoami(accessToken) }] };
 * }));
 * ```
 *
 * Clients that did not declare the `elicitation.url` capability cannot take -32042 (the spec forbids sending
 * them a mode they did not declare), so they get a tool-error result whose text carries the link instead
 * (`_meta["custos/error"]: "consent_required"`), and no watcher: without the capability there is nobody to
 * notify. The link is still useful there: the model can show it, the user opens it, and calls again.
 *
 * The completion notification is sent without a related request, so over Streamable HTTP it travels on the
 * session's standalone GET stream: a server that should send it must be stateful (one McpServer and transport
 * per MCP session), which is also how the spec's "only to the client that initiated the elicitation" is met.
 */
import { randomUUID } from 'node:crypto';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { Server } from '@modelcontextprotocol/sdk/server/index.js';
import type { RequestHandlerExtra } from '@modelcontextprotocol/sdk/shared/protocol.js';
import {
  UrlElicitationRequiredError,
  type CallToolResult,
  type ElicitRequestURLParams,
  type ServerNotification,
  type ServerRequest,
} from '@modelcontextprotocol/sdk/types.js';
import { ConsentRequiredError, type CustosClient } from '../index.js';
import { consentLinkResult, consentMessage, type ConsentTextOptions } from './consent.js';

export {
  CUSTOS_ERROR_META_KEY,
  consentMessage,
  type ConsentTextOptions,
  type CustosToolErrorCode,
  type ProviderName,
} from './consent.js';

/** What a 1.x tool callback receives besides its arguments. */
export type ToolExtra = RequestHandlerExtra<ServerRequest, ServerNotification>;

export interface CustosConsentOptions extends ConsentTextOptions {
  /**
   * Send `notifications/elicitation/complete` when the user finishes connecting. Default true. Without it the
   * client learns nothing and the user retries by hand.
   */
  notifyOnCompletion?: boolean;
  /** How often a watcher reads its connect session; the core client's default when unset. */
  pollIntervalMs?: number;
  /**
   * At most this many connect sessions are watched at once for this server (each watcher polls Custos until
   * its session ends or expires); past it the oldest watcher stops. Default 16.
   */
  maxWatchers?: number;
  /** Errors of the background watchers (Custos unreachable, notification not deliverable). Ignored by default. */
  onError?: (error: unknown) => void;
}

export interface CustosConsent {
  /**
   * Wraps a tool callback: a ConsentRequiredError thrown inside becomes -32042 (or the link fallback);
   * anything else passes through unchanged.
   */
  tool<A extends [ToolExtra] | [unknown, ToolExtra] = [ToolExtra]>(
    callback: (...args: A) => CallToolResult | Promise<CallToolResult>,
  ): (...args: A) => Promise<CallToolResult>;
  /**
   * The answer to a ConsentRequiredError, for callbacks that catch it themselves: throws the
   * UrlElicitationRequiredError (and starts the watcher) when the client declared `elicitation.url`,
   * otherwise returns the tool-error result with the link.
   */
  handle(error: ConsentRequiredError): CallToolResult;
  /** The elicitation ids (connect session ids) being watched now. */
  readonly watching: readonly string[];
  /** Stops every watcher; also done when the server's connection closes. */
  close(): void;
}

/**
 * The URL elicitation for a ConsentRequiredError: its id is the connect session id (a random one if the Custos
 * server is too old to name the session), its URL the connect link.
 */
export function consentElicitation(
  error: ConsentRequiredError,
  options: ConsentTextOptions = {},
): ElicitRequestURLParams {
  return {
    mode: 'url',
    elicitationId: error.sessionId || randomUUID(),
    url: error.connectUri,
    message: consentMessage(error, options),
  };
}

const isMcpServer = (s: McpServer | Server): s is McpServer =>
  'server' in s && typeof s.registerTool === 'function';

/**
 * Consent handling for one McpServer (or low-level Server): create it where the server of an MCP session is
 * built, next to its tools.
 */
export function custosConsent(
  server: McpServer | Server,
  custos: Pick<CustosClient, 'waitForConnectSession'>,
  options: CustosConsentOptions = {},
): CustosConsent {
  const lowLevel = isMcpServer(server) ? server.server : server;
  const maxWatchers = Math.max(1, options.maxWatchers ?? 16);
  const notify = options.notifyOnCompletion ?? true;
  const onError = options.onError ?? (() => undefined);
  /** Insertion-ordered: the first entry is the oldest watcher. */
  const watchers = new Map<string, AbortController>();

  const stop = (id: string) => {
    watchers.get(id)?.abort();
    watchers.delete(id);
  };

  const watch = (error: ConsentRequiredError) => {
    const id = error.sessionId;
    // One watcher per elicitation, however often the same session comes back. Nothing to watch without a
    // session to read (a Custos server older than connect_session_uri).
    if (id === '' || error.sessionUri === '' || watchers.has(id)) return;
    const remainingMs = error.expiresAt.getTime() - Date.now();
    if (remainingMs <= 0) return;
    for (const oldest of watchers.keys()) {
      if (watchers.size < maxWatchers) break;
      stop(oldest);
    }
    const controller = new AbortController();
    watchers.set(id, controller);
    // Bounded by the session's own expiry: after it the link is dead and there is nothing left to announce.
    const signal = AbortSignal.any([controller.signal, AbortSignal.timeout(remainingMs)]);
    const run = async () => {
      const session = await custos.waitForConnectSession(error.sessionUri, {
        signal,
        ...(options.pollIntervalMs !== undefined && { intervalMs: options.pollIntervalMs }),
      });
      // Only a completed session is worth announcing: the spec's notification means "done, retry now".
      if (session.status !== 'completed' || signal.aborted) return;
      await lowLevel.createElicitationCompletionNotifier(id)();
    };
    run()
      .catch((err: unknown) => {
        if (!signal.aborted) onError(err);
      })
      .finally(() => {
        if (watchers.get(id) === controller) watchers.delete(id);
      });
  };

  const close = () => {
    for (const id of [...watchers.keys()]) stop(id);
  };
  // Chained, not replaced: the author's own onclose keeps working.
  const previousOnClose = lowLevel.onclose;
  lowLevel.onclose = () => {
    close();
    previousOnClose?.();
  };

  const handle = (error: ConsentRequiredError): CallToolResult => {
    if (!lowLevel.getClientCapabilities()?.elicitation?.url) return consentLinkResult(error, options);
    if (notify) watch(error);
    throw new UrlElicitationRequiredError(
      [consentElicitation(error, options)],
      consentMessage(error, options),
    );
  };

  const tool = (
    callback: (...args: unknown[]) => CallToolResult | Promise<CallToolResult>,
  ): ((...args: unknown[]) => Promise<CallToolResult>) => {
    return async (...args) => {
      try {
        return await callback(...args);
      } catch (err) {
        if (err instanceof ConsentRequiredError) return handle(err);
        throw err;
      }
    };
  };

  return {
    tool: tool as CustosConsent['tool'],
    handle,
    get watching() {
      return [...watchers.keys()];
    },
    close,
  };
}
