/**
 * Protocol 2025-11-25 through `@modelcontextprotocol/sdk` 1.x: stateful Streamable HTTP sessions (one McpServer
 * and transport per session), so that `notifications/elicitation/complete` reaches the client on its GET
 * stream. A session belongs to the user who opened it: its id presented with another user's token is answered
 * as an unknown session.
 */
import { randomUUID } from 'node:crypto';
import type http from 'node:http';
import type { CustosClient } from '@custos/sdk';
import { custosConsent } from '@custos/sdk/mcp/v1';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { RequestHandlerExtra } from '@modelcontextprotocol/sdk/shared/protocol.js';
import {
  isInitializeRequest,
  type ServerNotification,
  type ServerRequest,
} from '@modelcontextprotocol/sdk/types.js';
import { authInfoOf, userOf, type AuthenticatedUser } from './auth.js';
import { sendJsonRpcError } from './http.js';
import { WHOAMI, type createWhoami } from './whoami.js';

/** Sessions kept at once; an initialize past it is answered 503 until idle ones are swept. */
const MAX_SESSIONS = 1000;
/** Sessions one user keeps at once; opening another closes their least recently used one. */
const MAX_SESSIONS_PER_USER = 16;
/** A session nobody used for this long is closed. */
const IDLE_MS = 30 * 60_000;

type ToolExtra = RequestHandlerExtra<ServerRequest, ServerNotification>;

interface Session {
  transport: StreamableHTTPServerTransport;
  server: McpServer;
  /** The `sub` of the user who opened it. */
  subject: string;
  lastSeen: number;
}

export interface LegacyDeps {
  whoami: ReturnType<typeof createWhoami>;
  custos: CustosClient;
  providerName: string;
  onError: (err: Error) => void;
}

export class LegacySessions {
  private readonly sessions = new Map<string, Session>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly deps: LegacyDeps) {
    this.sweeper = setInterval(() => this.sweep(), 60_000);
    this.sweeper.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  /** Serves one authenticated 2025-era request (POST with its parsed body, GET stream, DELETE). */
  async handle(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    user: AuthenticatedUser,
    body: unknown,
  ): Promise<void> {
    // The transport hands `req.auth` to the handlers as `extra.authInfo`: the token of this very request.
    const authed = Object.assign(req, { auth: authInfoOf(user) });
    const sessionId = req.headers['mcp-session-id'];
    if (typeof sessionId === 'string') {
      const session = this.sessions.get(sessionId);
      // Another user's session id is not theirs to use, and they need not learn that it exists.
      if (!session || session.subject !== user.subject) {
        sendJsonRpcError(res, 404, -32001, 'Session not found');
        return;
      }
      session.lastSeen = Date.now();
      await session.transport.handleRequest(authed, res, body);
      return;
    }
    if (req.method !== 'POST' || !isInitializeRequest(body)) {
      sendJsonRpcError(res, 400, -32000, 'Bad Request: No valid session ID provided');
      return;
    }
    if (this.sessions.size >= MAX_SESSIONS) {
      sendJsonRpcError(res, 503, -32000, 'Too many sessions; try again later', { 'retry-after': '30' });
      return;
    }
    this.makeRoomFor(user.subject);
    const server = this.buildServer();
    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => {
        this.sessions.set(id, { transport, server, subject: user.subject, lastSeen: Date.now() });
      },
      onsessionclosed: (id) => {
        this.sessions.delete(id);
      },
    });
    transport.onclose = () => {
      if (transport.sessionId) this.sessions.delete(transport.sessionId);
    };
    await server.connect(transport);
    await transport.handleRequest(authed, res, body);
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map((s) => s.server.close().catch(() => undefined)));
  }

  /** One user cannot fill the table for everyone: past their share, their least recently used session goes. */
  private makeRoomFor(subject: string): void {
    const theirs = [...this.sessions].filter(([, s]) => s.subject === subject);
    if (theirs.length < MAX_SESSIONS_PER_USER) return;
    const [id, oldest] = theirs.reduce((a, b) => (b[1].lastSeen < a[1].lastSeen ? b : a));
    this.sessions.delete(id);
    oldest.server.close().catch(() => undefined);
  }

  private sweep(): void {
    const cutoff = Date.now() - IDLE_MS;
    for (const [id, session] of this.sessions) {
      if (session.lastSeen < cutoff) {
        this.sessions.delete(id);
        session.server.close().catch(() => undefined);
      }
    }
  }

  /** The McpServer of one session, with its tools. */
  private buildServer(): McpServer {
    const server = new McpServer(
      { name: 'custos-example', version: '0.1.0' },
      { capabilities: { tools: {} } },
    );
    const consent = custosConsent(server, this.deps.custos, {
      providerName: this.deps.providerName,
      // The client retries when told; a second's delay after the user connects is not noticed.
      pollIntervalMs: 1000,
      onError: (err) => this.deps.onError(err instanceof Error ? err : new Error(String(err))),
    });
    server.registerTool(
      WHOAMI.name,
      {
        title: WHOAMI.title,
        description: WHOAMI.description,
        annotations: { readOnlyHint: true, openWorldHint: true },
      },
      consent.tool(async (extra: ToolExtra) => {
        const user = userOf(extra.authInfo);
        // Never without one: every request is authenticated before it reaches a transport.
        if (!user) throw new Error('no authenticated user on the request');
        return this.deps.whoami(user, extra.signal);
      }),
    );
    return server;
  }
}
