/**
 * Protocol 2026-07-28 through `@modelcontextprotocol/server` 2.x: stateless, a fresh McpServer per request
 * from one factory. A missing connection is an `input_required` result with a URL elicitation and a sealed
 * requestState bound to the user, the tool call and a short expiry (`@custos/sdk/mcp/v2`); the client retries
 * with the user's answer and the state, and the tool runs again.
 */
import type { CustosClient } from '@custos/sdk';
import { custosConsent } from '@custos/sdk/mcp/v2';
import {
  createMcpHandler,
  McpServer,
  type McpHttpHandler,
  type ServerContext,
} from '@modelcontextprotocol/server';
import { userOf } from './auth.js';
import type { ExampleConfig } from './config.js';
import { WHOAMI, type createWhoami } from './whoami.js';

export interface ModernDeps {
  whoami: ReturnType<typeof createWhoami>;
  custos: CustosClient;
  config: ExampleConfig;
  onError: (err: Error) => void;
}

export function createModernHandler(deps: ModernDeps): McpHttpHandler {
  const consent = custosConsent({
    custos: deps.custos,
    key: deps.config.stateKey,
    // The authenticated principal: the verified token's `sub`, attached by this server, never client input.
    user: (ctx) => userOf(ctx.http?.authInfo)?.subject,
    providerName: deps.config.providerName,
    onError: (err) => deps.onError(err instanceof Error ? err : new Error(String(err))),
  });

  const factory = () => {
    const server = new McpServer(
      { name: 'custos-example', version: '0.1.0' },
      { capabilities: { tools: {} } },
    );
    server.registerTool(
      WHOAMI.name,
      {
        title: WHOAMI.title,
        description: WHOAMI.description,
        annotations: { readOnlyHint: true, openWorldHint: true },
      },
      consent.tool(WHOAMI.name, async (ctx: ServerContext) => {
        const user = userOf(ctx.http?.authInfo);
        // Never without one: every request is authenticated before it reaches the handler.
        if (!user) throw new Error('no authenticated user on the request');
        return deps.whoami(user, ctx.mcpReq.signal);
      }),
    );
    return server;
  };

  // 2025-era traffic never reaches this handler (server.ts routes it to the 1.x sessions); `reject` makes sure.
  return createMcpHandler(factory, { legacy: 'reject', onerror: deps.onError });
}
