/**
 * The world the example MCP server (examples/mcp-server/) runs in, for its end-to-end tests: a real Custos
 * listening on loopback, oidc-provider as the third-party provider (its userinfo endpoint is what `whoami`
 * calls), an identity provider that issues the users' JWTs for the MCP server's audience and publishes
 * OpenID Connect discovery, a tenant that trusts that identity provider, its app at the provider and a connector
 * allowed that provider; and the example server itself, in-process.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JWTPayload } from 'jose';
import {
  startExampleServer,
  type ExampleServer,
  type LogEntry,
} from '../../examples/mcp-server/src/server.js';
import { startTestApp, type TestApp } from './app.js';
import { cookieJar, localPath } from './browser.js';
import {
  createConnector,
  createTenant,
  saveOidcProvider,
  trustIdentityProvider,
  type SecretConnector,
  type TenantFixture,
} from './factories.js';
import { newSigningKey, signJwt, type SigningKey } from './idp.js';
import { startOAuthProvider, type TestOAuthProvider } from './oauth-provider.js';
import { freePort } from './processes.js';

/** A user-token issuer as a real authorization server publishes itself: discovery document and JWK Set. */
export interface DiscoverableIdp {
  /** `http://127.0.0.1:<port>`, no trailing slash, exactly as in its tokens and its discovery document. */
  issuer: string;
  jwksUri: string;
  hostPort: string;
  key: SigningKey;
  /** Requests for the discovery document. */
  discoveryFetches: number;
  /** A user token for `audience` (default: the one it was started with); `claims` override the defaults. */
  token(sub: string, claims?: JWTPayload, key?: SigningKey): Promise<string>;
  close(): Promise<void>;
}

export async function startDiscoverableIdp(audience: string): Promise<DiscoverableIdp> {
  const key = await newSigningKey('mcp-idp-es256');
  const idp = { key, discoveryFetches: 0 } as DiscoverableIdp;
  const server = http.createServer((req, res) => {
    const json = (body: unknown) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    if (req.url === '/.well-known/openid-configuration') {
      idp.discoveryFetches++;
      json({
        issuer: idp.issuer,
        jwks_uri: idp.jwksUri,
        authorization_endpoint: `${idp.issuer}/authorize`,
        token_endpoint: `${idp.issuer}/token`,
        response_types_supported: ['code'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: ['ES256'],
      });
    } else if (req.url === '/jwks') {
      json({ keys: [key.publicJwk] });
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  idp.hostPort = `127.0.0.1:${port}`;
  idp.issuer = `http://${idp.hostPort}`;
  idp.jwksUri = `${idp.issuer}/jwks`;
  idp.token = (sub, claims = {}, signWith = key) => {
    const now = Math.floor(Date.now() / 1000);
    return signJwt(signWith, { iss: idp.issuer, aud: audience, sub, iat: now, exp: now + 600, ...claims });
  };
  idp.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return idp;
}

/** The provider key the tenant's custom provider has in Custos. */
export const PROVIDER = 'acme';
const PROVIDER_APP = { client_id: 'custos-acme', client_secret: `acme-secret-${Date.now()}` };

export interface McpExampleWorld {
  app: TestApp;
  /** Where Custos listens, also its CUSTOS_PUBLIC_URL: connect links and session URIs point here. */
  custosUrl: string;
  op: TestOAuthProvider;
  idp: DiscoverableIdp;
  tenant: TenantFixture;
  connector: SecretConnector;
  /** The example server, in-process. */
  mcp: ExampleServer;
  /** `${mcp.url}/mcp` (also the token audience and the resource in the metadata). */
  mcpUrl: string;
  /** The example server's log lines. */
  mcpLogs: LogEntry[];
  /** A user token from the identity provider, for the MCP server. */
  userToken(sub: string, claims?: JWTPayload): Promise<string>;
  /**
   * Follows a connect link as `account` would in a browser: opens the page, presses the button, signs in at
   * the provider and consents, and comes back to Custos, which stores the connection.
   */
  completeConnect(connectUri: string, account: string): Promise<void>;
  /** The user's live connection to the provider, if any. */
  connectionOf(user: string): Promise<{ id: string } | undefined>;
  /** Revokes the user's connection through the admin API (DELETE /v1/tenants/:id/connections/:id). */
  revoke(user: string): Promise<void>;
  close(): Promise<void>;
}

/** Starts everything; `mcpEnv` overrides the example's environment. */
export async function startMcpExampleWorld(mcpEnv: Record<string, string> = {}): Promise<McpExampleWorld> {
  const custosPort = await freePort();
  const custosUrl = `http://127.0.0.1:${custosPort}`;
  const mcpPort = await freePort();
  const mcpBase = `http://127.0.0.1:${mcpPort}`;
  const mcpUrl = `${mcpBase}/mcp`;

  const op = await startOAuthProvider({
    clients: [{ ...PROVIDER_APP, redirect_uris: [`${custosUrl}/connect/callback/${PROVIDER}`] }],
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    // The provider's own account ids differ from the users' ids at the identity provider, so a test can tell
    // which side an answer came from.
    users: {
      'acme-alice': { name: 'Alice Liddell' },
      'acme-bob': { name: 'Bob Builder' },
      'acme-carol': { name: 'Carol Danvers' },
      'acme-dave': { name: 'Dave Lister' },
    },
  });
  const idp = await startDiscoverableIdp(mcpUrl);
  const app = await startTestApp({
    CUSTOS_PUBLIC_URL: custosUrl,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `${op.hostPort},${idp.hostPort}`,
  });
  const closers: (() => Promise<unknown>)[] = [() => op.close(), () => idp.close(), () => app.close()];
  try {
    await app.custos.app.getHttpAdapter().getInstance().listen({ port: custosPort, host: '127.0.0.1' });
    const tenant = await createTenant(app);
    await saveOidcProvider(app, tenant, PROVIDER, op, PROVIDER_APP, 'Acme');
    // The users' tokens are for the MCP server, not for Custos: the tenant trusts them for that audience.
    await trustIdentityProvider(app, tenant, idp, { audiences: [mcpUrl], algorithms: ['ES256'] });
    const connector = await createConnector(app, tenant, {
      name: 'example-mcp-server',
      allowedProviders: [PROVIDER],
      allowedScopes: { [PROVIDER]: ['openid', 'profile'] },
      delegation: 'user_token',
    });

    const mcpLogs: LogEntry[] = [];
    const mcp = await startExampleServer(
      {
        CUSTOS_URL: custosUrl,
        CUSTOS_CLIENT_ID: connector.clientId,
        CUSTOS_CLIENT_SECRET: connector.clientSecret,
        MCP_PORT: String(mcpPort),
        MCP_PUBLIC_URL: mcpBase,
        MCP_AUTH_ISSUER: idp.issuer,
        MCP_AUTH_AUDIENCE: mcpUrl,
        MCP_PROVIDER: PROVIDER,
        MCP_PROVIDER_NAME: 'Acme',
        MCP_USERINFO_URL: op.endpoints.userinfo,
        MCP_STATE_KEY: `state-key-${'x'.repeat(40)}`,
        ...mcpEnv,
      },
      { log: (entry) => mcpLogs.push(entry) },
    );
    closers.unshift(() => mcp.close());

    const connectionOf = async (user: string) => {
      const res = await app.request(
        'GET',
        `/v1/tenants/${tenant.tenantId}/users/${encodeURIComponent(user)}/connections`,
        { key: tenant.adminKey },
      );
      if (res.status !== 200) throw new Error(`connections of ${user}: ${res.status} ${res.raw}`);
      const items = res.body.items as { id: string; provider: string; status: string }[];
      return items.find((c) => c.provider === PROVIDER && c.status !== 'revoked');
    };

    return {
      app,
      custosUrl,
      op,
      idp,
      tenant,
      connector,
      mcp,
      mcpUrl,
      mcpLogs,
      userToken: (sub, claims) => idp.token(sub, claims),
      async completeConnect(connectUri, account) {
        const jar = cookieJar();
        const page = await app.request('GET', localPath(connectUri, custosUrl));
        if (page.status !== 200) throw new Error(`connect page: ${page.status} ${page.raw.slice(0, 300)}`);
        jar.take(page.headers['set-cookie']);
        const csrf = /name="csrf" value="([^"]+)"/.exec(page.raw)?.[1];
        if (!csrf) throw new Error('connect page: no CSRF field');
        const start = await app.request('POST', `${localPath(connectUri, custosUrl)}/start`, {
          payload: `csrf=${csrf}`,
          headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
        });
        if (start.status !== 303)
          throw new Error(`connect start: ${start.status} ${start.raw.slice(0, 300)}`);
        jar.take(start.headers['set-cookie']);
        const { redirectedTo } = await op.authorize(String(start.headers.location), { account });
        const done = await app.request('GET', localPath(redirectedTo, custosUrl), {
          headers: { cookie: jar.header() },
        });
        if (done.status !== 200 || !done.raw.includes('is connected')) {
          throw new Error(`connect callback: ${done.status} ${done.raw.slice(0, 300)}`);
        }
      },
      connectionOf,
      async revoke(user) {
        const connection = await connectionOf(user);
        if (!connection) throw new Error(`${user} has no connection to revoke`);
        const res = await app.request(
          'DELETE',
          `/v1/tenants/${tenant.tenantId}/connections/${connection.id}`,
          { key: tenant.adminKey },
        );
        if (res.status !== 204) throw new Error(`revoke: ${res.status} ${res.raw}`);
      },
      async close() {
        for (const close of closers) await close().catch(() => undefined);
      },
    };
  } catch (err) {
    for (const close of closers) await close().catch(() => undefined);
    throw err;
  }
}
