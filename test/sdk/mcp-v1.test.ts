/**
 * @custos/sdk/mcp/v1 with the real 1.x SDK (protocol 2025-11-25): an McpServer per session behind the
 * Streamable HTTP transport on loopback, a real 1.x Client, a real Custos and oidc-provider. A user without a
 * connection gets URLElicitationRequiredError (-32042) naming the connect link; completing the connect flow
 * sends notifications/elicitation/complete to that client; the retried call then runs as that user at the
 * provider. A client without the `elicitation.url` capability gets the link in a tool error instead.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConsentRequiredError } from '@custos/sdk';
import { CUSTOS_ERROR_META_KEY, custosConsent, type CustosConsent } from '@custos/sdk/mcp/v1';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import {
  ElicitationCompleteNotificationSchema,
  ErrorCode,
  McpError,
  type CallToolResult,
  type ClientCapabilities,
} from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { eventually, PROVIDER, startMcpCustos, type McpCustos } from './mcp-custos.js';

let world: McpCustos;
let mcpServer: http.Server;
let mcpUrl: URL;
/** The consent helper of each MCP session, by user. */
const consents = new Map<string, CustosConsent>();
/** The first ConsentRequiredError each user's `whoami_again` saw, thrown again on every later call. */
const firstErrors = new Map<string, ConsentRequiredError>();

/** One McpServer per MCP session, as a stateful 1.x server is built. */
function buildServer(user: string): McpServer {
  const server = new McpServer({ name: 'custos-v1-test', version: '1.0.0' });
  const consent = custosConsent(server, world.custos, { providerName: 'Acme', pollIntervalMs: 100 });
  consents.set(user, consent);
  const whoami = async (label = 'provider sub'): Promise<CallToolResult> => {
    const token = await world.custos.getAccessToken({ provider: PROVIDER, userId: user });
    const info = await world.userinfo(token.accessToken);
    return { content: [{ type: 'text', text: `${label}: ${info.sub}` }] };
  };
  server.registerTool(
    'whoami',
    { description: 'Who the user is at Acme', inputSchema: { label: z.string().optional() } },
    consent.tool(async (args, extra) => {
      // The authenticated principal, as the transport hands it over; never something the client says.
      if (extra.authInfo?.extra?.sub !== user) throw new Error('not the session’s user');
      return whoami(args.label);
    }),
  );
  server.registerTool(
    'whoami_again',
    { description: 'Like whoami, but keeps answering with the first consent request it got' },
    consent.tool(async (extra) => {
      if (extra.authInfo?.extra?.sub !== user) throw new Error('not the session’s user');
      const seen = firstErrors.get(user);
      if (seen) throw seen;
      try {
        return await whoami();
      } catch (err) {
        if (err instanceof ConsentRequiredError) firstErrors.set(user, err);
        throw err;
      }
    }),
  );
  return server;
}

beforeAll(async () => {
  world = await startMcpCustos();
  const transports = new Map<string, StreamableHTTPServerTransport>();
  mcpServer = http.createServer((req, res) => {
    // Stand-in for MCP authorization: the bearer token `user:<name>` is that user.
    const match = /^Bearer user:([a-z0-9-]+)$/.exec(req.headers.authorization ?? '');
    if (!match) {
      res.writeHead(401).end();
      return;
    }
    const user = match[1];
    const authed = Object.assign(req, {
      auth: { token: `user:${user}`, clientId: 'mcp-test-client', scopes: [], extra: { sub: user } },
    });
    const sessionId = req.headers['mcp-session-id'];
    const serve = async () => {
      let transport = typeof sessionId === 'string' ? transports.get(sessionId) : undefined;
      if (!transport) {
        const created = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => void transports.set(id, created),
          onsessionclosed: (id) => void transports.delete(id),
        });
        await buildServer(user).connect(created);
        transport = created;
      }
      await transport.handleRequest(authed, res);
    };
    serve().catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((r) => mcpServer.listen(0, '127.0.0.1', r));
  mcpUrl = new URL(`http://127.0.0.1:${(mcpServer.address() as AddressInfo).port}/mcp`);
});

afterAll(async () => {
  for (const consent of consents.values()) consent.close();
  mcpServer.closeAllConnections();
  await new Promise((r) => mcpServer.close(r));
  await world.close();
});

interface TestClient {
  client: Client;
  transport: StreamableHTTPClientTransport;
  /** elicitationIds of the notifications/elicitation/complete this client received. */
  completed: string[];
}

async function connectClient(user: string, capabilities: ClientCapabilities): Promise<TestClient> {
  const client = new Client({ name: 'custos-v1-test-client', version: '1.0.0' }, { capabilities });
  const completed: string[] = [];
  client.setNotificationHandler(ElicitationCompleteNotificationSchema, (n) => {
    completed.push(n.params.elicitationId);
  });
  const transport = new StreamableHTTPClientTransport(mcpUrl, {
    requestInit: { headers: { authorization: `Bearer user:${user}` } },
  });
  await client.connect(transport);
  return { client, transport, completed };
}

/** The -32042 error a call is refused with, and its one URL elicitation. */
async function urlElicitationOf(client: Client, tool = 'whoami') {
  const err: unknown = await client.callTool({ name: tool, arguments: {} }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(McpError);
  const mcpError = err as McpError;
  expect(mcpError.code).toBe(ErrorCode.UrlElicitationRequired);
  expect(mcpError.code).toBe(-32042);
  const data = mcpError.data as { elicitations: Record<string, unknown>[] };
  expect(data.elicitations).toHaveLength(1);
  return {
    error: mcpError,
    elicitation: data.elicitations[0] as {
      mode: string;
      elicitationId: string;
      url: string;
      message: string;
    },
  };
}

async function sessionOf(id: string) {
  const res = await world.app.request('GET', `/v1/tenants/${world.tenant.tenantId}/connect/sessions/${id}`, {
    key: world.tenant.adminKey,
  });
  expect(res.status).toBe(200);
  return res.body as { id: string; userId: string; provider: string; status: string };
}

describe('@custos/sdk/mcp/v1 with a client that declares elicitation.url', () => {
  it('answers -32042 with the connect link, notifies completion, and the retried call runs as that user', async () => {
    const alice = await connectClient('alice', { elicitation: { url: {} } });
    const bob = await connectClient('bob', { elicitation: { url: {} } });
    try {
      const { error, elicitation } = await urlElicitationOf(alice.client);
      // The elicitation is the connect session Custos opened for alice: its id, its link, a message naming Acme.
      expect(elicitation.mode).toBe('url');
      const session = await sessionOf(elicitation.elicitationId);
      expect(session).toMatchObject({ userId: 'alice', provider: PROVIDER, status: 'pending' });
      expect(elicitation.url.startsWith(`${world.custosUrl}/connect/`)).toBe(true);
      expect(elicitation.message).toContain('Acme');
      expect(elicitation.message).toMatch(/not connected/);
      expect(error.message).toContain('Acme');
      // Nothing in the answer is a token or a secret of the connector.
      expect(JSON.stringify(error.data)).not.toContain(world.connector.clientSecret);
      expect(consents.get('alice')!.watching).toEqual([elicitation.elicitationId]);

      // Bob's session gets his own elicitation.
      const forBob = await urlElicitationOf(bob.client);
      expect(forBob.elicitation.elicitationId).not.toBe(elicitation.elicitationId);

      await world.completeConnect(elicitation.url, 'alice');
      await eventually(() => alice.completed.length > 0, 'notifications/elicitation/complete');
      expect(alice.completed).toEqual([elicitation.elicitationId]);
      // Only the client that started it hears about it.
      expect(bob.completed).toEqual([]);
      await eventually(() => consents.get('alice')!.watching.length === 0, 'the watcher to end');

      const retried = (await alice.client.callTool({
        name: 'whoami',
        arguments: { label: 'sub at Acme' },
      })) as CallToolResult;
      expect(retried.isError).toBeFalsy();
      expect(retried.content).toEqual([{ type: 'text', text: 'sub at Acme: alice' }]);
      // Bob still has no connection: alice's did not become his.
      expect((await urlElicitationOf(bob.client)).error.code).toBe(-32042);
    } finally {
      await alice.client.close();
      await bob.client.close();
    }
  });

  it('watches one connect session once, however often the same elicitation is answered', async () => {
    const carol = await connectClient('carol', { elicitation: { url: {} } });
    try {
      const first = await urlElicitationOf(carol.client, 'whoami_again');
      const second = await urlElicitationOf(carol.client, 'whoami_again');
      expect(second.elicitation.elicitationId).toBe(first.elicitation.elicitationId);
      expect(consents.get('carol')!.watching).toEqual([first.elicitation.elicitationId]);

      await world.completeConnect(first.elicitation.url, 'carol');
      await eventually(() => carol.completed.length > 0, 'notifications/elicitation/complete');
      await eventually(() => consents.get('carol')!.watching.length === 0, 'the watcher to end');
      expect(carol.completed).toEqual([first.elicitation.elicitationId]);
    } finally {
      await carol.client.close();
    }
  });

  it('stops watching when the MCP session ends', async () => {
    const dave = await connectClient('dave', { elicitation: { url: {} } });
    const { elicitation } = await urlElicitationOf(dave.client);
    expect(consents.get('dave')!.watching).toEqual([elicitation.elicitationId]);
    await dave.transport.terminateSession();
    await dave.client.close();
    await eventually(() => consents.get('dave')!.watching.length === 0, 'the watcher to stop');
    expect((await sessionOf(elicitation.elicitationId)).status).toBe('pending');
  });
});

describe('@custos/sdk/mcp/v1 with a client that cannot open URL elicitations', () => {
  it.each([
    ['no elicitation capability', {}],
    ['form mode only', { elicitation: { form: {} } }],
  ])('returns a tool error with the connect link (%s)', async (_label, capabilities: ClientCapabilities) => {
    const user = `erin-${Object.keys(capabilities).length}`;
    const erin = await connectClient(user, capabilities);
    try {
      const result = (await erin.client.callTool({ name: 'whoami', arguments: {} })) as CallToolResult;
      expect(result.isError).toBe(true);
      expect(result._meta?.[CUSTOS_ERROR_META_KEY]).toBe('consent_required');
      const text = (result.content[0] as { text: string }).text;
      expect(text).toContain('Acme');
      const link = /(http:\/\/127\.0\.0\.1:\d+\/connect\/\S+?)\s/.exec(text)?.[1];
      expect(link).toBeDefined();
      // Nobody to notify, so nothing is watched.
      expect(consents.get(user)!.watching).toEqual([]);

      // The link works: the user connects with it, calls again, and the tool runs as them.
      await world.completeConnect(link!, user);
      const retried = (await erin.client.callTool({ name: 'whoami', arguments: {} })) as CallToolResult;
      expect(retried.content).toEqual([{ type: 'text', text: `provider sub: ${user}` }]);
    } finally {
      await erin.client.close();
    }
  });
});
