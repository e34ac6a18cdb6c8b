/**
 * The example MCP server (examples/mcp-server/) end to end, with the official clients of both protocol
 * versions: a user with no connection is sent to Custos's connect link (URL elicitation in 2025-11-25,
 * input_required in 2026-07-28), connects at the provider (oidc-provider, driven without a browser), and the
 * retried call returns what the provider says about that very user. A second user never sees the first
 * one's data; a revoked connection elicits again. And the server as an OAuth resource server: its metadata,
 * its 401 challenges, the audience check, sessions bound to their user, DNS-rebinding protection.
 */
import http from 'node:http';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitationCompleteNotificationSchema, McpError } from '@modelcontextprotocol/sdk/types.js';
import {
  Client as ClientV2,
  StreamableHTTPClientTransport as TransportV2,
  type ElicitRequestURLParams,
} from '@modelcontextprotocol/client';
import { CustosClient } from '@custos/sdk';
import { startExampleServer } from '../../examples/mcp-server/src/server.js';
import { createWhoami } from '../../examples/mcp-server/src/whoami.js';
import { newSigningKey } from '../support/idp.js';
import { PROVIDER, startMcpExampleWorld, type McpExampleWorld } from '../support/mcp-example.js';
import { freePort } from '../support/processes.js';

let world: McpExampleWorld;

beforeAll(async () => {
  world = await startMcpExampleWorld();
}, 60_000);

afterAll(async () => {
  await world?.close();
});

/** Polls `probe` until it gives a value, for at most `ms`. */
async function eventually<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The connect session a link or elicitation id belongs to, as the tenant's admin sees it. */
async function connectSession(id: string) {
  const res = await world.app.request('GET', `/v1/tenants/${world.tenant.tenantId}/connect/sessions/${id}`, {
    key: world.tenant.adminKey,
  });
  expect(res.status).toBe(200);
  return res.body as { userId: string; provider: string; scopes: string[]; status: string };
}

/** The provider's access tokens revoked so far (Custos tells the provider in the background on revocation). */
const revokedAccessTokens = () => world.op.revokedTokenTypes.filter((t) => t === 'access_token').length;

/** A raw POST to /mcp, for the requests a well-behaved client never sends. */
function post(body: unknown, headers: Record<string, string> = {}) {
  return fetch(world.mcpUrl, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...headers,
    },
    body: JSON.stringify(body),
  });
}

const initialize = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
};

describe('the example as an OAuth resource server', () => {
  it('publishes its protected-resource metadata, naming the identity provider, at both well-known paths', async () => {
    const base = new URL(world.mcpUrl).origin;
    for (const path of [
      '/.well-known/oauth-protected-resource/mcp',
      '/.well-known/oauth-protected-resource',
    ]) {
      const res = await fetch(base + path);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('application/json');
      expect(await res.json()).toEqual({
        resource: world.mcpUrl,
        authorization_servers: [world.idp.issuer],
        bearer_methods_supported: ['header'],
        resource_name: 'Custos example MCP server',
      });
    }
  });

  it('answers a request without a token with 401 and the metadata’s address', async () => {
    const res = await post(initialize);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe(
      `Bearer resource_metadata="${new URL(world.mcpUrl).origin}/.well-known/oauth-protected-resource/mcp"`,
    );
  });

  it('refuses, with 401 invalid_token, a token for another audience and every other bad token', async () => {
    const now = Math.floor(Date.now() / 1000);
    const stranger = await newSigningKey('stranger');
    const cases: [string, string][] = [
      ['another audience', await world.idp.token('alice', { aud: 'https://other.example/mcp' })],
      ['the audience Custos itself uses', await world.idp.token('alice', { aud: 'custos' })],
      ['expired', await world.idp.token('alice', { iat: now - 900, exp: now - 300 })],
      ['not yet valid', await world.idp.token('alice', { nbf: now + 600 })],
      ['another issuer', await world.idp.token('alice', { iss: 'https://evil.example' })],
      ['signed by another key', await world.idp.token('alice', {}, stranger)],
      ['not a JWT', 'not-a-jwt'],
    ];
    for (const [label, token] of cases) {
      const res = await post(initialize, { authorization: `Bearer ${token}` });
      expect({ label, status: res.status }).toEqual({ label, status: 401 });
      const challenge = res.headers.get('www-authenticate') ?? '';
      expect(challenge).toMatch(
        /^Bearer error="invalid_token", error_description="[^"]+", resource_metadata="/,
      );
    }
    // None of those reached Custos: the user's token goes to Custos only once this server accepted it.
    const denied = await world.app.custos.runtime.dataSource.query(
      `SELECT count(*)::int AS n FROM audit_events WHERE tenant_id = $1 AND action LIKE 'token.%'`,
      [world.tenant.tenantId],
    );
    expect(denied[0].n).toBe(0);
  });

  it('answers 503, not 401, while the identity provider’s keys cannot be had', async () => {
    // A second instance whose issuer does not answer: an outage must not read as a bad token.
    const dead = await freePort();
    const port = await freePort();
    const other = await startExampleServer(
      {
        CUSTOS_URL: world.custosUrl,
        CUSTOS_CLIENT_ID: world.connector.clientId,
        CUSTOS_CLIENT_SECRET: world.connector.clientSecret,
        MCP_PORT: String(port),
        MCP_PUBLIC_URL: `http://127.0.0.1:${port}`,
        MCP_AUTH_ISSUER: `http://127.0.0.1:${dead}`,
        MCP_AUTH_AUDIENCE: `http://127.0.0.1:${port}/mcp`,
        MCP_PROVIDER: PROVIDER,
        MCP_USERINFO_URL: world.op.endpoints.userinfo,
      },
      { log: () => undefined },
    );
    try {
      const send = (headers: Record<string, string>) =>
        fetch(`${other.url}/mcp`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
            ...headers,
          },
          body: JSON.stringify(initialize),
        });
      const withToken = await send({ authorization: `Bearer ${await world.userToken('alice')}` });
      expect(withToken.status).toBe(503);
      expect(withToken.headers.get('retry-after')).toBeTruthy();
      expect(withToken.headers.get('www-authenticate')).toBeNull();
      // Without a token the answer needs no keys: the usual challenge.
      expect((await send({})).status).toBe(401);
    } finally {
      await other.close();
    }
  });

  it('refuses a browser request from a foreign origin or for a foreign host (DNS rebinding)', async () => {
    const token = await world.userToken('alice');
    const origin = await post(initialize, {
      authorization: `Bearer ${token}`,
      origin: 'https://evil.example',
    });
    expect(origin.status).toBe(403);
    // fetch sets Host itself; node:http sends the one a rebinding page's browser would.
    const url = new URL(world.mcpUrl);
    const host = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          method: 'POST',
          headers: {
            authorization: `Bearer ${token}`,
            host: `evil.example:${url.port}`,
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
          },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.once('error', reject);
      req.end(JSON.stringify(initialize));
    });
    expect(host).toBe(403);
  });
});

/** A 2025-11-25 client (SDK 1.x) signed in as `sub`, that takes URL elicitations and records their completion. */
async function connectV1(sub: string) {
  const token = await world.userToken(sub);
  const client = new ClientV1(
    { name: `test-${sub}`, version: '1.0.0' },
    { capabilities: { elicitation: { url: {} } } },
  );
  const completed: string[] = [];
  client.setNotificationHandler(ElicitationCompleteNotificationSchema, (n) => {
    completed.push(n.params.elicitationId);
  });
  const transport = new TransportV1(new URL(world.mcpUrl), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return { client, transport, token, completed };
}

/** Calls whoami expecting the -32042 URL elicitation; gives the one elicitation it carries. */
async function expectElicitation(client: ClientV1): Promise<ElicitRequestURLParams> {
  const err = await client.callTool({ name: 'whoami', arguments: {} }).then(
    (result) => {
      throw new Error(`expected a URL elicitation, got ${JSON.stringify(result)}`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(McpError);
  expect((err as McpError).code).toBe(-32042);
  const elicitations = ((err as McpError).data as { elicitations: ElicitRequestURLParams[] }).elicitations;
  expect(elicitations).toHaveLength(1);
  expect(elicitations[0]).toMatchObject({
    mode: 'url',
    elicitationId: expect.any(String),
    url: expect.any(String),
  });
  return elicitations[0];
}

describe('protocol 2025-11-25 (SDK 1.x client, stateful session)', () => {
  const clients: ClientV1[] = [];
  afterAll(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
  });

  it('lists whoami', async () => {
    const { client } = await connectV1('alice');
    clients.push(client);
    expect(client.getServerVersion()).toMatchObject({ name: 'custos-example' });
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name)).toEqual(['whoami']);
    expect(tools[0].annotations).toMatchObject({ readOnlyHint: true });
  });

  it('elicits the connect link, announces its completion, and then answers as the user the provider saw', async () => {
    const { client, completed } = await connectV1('alice');
    clients.push(client);
    const elicitation = await expectElicitation(client);
    // The link is Custos's connect page, for alice and exactly the scopes whoami needs.
    expect(elicitation.url).toMatch(new RegExp(`^${world.custosUrl}/connect/cst_[A-Za-z0-9_-]{43}$`));
    expect(elicitation.message).toContain('Acme');
    expect(await connectSession(elicitation.elicitationId)).toMatchObject({
      userId: 'alice',
      provider: PROVIDER,
      scopes: ['openid', 'profile'],
      status: 'pending',
    });

    await world.completeConnect(elicitation.url, 'acme-alice');
    await eventually('notifications/elicitation/complete', () =>
      completed.includes(elicitation.elicitationId) ? true : undefined,
    );

    const result = await client.callTool({ name: 'whoami', arguments: {} });
    expect(result.isError).toBeFalsy();
    // The provider's own account id: what its userinfo endpoint said about the token Custos released.
    expect(result.structuredContent).toEqual({ sub: 'acme-alice', name: 'Alice Liddell' });
    expect(JSON.parse((result.content as { text: string }[])[0].text)).toEqual(result.structuredContent);
  });

  it('gives a second user their own elicitation, never the first user’s data', async () => {
    const { client, completed } = await connectV1('bob');
    clients.push(client);
    const elicitation = await expectElicitation(client);
    expect(await connectSession(elicitation.elicitationId)).toMatchObject({
      userId: 'bob',
      status: 'pending',
    });
    expect(completed).toEqual([]);
    // Bob connects his own account; he is answered with it, and alice's session is unaffected.
    await world.completeConnect(elicitation.url, 'acme-bob');
    await eventually('bob’s completion', () => (completed.length > 0 ? true : undefined));
    const bob = await client.callTool({ name: 'whoami', arguments: {} });
    expect(bob.structuredContent).toEqual({ sub: 'acme-bob', name: 'Bob Builder' });
    const alice = await connectV1('alice');
    clients.push(alice.client);
    expect((await alice.client.callTool({ name: 'whoami', arguments: {} })).structuredContent).toMatchObject({
      sub: 'acme-alice',
    });
  });

  it('gives a client without URL elicitation the link in a tool error instead', async () => {
    const token = await world.userToken('erin');
    const client = new ClientV1({ name: 'no-url-elicitation', version: '1.0.0' }, { capabilities: {} });
    clients.push(client);
    await client.connect(
      new TransportV1(new URL(world.mcpUrl), {
        requestInit: { headers: { authorization: `Bearer ${token}` } },
      }),
    );
    const result = await client.callTool({ name: 'whoami', arguments: {} });
    expect(result.isError).toBe(true);
    expect(result._meta).toMatchObject({ 'custos/error': 'consent_required' });
    const text = (result.content as { text: string }[])[0].text;
    const link = new RegExp(`${world.custosUrl}/connect/cst_[A-Za-z0-9_-]{43}`).exec(text)?.[0];
    expect(link).toBeDefined();
  });

  it('refuses a session id presented with another user’s token', async () => {
    const alice = await connectV1('alice');
    clients.push(alice.client);
    const sessionId = alice.transport.sessionId!;
    expect(sessionId).toBeTruthy();
    const list = { jsonrpc: '2.0', id: 7, method: 'tools/list', params: {} };
    const headers = (token: string) => ({
      authorization: `Bearer ${token}`,
      'mcp-session-id': sessionId,
      'mcp-protocol-version': '2025-11-25',
    });
    const asBob = await post(list, headers(await world.userToken('bob')));
    expect(asBob.status).toBe(404);
    expect(await asBob.json()).toMatchObject({ error: { message: 'Session not found' } });
    // The same request with alice's own token is served: the refusal was about the user, nothing else.
    const asAlice = await post(list, headers(alice.token));
    expect(asAlice.status).toBe(200);
    expect(await asAlice.text()).toContain('whoami');
  });

  it('keeps at most 16 sessions per user, closing their least recently used one', async () => {
    const token = await world.userToken('frank');
    const open = async () => {
      const res = await post(initialize, { authorization: `Bearer ${token}` });
      expect(res.status).toBe(200);
      await res.body?.cancel();
      return res.headers.get('mcp-session-id')!;
    };
    const ids: string[] = [];
    for (let i = 0; i < 17; i++) ids.push(await open());
    const ping = (id: string) =>
      post(
        { jsonrpc: '2.0', id: 2, method: 'ping' },
        { authorization: `Bearer ${token}`, 'mcp-session-id': id, 'mcp-protocol-version': '2025-11-25' },
      ).then((r) => r.status);
    expect(await ping(ids[0])).toBe(404);
    expect(await ping(ids[1])).toBe(200);
    expect(await ping(ids[16])).toBe(200);
  });

  it('elicits again once the connection is revoked', async () => {
    const { client } = await connectV1('alice');
    clients.push(client);
    expect((await client.callTool({ name: 'whoami', arguments: {} })).structuredContent).toMatchObject({
      sub: 'acme-alice',
    });
    const before = revokedAccessTokens();
    await world.revoke('alice');
    // Custos tells the provider in the background; the example's cached token dies with it there.
    await eventually('revocation at the provider', () => (revokedAccessTokens() > before ? true : undefined));
    const elicitation = await expectElicitation(client);
    expect(await connectSession(elicitation.elicitationId)).toMatchObject({
      userId: 'alice',
      status: 'pending',
    });
  });
});

/**
 * A 2026-07-28 client (SDK 2.x) signed in as `sub`. Its elicitation handler is the user: it gets the URL
 * elicitation embedded in input_required, and `onUrl` decides what the user does with the link.
 */
async function connectV2(
  sub: string,
  onUrl: (params: ElicitRequestURLParams) => Promise<'accept' | 'decline'>,
) {
  const token = await world.userToken(sub);
  const client = new ClientV2(
    { name: `test-${sub}`, version: '1.0.0' },
    { capabilities: { elicitation: { url: {} } }, versionNegotiation: { mode: { pin: '2026-07-28' } } },
  );
  const elicited: ElicitRequestURLParams[] = [];
  client.setRequestHandler('elicitation/create', async (request) => {
    const params = request.params as ElicitRequestURLParams;
    if (params.mode !== 'url') throw new Error(`unexpected elicitation mode ${String(params.mode)}`);
    elicited.push(params);
    return { action: await onUrl(params) };
  });
  const transport = new TransportV2(new URL(world.mcpUrl), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return { client, elicited, token };
}

/** The connect session behind a connect link (the 2026-07-28 elicitation carries no session id). */
async function sessionOfLink(url: string) {
  const rows = await world.app.custos.runtime.dataSource.query(
    `SELECT user_id, status FROM connect_sessions WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 1`,
    [world.tenant.tenantId],
  );
  expect(url).toMatch(new RegExp(`^${world.custosUrl}/connect/cst_`));
  return rows[0] as { user_id: string; status: string };
}

describe('protocol 2026-07-28 (SDK 2.x client, stateless)', () => {
  const clients: ClientV2[] = [];
  afterAll(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
  });

  it('lists whoami over the modern protocol', async () => {
    const { client } = await connectV2('carol', async () => 'decline');
    clients.push(client);
    expect(client.getNegotiatedProtocolVersion()).toBe('2026-07-28');
    expect(client.getProtocolEra()).toBe('modern');
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name)).toEqual(['whoami']);
  });

  it('answers input_required with the connect link, and the retried call as the user the provider saw', async () => {
    const { client, elicited } = await connectV2('carol', async (params) => {
      // The user opens the link and connects, then the client retries with the state it was given.
      await world.completeConnect(params.url, 'acme-carol');
      return 'accept';
    });
    clients.push(client);
    const result = await client.callTool({ name: 'whoami', arguments: {} });
    expect(elicited).toHaveLength(1);
    expect(elicited[0].message).toContain('Acme');
    expect(result.isError).toBeFalsy();
    expect(result.structuredContent).toEqual({ sub: 'acme-carol', name: 'Carol Danvers' });
    // A second call needs no consent.
    expect((await client.callTool({ name: 'whoami', arguments: {} })).structuredContent).toMatchObject({
      sub: 'acme-carol',
    });
    expect(elicited).toHaveLength(1);
  });

  it('gives a second user their own link; declining it ends the call with a tool error and no data', async () => {
    const { client, elicited } = await connectV2('dave', async () => 'decline');
    clients.push(client);
    const result = await client.callTool({ name: 'whoami', arguments: {} });
    expect(elicited).toHaveLength(1);
    expect(await sessionOfLink(elicited[0].url)).toEqual({ user_id: 'dave', status: 'pending' });
    expect(result.isError).toBe(true);
    expect(result._meta).toMatchObject({ 'custos/error': 'consent_declined' });
    expect(JSON.stringify(result)).not.toContain('acme-carol');
  });

  it('asks again once the connection is revoked', async () => {
    let reconnect = false;
    const { client, elicited } = await connectV2('carol', async (params) => {
      if (!reconnect) return 'decline';
      await world.completeConnect(params.url, 'acme-carol');
      return 'accept';
    });
    clients.push(client);
    expect((await client.callTool({ name: 'whoami', arguments: {} })).structuredContent).toMatchObject({
      sub: 'acme-carol',
    });
    expect(elicited).toHaveLength(0);
    const before = revokedAccessTokens();
    await world.revoke('carol');
    await eventually('revocation at the provider', () => (revokedAccessTokens() > before ? true : undefined));
    const declined = await client.callTool({ name: 'whoami', arguments: {} });
    expect(elicited).toHaveLength(1);
    expect(declined._meta).toMatchObject({ 'custos/error': 'consent_declined' });
    reconnect = true;
    const again = await client.callTool({ name: 'whoami', arguments: {} });
    expect(elicited).toHaveLength(2);
    expect(again.structuredContent).toMatchObject({ sub: 'acme-carol' });
  });
  it('refuses a requestState replayed by another user, or altered, without calling Custos for them', async () => {
    // Manual mode: the input_required result comes back to the test instead of being fulfilled.
    const eve = await connectV2('eve', async () => 'decline');
    const mallory = await connectV2('mallory', async () => 'decline');
    clients.push(eve.client, mallory.client);
    const first = (await eve.client.callTool(
      { name: 'whoami', arguments: {} },
      { allowInputRequired: true },
    )) as unknown as {
      resultType: string;
      requestState: string;
      inputRequests: Record<string, { method: string; params: ElicitRequestURLParams }>;
    };
    expect(first.resultType).toBe('input_required');
    expect(Object.values(first.inputRequests)[0]).toMatchObject({
      method: 'elicitation/create',
      params: { mode: 'url' },
    });
    const retry = (client: ClientV2, requestState: string) =>
      client.callTool({
        name: 'whoami',
        arguments: {},
        inputResponses: Object.fromEntries(
          Object.keys(first.inputRequests).map((k) => [k, { action: 'accept' }]),
        ),
        requestState,
      } as Parameters<ClientV2['callTool']>[0]);
    const exchanges = () =>
      world.app.custos.runtime.dataSource
        .query(
          `SELECT count(*)::int AS n FROM audit_events WHERE tenant_id = $1 AND action = 'token.exchange'`,
          [world.tenant.tenantId],
        )
        .then((rows: { n: number }[]) => rows[0].n);
    const before = await exchanges();

    const replayed = await retry(mallory.client, first.requestState);
    expect(replayed.isError).toBe(true);
    expect(replayed._meta).toMatchObject({ 'custos/error': 'request_state_user_mismatch' });

    // One character changed well inside the sealed part (the last one may only hold padding bits).
    const at = Math.floor(first.requestState.length / 2);
    const swapped = first.requestState[at] === 'A' ? 'B' : 'A';
    const altered = await retry(
      eve.client,
      first.requestState.slice(0, at) + swapped + first.requestState.slice(at + 1),
    );
    expect(altered._meta).toMatchObject({ 'custos/error': 'request_state_invalid' });
    expect(JSON.stringify([replayed, altered])).not.toContain(first.requestState);
    expect(await exchanges()).toBe(before);
  });
});

describe('logs', () => {
  it('write one line per request, and never a token or a secret', async () => {
    const text = JSON.stringify(world.mcpLogs);
    expect(world.mcpLogs.filter((l) => l.msg === 'request').length).toBeGreaterThan(10);
    // Apart from the start-up line, nothing but the request lines: no stack traces, no per-call chatter.
    expect(world.mcpLogs.filter((l) => l.msg !== 'request').map((l) => l.msg)).toEqual([
      'MCP server listening',
    ]);
    expect(text).not.toContain(world.connector.clientSecret);
    expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\./);
    expect(text).not.toContain('cst_');
    expect(
      world.mcpLogs.filter((l) => l.msg === 'request' && l.protocol === '2026-07-28').length,
    ).toBeGreaterThan(0);
    expect(
      world.mcpLogs.filter((l) => l.msg === 'request' && l.protocol === '2025-11-25').length,
    ).toBeGreaterThan(0);
  });
});

describe('bad input that reaches Custos', () => {
  it('answers whoami for a provider Custos does not know, or one the connector may not use, with a clear tool error', async () => {
    const custos = new CustosClient({
      url: world.custosUrl,
      clientId: world.connector.clientId,
      clientSecret: world.connector.clientSecret,
    });
    const token = await world.userToken('alice');
    const user = { subject: 'alice', token, expiresAt: 0, scopes: [], clientId: 'test' };
    for (const provider of ['nonesuch', 'github']) {
      const whoami = createWhoami(custos, { ...world.mcp.config, provider });
      const result = await whoami(user);
      expect(result.isError).toBe(true);
      expect(result.content[0].text).toBe(
        'This server may not use the provider or scopes it asked for (invalid_target).',
      );
      expect(JSON.stringify(result)).not.toContain(token);
    }
    // Custos refused both and said why in the trail, without a link or a token.
    const reasons = await world.app.custos.runtime.dataSource.query(
      `SELECT details->>'reason' AS reason FROM audit_events
        WHERE tenant_id = $1 AND action = 'token.exchange' AND outcome = 'denied' ORDER BY id DESC LIMIT 2`,
      [world.tenant.tenantId],
    );
    expect(reasons.map((r: { reason: string }) => r.reason).sort()).toEqual([
      'provider_not_allowed',
      'unknown_provider',
    ]);
  });
});
