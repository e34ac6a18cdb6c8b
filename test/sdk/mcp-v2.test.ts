/**
 * @custos/sdk/mcp/v2 with the real 2.x SDK (protocol 2026-07-28, stateless): `createMcpHandler` with a fresh
 * McpServer per request on loopback, a real 2.x Client, a real Custos and oidc-provider. A user without a
 * connection gets `input_required` with a URL elicitation of the connect link and a sealed requestState; the
 * client's own multi-round-trip driver shows the link (its elicitation handler stands in for the user, who
 * connects) and retries, and the call runs as that user at the provider. Retries with a requestState that was
 * altered, has expired, belongs to another user or to another call are refused; so is a declined prompt.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  CONSENT_INPUT_KEY,
  CUSTOS_ERROR_META_KEY,
  argumentsDigest,
  custosConsent,
  isCustosRequestState,
  skipCustosRequestState,
  type CustosConsentOptions,
} from '@custos/sdk/mcp/v2';
import {
  Client,
  StreamableHTTPClientTransport,
  type CallToolRequest,
  type CallToolResult,
  type ClientCapabilities,
  type ElicitRequestURLParams,
  type ElicitResult,
  type InputRequiredResult,
} from '@modelcontextprotocol/client';
import {
  createMcpHandler,
  McpServer,
  type McpHttpHandler,
  type ServerContext,
} from '@modelcontextprotocol/server';
import { z } from 'zod';
import { eventually, PROVIDER, startMcpCustos, type McpCustos } from './mcp-custos.js';

const STATE_KEY = 'v2-test-state-key-0123456789abcdef0123456789';

let world: McpCustos;
let handler: McpHttpHandler;
let mcpServer: http.Server;
let mcpUrl: URL;
/** Errors the helpers reported while waiting for connect sessions; none are expected. */
const waitErrors: unknown[] = [];

const argsSchema = z.object({ detail: z.string().optional(), tags: z.array(z.string()).optional() });

function consentWith(extra: Partial<CustosConsentOptions> = {}) {
  return custosConsent({
    custos: world.custos,
    key: STATE_KEY,
    user: (ctx) => ctx.http?.authInfo?.extra?.sub as string | undefined,
    providerName: 'Acme',
    pollIntervalMs: 100,
    waitForCompletionMs: 10_000,
    onError: (err) => waitErrors.push(err),
    ...extra,
  });
}

/** A fresh McpServer per request, as createMcpHandler wants; the consent helpers are shared (stateless). */
function serverFactory() {
  const consent = consentWith();
  // Gives up waiting at once: a retry before the user finishes asks again.
  const impatient = consentWith({ waitForCompletionMs: 1 });
  const brief = consentWith({ stateTtlSeconds: 0.3 });
  const elsewhere = consentWith({ key: 'another-deployment-key-0123456789abcdef' });
  return () => {
    const server = new McpServer({ name: 'custos-v2-test', version: '1.0.0' });
    const whoami = async (ctx: ServerContext, label = 'provider sub'): Promise<CallToolResult> => {
      const user = ctx.http?.authInfo?.extra?.sub as string;
      const token = await world.custos.getAccessToken({
        provider: PROVIDER,
        userId: user,
        signal: ctx.mcpReq.signal,
      });
      const info = await world.userinfo(token.accessToken);
      return { content: [{ type: 'text', text: `${label}: ${info.sub}` }] };
    };
    server.registerTool(
      'whoami',
      { description: 'Who the user is at Acme', inputSchema: argsSchema },
      consent.tool('whoami', async (args, ctx) => whoami(ctx, args.detail)),
    );
    server.registerTool(
      'whoami_too',
      { description: 'The same, under another name', inputSchema: argsSchema },
      consent.tool('whoami_too', async (_args, ctx) => whoami(ctx)),
    );
    server.registerTool(
      'whoami_impatient',
      { description: 'Does not wait for the connect flow' },
      impatient.tool('whoami_impatient', async (ctx) => whoami(ctx)),
    );
    server.registerTool(
      'whoami_brief',
      { description: 'Its consent requests live 0.3 s' },
      brief.tool('whoami_brief', async (ctx) => whoami(ctx)),
    );
    server.registerTool(
      'whoami_elsewhere',
      { description: 'whoami as another deployment with its own key seals it', inputSchema: argsSchema },
      elsewhere.tool('whoami', async (_args, ctx) => whoami(ctx)),
    );
    return server;
  };
}

beforeAll(async () => {
  world = await startMcpCustos();
  handler = createMcpHandler(serverFactory());
  mcpServer = http.createServer((req, res) => {
    const serve = async () => {
      // Stand-in for MCP authorization: the bearer token `user:<name>` is that user.
      const match = /^Bearer user:([a-z0-9-]+)$/.exec(req.headers.authorization ?? '');
      if (!match) {
        res.writeHead(401).end();
        return;
      }
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const headers = new Headers();
      for (const [name, value] of Object.entries(req.headers)) {
        if (typeof value === 'string') headers.set(name, value);
      }
      const request = new Request(`http://127.0.0.1${req.url}`, {
        method: req.method,
        headers,
        ...(req.method === 'POST' && { body: Buffer.concat(chunks) }),
      });
      const response = await handler.fetch(request, {
        authInfo: { token: match[0], clientId: 'mcp-test-client', scopes: [], extra: { sub: match[1] } },
      });
      res.writeHead(response.status, Object.fromEntries(response.headers));
      if (response.body) for await (const chunk of response.body) res.write(chunk);
      res.end();
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
  await handler.close();
  mcpServer.closeAllConnections();
  await new Promise((r) => mcpServer.close(r));
  await world.close();
});

afterEach(() => {
  expect(waitErrors).toEqual([]);
});

type ElicitationHandler = (params: ElicitRequestURLParams) => Promise<ElicitResult>;

/** A 2.x client for `user`; URL elicitations go to `onUrl` (the user in front of the client). */
async function connectClient(
  user: string,
  onUrl: ElicitationHandler = async () => ({ action: 'cancel' }),
  capabilities: ClientCapabilities = { elicitation: { url: {} } },
): Promise<Client> {
  const client = new Client(
    { name: 'custos-v2-test-client', version: '1.0.0' },
    { capabilities, versionNegotiation: { mode: { pin: '2026-07-28' } } },
  );
  if (capabilities.elicitation) {
    client.setRequestHandler('elicitation/create', async (request) => {
      const params = request.params;
      if (params.mode !== 'url') throw new Error('only URL elicitations are expected');
      return onUrl(params);
    });
  }
  await client.connect(
    new StreamableHTTPClientTransport(mcpUrl, {
      requestInit: { headers: { authorization: `Bearer user:${user}` } },
    }),
  );
  return client;
}

/** One leg, without the client's driver: the raw input_required (or final) result. */
async function manualCall(client: Client, params: Record<string, unknown>) {
  return (await client.callTool(params as CallToolRequest['params'], {
    allowInputRequired: true,
  })) as unknown as CallToolResult | InputRequiredResult;
}

function asInputRequired(result: CallToolResult | InputRequiredResult): InputRequiredResult {
  expect(result).toMatchObject({ resultType: 'input_required' });
  return result as InputRequiredResult;
}

/** The URL elicitation and the state of an input_required result from the helper. */
function consentRequestOf(result: CallToolResult | InputRequiredResult) {
  const ir = asInputRequired(result);
  expect(Object.keys(ir.inputRequests ?? {})).toEqual([CONSENT_INPUT_KEY]);
  const request = ir.inputRequests![CONSENT_INPUT_KEY];
  expect(request.method).toBe('elicitation/create');
  const params = request.params as ElicitRequestURLParams;
  expect(params.mode).toBe('url');
  expect(typeof ir.requestState).toBe('string');
  return { url: params.url, message: params.message, requestState: ir.requestState! };
}

const errorCodeOf = (result: CallToolResult | InputRequiredResult) => {
  const r = result as CallToolResult;
  expect(r.isError).toBe(true);
  return r._meta?.[CUSTOS_ERROR_META_KEY];
};

const textOf = (result: CallToolResult) => (result.content[0] as { text: string }).text;

describe('@custos/sdk/mcp/v2 through the client’s own multi-round-trip driver', () => {
  it('asks for consent with a URL elicitation, and the retried call runs as that user at the provider', async () => {
    const seen: ElicitRequestURLParams[] = [];
    const alice = await connectClient('alice', async (params) => {
      seen.push(params);
      // The user opens the link, signs in at the provider as themself and consents; then says "done".
      await world.completeConnect(params.url, 'alice');
      return { action: 'accept' };
    });
    try {
      const result = await alice.callTool({ name: 'whoami', arguments: { detail: 'sub at Acme' } });
      expect(result.isError).toBeFalsy();
      expect(result.content).toEqual([{ type: 'text', text: 'sub at Acme: alice' }]);
      expect(seen).toHaveLength(1);
      expect(seen[0].url.startsWith(`${world.custosUrl}/connect/`)).toBe(true);
      expect(seen[0].message).toContain('Acme');
      expect(seen[0].message).toMatch(/not connected/);
      // The same user calls again: no prompt, the stored connection is used.
      expect((await alice.callTool({ name: 'whoami_too', arguments: {} })).content).toEqual([
        { type: 'text', text: 'provider sub: alice' },
      ]);
      expect(seen).toHaveLength(1);
    } finally {
      await alice.close();
    }
  });

  it('waits on the retry for a connect flow the user finishes after accepting', async () => {
    let flow: Promise<void> | undefined;
    let asked = 0;
    const bob = await connectClient('bob', async (params) => {
      asked++;
      // Accept means "I opened the link": the client retries at once while the user is still in the browser.
      flow = world.completeConnect(params.url, 'bob');
      return { action: 'accept' };
    });
    try {
      const result = await bob.callTool({ name: 'whoami', arguments: {} });
      expect(result.content).toEqual([{ type: 'text', text: 'provider sub: bob' }]);
      // The retry waited for the flow instead of asking again.
      expect(asked).toBe(1);
      await flow;
    } finally {
      await bob.close();
    }
  });

  it('asks again, with a fresh link and state, when the user is still not connected on the retry', async () => {
    const urls: string[] = [];
    const carol = await connectClient('carol', async (params) => {
      urls.push(params.url);
      // The first time the user only looks; the second time they connect.
      if (urls.length === 2) await world.completeConnect(params.url, 'carol');
      return { action: 'accept' };
    });
    try {
      const result = await carol.callTool({ name: 'whoami_impatient', arguments: {} });
      expect(result.content).toEqual([{ type: 'text', text: 'provider sub: carol' }]);
      expect(urls).toHaveLength(2);
      expect(urls[1]).not.toBe(urls[0]);
    } finally {
      await carol.close();
    }
  });

  it.each([
    ['decline', 'consent_declined'],
    ['cancel', 'consent_cancelled'],
  ] as const)('ends the call with a tool error when the user answers %s', async (action, code) => {
    let asked = 0;
    const dave = await connectClient('dave', async () => {
      asked++;
      return { action };
    });
    try {
      const result = await dave.callTool({ name: 'whoami', arguments: {} });
      expect(errorCodeOf(result)).toBe(code);
      expect(textOf(result)).not.toMatch(/custos1\.|at .*\.ts:\d+/);
      expect(asked).toBe(1);
    } finally {
      await dave.close();
    }
  });

  it('gives a client that cannot open URL elicitations the link in a tool error', async () => {
    const erin = await connectClient('erin', undefined, { elicitation: { form: {} } });
    try {
      const result = await erin.callTool({ name: 'whoami', arguments: {} });
      expect(errorCodeOf(result)).toBe('consent_required');
      const link = /(http:\/\/127\.0\.0\.1:\d+\/connect\/\S+?)\s/.exec(textOf(result))?.[1];
      expect(link).toBeDefined();
      await world.completeConnect(link!, 'erin');
      expect((await erin.callTool({ name: 'whoami', arguments: {} })).content).toEqual([
        { type: 'text', text: 'provider sub: erin' },
      ]);
    } finally {
      await erin.close();
    }
  });
});

describe('@custos/sdk/mcp/v2 requestState', () => {
  let frank: Client;
  let grace: Client;

  beforeAll(async () => {
    frank = await connectClient('frank');
    grace = await connectClient('grace');
  });

  afterAll(async () => {
    await frank.close();
    await grace.close();
  });

  const accepted = { [CONSENT_INPUT_KEY]: { action: 'accept' } };

  async function firstLeg(client: Client, name = 'whoami', args: Record<string, unknown> = { detail: 'x' }) {
    return consentRequestOf(await manualCall(client, { name, arguments: args }));
  }

  it('is opaque to the client: it names neither the user, the tool nor the tenant', async () => {
    const { requestState } = await firstLeg(frank);
    expect(isCustosRequestState(requestState)).toBe(true);
    const body = Buffer.from(requestState.slice('custos1.'.length), 'base64url').toString('latin1');
    for (const clear of ['frank', 'whoami', world.tenant.tenantId, 'sessions'])
      expect(body).not.toContain(clear);
  });

  it('is accepted on the retry of the same call, whatever order the arguments come in', async () => {
    const args = { detail: 'x', tags: ['a', 'b'] };
    const { requestState } = await firstLeg(frank, 'whoami', args);
    const retry = await manualCall(frank, {
      name: 'whoami',
      arguments: { tags: ['a', 'b'], detail: 'x' },
      requestState,
      inputResponses: { [CONSENT_INPUT_KEY]: { action: 'cancel' } },
    });
    // Verified and bound to this call: the user's answer is read (and cancel ends the call).
    expect(errorCodeOf(retry)).toBe('consent_cancelled');
  });

  it('is refused when altered', async () => {
    const { requestState } = await firstLeg(frank);
    const i = Math.floor(requestState.length / 2);
    const flipped =
      requestState.slice(0, i) + (requestState[i] === 'A' ? 'B' : 'A') + requestState.slice(i + 1);
    for (const state of [
      flipped,
      requestState.slice(0, -4),
      `${requestState}AAAA`,
      'custos1.',
      'custos1.!!',
    ]) {
      const retry = await manualCall(frank, {
        name: 'whoami',
        arguments: { detail: 'x' },
        requestState: state,
        inputResponses: accepted,
      });
      expect(errorCodeOf(retry)).toBe('request_state_invalid');
      expect(textOf(retry as CallToolResult)).not.toContain(state);
    }
  });

  it('is refused when sealed with another key', async () => {
    // Another deployment's `whoami` (same tool name, same user, same arguments) minted it.
    const { requestState } = await firstLeg(frank, 'whoami_elsewhere');
    const retry = await manualCall(frank, {
      name: 'whoami',
      arguments: { detail: 'x' },
      requestState,
      inputResponses: accepted,
    });
    expect(errorCodeOf(retry)).toBe('request_state_invalid');
  });

  it('is refused when echoed by another user', async () => {
    const { requestState } = await firstLeg(frank);
    const retry = await manualCall(grace, {
      name: 'whoami',
      arguments: { detail: 'x' },
      requestState,
      inputResponses: accepted,
    });
    expect(errorCodeOf(retry)).toBe('request_state_user_mismatch');
    expect(textOf(retry as CallToolResult)).not.toContain('frank');
  });

  it('is refused on another tool or with other arguments', async () => {
    const { requestState } = await firstLeg(frank, 'whoami', { detail: 'x' });
    const elsewhere = [
      { name: 'whoami_too', arguments: { detail: 'x' } },
      { name: 'whoami', arguments: { detail: 'y' } },
      { name: 'whoami', arguments: {} },
      { name: 'whoami', arguments: { detail: 'x', tags: [] } },
    ];
    for (const call of elsewhere) {
      const retry = await manualCall(frank, { ...call, requestState, inputResponses: accepted });
      expect(errorCodeOf(retry)).toBe('request_state_call_mismatch');
    }
  });

  it('is refused once expired', async () => {
    const { requestState } = consentRequestOf(
      await manualCall(frank, { name: 'whoami_brief', arguments: {} }),
    );
    const expiry = Date.now() + 400;
    await eventually(() => Date.now() > expiry, 'the state to expire');
    const retry = await manualCall(frank, {
      name: 'whoami_brief',
      arguments: {},
      requestState,
      inputResponses: accepted,
    });
    expect(errorCodeOf(retry)).toBe('request_state_expired');
  });

  it('refuses a lifetime over ten minutes and a key under 32 bytes', () => {
    expect(() => consentWith({ stateTtlSeconds: 601 })).toThrow(RangeError);
    expect(() => consentWith({ stateTtlSeconds: 0 })).toThrow(RangeError);
    expect(() => consentWith({ key: 'too-short' })).toThrow(RangeError);
    expect(() => consentWith({ key: new Uint8Array(31) })).toThrow(RangeError);
    expect(() => consentWith({ key: new Uint8Array(32) })).not.toThrow();
  });

  it('without an answer to the elicitation, just asks again', async () => {
    const { requestState, url } = await firstLeg(frank);
    const again = consentRequestOf(
      await manualCall(frank, { name: 'whoami', arguments: { detail: 'x' }, requestState }),
    );
    expect(again.requestState).not.toBe(requestState);
    expect(again.url).not.toBe(url);
  });

  it('leaves a state that is not a Custos one to the tool (the call starts afresh)', async () => {
    const result = await manualCall(frank, {
      name: 'whoami',
      arguments: { detail: 'x' },
      requestState: 'someone-elses-state',
      inputResponses: accepted,
    });
    consentRequestOf(result);
    expect(skipCustosRequestState(() => 'decoded')('custos1.abc', {})).toBeUndefined();
    expect(skipCustosRequestState(() => 'decoded')('other', {})).toBe('decoded');
  });

  it('digests arguments canonically', () => {
    expect(argumentsDigest({ b: 1, a: [1, { d: 2, c: 3 }] })).toBe(
      argumentsDigest({ a: [1, { c: 3, d: 2 }], b: 1 }),
    );
    expect(argumentsDigest({ a: 1 })).not.toBe(argumentsDigest({ a: '1' }));
    expect(argumentsDigest(undefined)).toBe(argumentsDigest(null));
  });
});
