/**
 * A person connects an OAuth account and an API-key account through the hosted pages in a real browser
 * (Debian's Chromium, driven by playwright-core), against oidc-provider on loopback; then the token
 * endpoint returns that user's token. A tenant's branded page is checked by its screenshots: the button in
 * the tenant's colour, the logo drawn (served by Custos, allowed by the page's CSP). Screenshots of the page
 * are saved when a step fails.
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
import { CHROMIUM, describeBrowser, near } from '../support/browser.js';
import { freePort } from '../support/processes.js';
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
import { png, readPng } from '../integration/connect/hosted-pages-images.js';

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
      users: { alice: { email: 'alice@example.com' }, carol: {} },
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
      scopeDescriptions: { repo: 'Read and write your repositories' },
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

  /** The colour of the middle of an element's screenshot, as [r, g, b]; the screenshot is kept for people. */
  async function colourOf(
    page: Page,
    selector: string,
    name: string,
    at?: (w: number, h: number) => [number, number],
  ) {
    const shot = await page.locator(selector).first().screenshot();
    fs.writeFileSync(path.join(os.tmpdir(), `custos-browser-${name}.png`), shot);
    const image = readPng(shot);
    const [x, y] = at ? at(image.width, image.height) : [image.width >> 1, image.height >> 1];
    return image.pixel(x, y);
  }

  it('shows the tenant’s name, colour and logo, and a declined attempt’s "Try again" in them', async () => {
    const patched = await app.request('PATCH', `/v1/tenants/${t.tenantId}`, {
      key: t.adminKey,
      body: { displayName: 'Acme Robotics', brandColor: '#7b1fa2' },
    });
    expect(patched.status).toBe(200);
    const logo = await app.custos.app
      .getHttpAdapter()
      .getInstance()
      .inject({
        method: 'PUT',
        url: `/v1/tenants/${t.tenantId}/logo`,
        headers: { authorization: `Bearer ${t.adminKey}`, 'content-type': 'image/png' },
        payload: png(120, 48, '#00a86b'),
      });
    expect(logo.statusCode).toBe(200);
    const page = await browser.newPage();
    const violations: string[] = [];
    page.on('console', (m) => {
      if (/Content[- ]Security[- ]Policy|Refused to/i.test(m.text())) violations.push(m.text());
    });
    const url = await sessionUrl('carol', 'inhouse');
    await step(page, 'branded', async () => {
      await page.goto(url);
      await page.getByRole('heading', { name: 'Connect your In-house Git account' }).waitFor();
      await page.locator('header.brand').getByText('Acme Robotics').waitFor();
      expect(await page.title()).toBe('Connect In-house Git · Acme Robotics');
      await page.getByRole('listitem').filter({ hasText: 'Read and write your repositories' }).waitFor();
      // The logo was fetched from Custos and drawn: the CSP's img-src 'self' let it through.
      const drawn = await page
        .locator('header.brand img')
        .evaluate((img) => (img as unknown as { naturalWidth: number }).naturalWidth);
      expect(drawn).toBe(120);
      expect(near(await colourOf(page, 'header.brand img', 'logo'), [0x00, 0xa8, 0x6b])).toEqual([
        0x00, 0xa8, 0x6b,
      ]);
      // The button in the tenant's colour (a point clear of its label), its label in white.
      const button = 'button[type=submit]';
      expect(near(await colourOf(page, button, 'button', (w, h) => [4, h >> 1]), [0x7b, 0x1f, 0xa2])).toEqual(
        [0x7b, 0x1f, 0xa2],
      );
      await page.screenshot({
        path: path.join(os.tmpdir(), 'custos-browser-branded-page.png'),
        fullPage: true,
      });

      // Declined at the provider: the page says so, in the tenant's colours, with a way to try again.
      await page.getByRole('button', { name: 'Continue to In-house Git' }).click();
      await page.locator('input[name="account"]').fill('carol');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByRole('button', { name: 'Deny' }).click();
      await page.getByRole('heading', { name: 'Not connected' }).waitFor();
      await page.getByText('You did not allow access to In-house Git').waitFor();
      const retry = page.getByRole('link', { name: 'Try again' });
      expect(
        near(await colourOf(page, 'a.button', 'try-again', (w, h) => [4, h >> 1]), [0x7b, 0x1f, 0xa2]),
      ).toEqual([0x7b, 0x1f, 0xa2]);
      await retry.click();
      await page.getByRole('button', { name: 'Continue to In-house Git' }).waitFor();
    });
    expect(violations).toEqual([]);
    await page.close();
    const [declined] = await app.custos.runtime.dataSource.query(
      `SELECT details->>'reason' AS reason FROM audit_events
        WHERE tenant_id = $1 AND action = 'connect_session.declined' AND subject_user_id = 'carol'`,
      [t.tenantId],
    );
    expect(declined).toEqual({ reason: 'access_denied' });
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
