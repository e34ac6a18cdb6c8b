/**
 * What the MCP helper tests (mcp-v1, mcp-v2) run against: a real Custos listening on loopback (also its public
 * URL, so connect links and session URIs point at it), oidc-provider as the third-party provider `acme`, a
 * tenant with its app there and a trusted connector (it asserts user ids), a CustosClient for that connector,
 * and a browserless driver for the connect flow.
 */
import { CustosClient } from '@custos/sdk';
import { startTestApp, type TestApp } from '../support/app.js';
import { cookieJar, localPath } from '../support/browser.js';
import {
  createConnector,
  createTenant,
  saveOidcProvider,
  type SecretConnector,
  type TenantFixture,
} from '../support/factories.js';
import { startOAuthProvider, type TestOAuthProvider } from '../support/oauth-provider.js';
import { freePort } from '../support/processes.js';

export const PROVIDER = 'acme';
const PROVIDER_APP = { client_id: 'custos-acme', client_secret: `acme-secret-${Date.now()}` };

export interface McpCustos {
  app: TestApp;
  custosUrl: string;
  op: TestOAuthProvider;
  tenant: TenantFixture;
  connector: SecretConnector;
  custos: CustosClient;
  /** Follows a connect link as `account` would in a browser, up to "is connected". */
  completeConnect(connectUri: string, account: string): Promise<void>;
  /** What the provider's userinfo endpoint says about the holder of `accessToken`. */
  userinfo(accessToken: string): Promise<{ sub: string }>;
  close(): Promise<void>;
}

export async function startMcpCustos(): Promise<McpCustos> {
  const port = await freePort();
  const custosUrl = `http://127.0.0.1:${port}`;
  const op = await startOAuthProvider({
    clients: [{ ...PROVIDER_APP, redirect_uris: [`${custosUrl}/connect/callback/${PROVIDER}`] }],
    scopes: ['openid', 'profile', 'email', 'offline_access'],
  });
  const app = await startTestApp({ CUSTOS_PUBLIC_URL: custosUrl, CUSTOS_OUTBOUND_ALLOW_HOSTS: op.hostPort });
  try {
    await app.custos.app.getHttpAdapter().getInstance().listen({ port, host: '127.0.0.1' });
    const tenant = await createTenant(app);
    await saveOidcProvider(app, tenant, PROVIDER, op, PROVIDER_APP, 'Acme');
    const connector = await createConnector(app, tenant, {
      name: 'mcp-helpers',
      allowedProviders: [PROVIDER],
    });
    const custos = new CustosClient({
      url: custosUrl,
      clientId: connector.clientId,
      clientSecret: connector.clientSecret,
    });
    return {
      app,
      custosUrl,
      op,
      tenant,
      connector,
      custos,
      async completeConnect(connectUri, account) {
        const jar = cookieJar();
        const page = await app.request('GET', localPath(connectUri, custosUrl));
        if (page.status !== 200) throw new Error(`connect page: ${page.status}`);
        jar.take(page.headers['set-cookie']);
        const csrf = /name="csrf" value="([^"]+)"/.exec(page.raw)?.[1];
        if (!csrf) throw new Error('connect page: no CSRF field');
        const start = await app.request('POST', `${localPath(connectUri, custosUrl)}/start`, {
          payload: `csrf=${csrf}`,
          headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
        });
        if (start.status !== 303) throw new Error(`connect start: ${start.status}`);
        jar.take(start.headers['set-cookie']);
        const { redirectedTo } = await op.authorize(String(start.headers.location), { account });
        const done = await app.request('GET', localPath(redirectedTo, custosUrl), {
          headers: { cookie: jar.header() },
        });
        if (done.status !== 200 || !done.raw.includes('is connected')) {
          throw new Error(`connect callback: ${done.status}`);
        }
      },
      async userinfo(accessToken) {
        const res = await fetch(op.endpoints.userinfo, {
          headers: { authorization: `Bearer ${accessToken}` },
        });
        if (res.status !== 200) throw new Error(`userinfo: ${res.status}`);
        return (await res.json()) as { sub: string };
      },
      async close() {
        await app.close();
        await op.close();
      },
    };
  } catch (err) {
    await app.close();
    await op.close();
    throw err;
  }
}

/** Resolves once `predicate` holds, checking every 20 ms; fails after `ms`. */
export async function eventually(predicate: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
