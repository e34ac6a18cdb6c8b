/**
 * A person connects an OAuth account and an API-key account through the hosted pages in a real browser
 * (Debian's Chromium, driven by playwright-core), against oidc-provider on loopback; then the token
 * endpoint returns that user's token. Screenshots of the page are saved when a step fails.
 *
 * Chromium comes from Debian (`apt-get install -y chromium`, done by .ci/run). Without it this file is
 * skipped with a message, except under CI (CI=true), where a missing browser fails the run.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startTestApp, type TestApp } from '../support/app.js';
import {
  basicAuth,
  createConnector,
  createTenant,
  saveCustomProvider,
  saveProviderApp,
  type SecretConnector,
  type TenantFixture,
} from '../support/factories.js';
import { startOAuthProvider, type TestOAuthProvider } from '../support/oauth-provider.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const available = fs.existsSync(CHROMIUM);
if (!available && process.env.CI === 'true') {
  throw new Error(
    `Chromium is required in CI: ${CHROMIUM} not found (install it with apt-get install -y chromium)`,
  );
}
if (!available) {
  process.stderr.write(`browser tests skipped: ${CHROMIUM} not found (apt-get install -y chromium)\n`);
}
const describeBrowser = available ? describe : describe.skip;

async function freePort(): Promise<number> {
  const srv = http.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

describeBrowser('hosted connect pages in Chromium', () => {
  let app: TestApp;
  let op: TestOAuthProvider;
  let keyServer: http.Server;
  let browser: Browser;
  let t: TenantFixture;
  let publicUrl: string;
  let connector: SecretConnector;

  /** Runs a step; on failure keeps a screenshot of the page and says where. */
  async function step(page: Page, name: string, run: () => Promise<void>) {
    try {
      await run();
    } catch (err) {
      const file = path.join(os.tmpdir(), `custos-browser-${name}-${Date.now()}.png`);
      await page.screenshot({ path: file, fullPage: true }).catch(() => undefined);
      throw new Error(`${name} failed (screenshot: ${file}): ${(err as Error).message}`, { cause: err });
    }
  }

  const exchange = (user: string, provider: string) =>
    app.request('POST', '/oauth/token', {
      payload: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: user,
        subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
        audience: provider,
      }).toString(),
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: basicAuth(connector),
      },
    });

  beforeAll(async () => {
    const port = await freePort();
    publicUrl = `http://127.0.0.1:${port}`;
    const client = { client_id: 'browser-app', client_secret: 'browser-secret-' + Date.now() };
    op = await startOAuthProvider({
      clients: [{ ...client, redirect_uris: [`${publicUrl}/connect/callback/inhouse`] }],
      users: { alice: { email: 'alice@example.com' } },
    });
    keyServer = http.createServer((req, res) => {
      res.writeHead(req.headers.authorization === 'Bearer browser-key-42' ? 200 : 401).end('{}');
    });
    await new Promise<void>((r) => keyServer.listen(0, '127.0.0.1', r));
    const keyHost = `127.0.0.1:${(keyServer.address() as AddressInfo).port}`;
    app = await startTestApp({
      HOST: '127.0.0.1',
      PORT: String(port),
      CUSTOS_PUBLIC_URL: publicUrl,
      CUSTOS_OUTBOUND_ALLOW_HOSTS: `${op.hostPort},${keyHost}`,
    });
    await app.custos.app.listen({ port, host: '127.0.0.1' });
    t = await createTenant(app);
    await saveCustomProvider(app, t, {
      key: 'inhouse',
      name: 'In-house Git',
      authMode: 'oauth2',
      oauth2: {
        authorizationUrl: op.endpoints.authorization,
        tokenUrl: op.endpoints.token,
        issuer: op.issuer,
        jwksUri: op.endpoints.jwks,
        scopes: ['openid', 'offline_access', 'repo'],
      },
    });
    await saveCustomProvider(app, t, {
      key: 'inhouse-keys',
      name: 'In-house API',
      authMode: 'api_key',
      apiKey: { verify: { url: `http://${keyHost}/me` } },
    });
    await saveProviderApp(app, t, 'inhouse', client);
    connector = await createConnector(app, t, {
      name: 'browser test',
      allowedProviders: ['inhouse', 'inhouse-keys'],
    });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await app?.close();
    await op?.close();
    await new Promise((r) => keyServer?.close(r));
  });

  async function sessionUrl(userId: string, provider: string): Promise<string> {
    const res = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
      key: t.adminKey,
      body: { userId, provider },
    });
    return res.body.url as string;
  }

  it('connects an OAuth account by clicking through the provider’s sign-in and consent', async () => {
    const page = await browser.newPage();
    const url = await sessionUrl('alice', 'inhouse');
    await step(page, 'oauth', async () => {
      await page.goto(url);
      await page.getByRole('heading', { name: 'Connect your In-house Git account' }).waitFor();
      await page.getByRole('button', { name: 'Continue to In-house Git' }).click();
      await page.locator('input[name="account"]').fill('alice');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByRole('button', { name: 'Allow' }).click();
      await page.getByText('is connected').waitFor();
    });
    await page.close();
    const released = await exchange('alice', 'inhouse');
    expect(released.status).toBe(200);
    expect(released.body.access_token).toEqual(expect.any(String));
    // The verified ID token's sub, as the provider account id.
    const [row] = await app.custos.runtime.dataSource.query(
      `SELECT external_account_id FROM connections
        WHERE tenant_id = $1 AND user_id = 'alice' AND provider = 'inhouse' AND revoked_at IS NULL`,
      [t.tenantId],
    );
    expect(row.external_account_id).toBe('alice');
  }, 60_000);

  it('shows a page, not JSON, when the address is refused', async () => {
    const page = await browser.newPage();
    await step(page, 'refused-page', async () => {
      const res = await page.goto(`${publicUrl}/connect/callback/inhouse?state=a%00b&code=x`);
      expect(res?.status()).toBe(400);
      await page.getByRole('heading', { name: 'Request not understood' }).waitFor();
      await page.getByText('Start again from your link').waitFor();
    });
    await page.close();
  }, 60_000);

  it('connects an API key through the form, after a wrong one is refused', async () => {
    const page = await browser.newPage();
    const url = await sessionUrl('bob', 'inhouse-keys');
    await step(page, 'api-key', async () => {
      await page.goto(url);
      await page.getByLabel('Your In-house API API key').fill('not-the-key');
      await page.getByRole('button', { name: 'Connect' }).click();
      await page.getByText('did not accept this key').waitFor();
      await page.goto(url);
      await page.getByLabel('Your In-house API API key').fill('browser-key-42');
      await page.getByRole('button', { name: 'Connect' }).click();
      await page.getByText('is connected').waitFor();
    });
    await page.close();
    expect((await exchange('bob', 'inhouse-keys')).body.access_token).toBe('browser-key-42');
  }, 60_000);
});
