/**
 * The "my connections" portal in a real browser (Debian's Chromium, driven by playwright-core): a person
 * connects an account through the hosted pages (the consent page now says how to disconnect later), a
 * connector uses it, then the person opens the portal link made by the tenant's backend, reads what is
 * connected (scopes in words, last use by which connector) in the tenant's branding, and disconnects it with
 * two clicks; the provider (oidc-provider on loopback) is asked to revoke the tokens. The strict CSP lets the
 * page through without a complaint; the screenshot is checked for the tenant's colour on the page's edge and
 * kept in the temporary folder (with a full page when a step fails).
 *
 * Chromium comes from Debian (`apt-get install -y chromium`, done by .ci/run). Without it this file is skipped
 * with a message, except under CI (CI=true), where a missing browser fails the run.
 */
import fs from 'node:fs';
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
import { readPng } from '../integration/connect/hosted-pages-images.js';
import { ProviderRevocationService } from '../../src/connections/provider-revocation.service.js';

describeBrowser('the “my connections” portal in Chromium', () => {
  let app: TestApp;
  let op: TestOAuthProvider;
  let browser: Browser;
  let t: TenantFixture;
  let connector: SecretConnector;
  let publicUrl: string;

  /** Runs a step; on failure keeps a screenshot of the page and says where. */
  async function step(page: Page, name: string, run: () => Promise<void>) {
    try {
      await run();
    } catch (err) {
      const file = path.join(os.tmpdir(), `custos-portal-${name}-${Date.now()}.png`);
      await page.screenshot({ path: file, fullPage: true }).catch(() => undefined);
      throw new Error(`${name} failed (screenshot: ${file}): ${(err as Error).message}`, { cause: err });
    }
  }

  const exchange = (user: string) =>
    app.request('POST', '/oauth/token', {
      payload: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: user,
        subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
        audience: 'inhouse',
      }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(connector) },
    });

  beforeAll(async () => {
    const port = await freePort();
    publicUrl = `http://127.0.0.1:${port}`;
    const client = { client_id: 'portal-app', client_secret: 'portal-secret-' + Date.now() };
    op = await startOAuthProvider({
      clients: [{ ...client, redirect_uris: [`${publicUrl}/connect/callback/inhouse`] }],
    });
    app = await startTestApp({
      HOST: '127.0.0.1',
      PORT: String(port),
      CUSTOS_PUBLIC_URL: publicUrl,
      CUSTOS_OUTBOUND_ALLOW_HOSTS: op.hostPort,
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
        revocationUrl: op.endpoints.revocation,
        issuer: op.issuer,
        scopes: ['openid', 'offline_access', 'repo'],
      },
      scopeDescriptions: {
        repo: 'Read and write your repositories',
        offline_access: 'Keep access while you are away',
      },
    });
    await saveProviderApp(app, t, 'inhouse', client);
    connector = await createConnector(app, t, { name: 'Release notes agent', allowedProviders: ['inhouse'] });
    const patched = await app.request('PATCH', `/v1/tenants/${t.tenantId}`, {
      key: t.adminKey,
      body: {
        displayName: 'Acme Robotics',
        brandColor: '#00695c',
        allowedReturnUrls: ['https://app.acme.example/settings'],
      },
    });
    expect(patched.status).toBe(200);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await app?.close();
    await op?.close();
  });

  it('shows what a person connected, and disconnects it at the provider too', async () => {
    const page = await browser.newPage({ viewport: { width: 800, height: 1000 } });
    const violations: string[] = [];
    page.on('console', (m) => {
      if (/Content[- ]Security[- ]Policy|Refused to/i.test(m.text())) violations.push(m.text());
    });

    const session = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
      key: t.adminKey,
      body: { userId: 'grace', provider: 'inhouse' },
    });
    expect(session.status).toBe(201);
    await step(page, 'connect', async () => {
      await page.goto(session.body.url as string);
      await page
        .getByText(
          'You can disconnect it later on your “My connections” page: ask Acme Robotics for a link to it.',
        )
        .waitFor();
      await page.getByRole('button', { name: 'Continue to In-house Git' }).click();
      await page.locator('input[name="account"]').fill('grace');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByRole('button', { name: 'Allow' }).click();
      await page.getByText('is connected').waitFor();
    });
    expect((await exchange('grace')).status).toBe(200);

    const link = await app.request('POST', `/v1/tenants/${t.tenantId}/portal/sessions`, {
      headers: { authorization: basicAuth(connector) },
      body: { userId: 'grace', returnTo: 'https://app.acme.example/settings' },
    });
    expect(link.status).toBe(201);
    const shot = path.join(os.tmpdir(), 'custos-portal-page.png');
    await step(page, 'portal', async () => {
      await page.goto(link.body.url as string);
      await page.getByRole('button', { name: 'Show my connections' }).click();
      await page.getByRole('heading', { name: 'Your connections' }).waitFor();
      // The token is gone from the address: the page lives at the session's own address.
      expect(page.url()).toBe(`${publicUrl}/connect/portal`);
      expect(await page.title()).toBe('Your connections · Acme Robotics');
      const item = page
        .locator('section.item')
        .filter({ has: page.getByRole('heading', { name: 'In-house Git' }) });
      await item.getByRole('listitem').filter({ hasText: 'Read and write your repositories' }).waitFor();
      await item.getByRole('listitem').filter({ hasText: 'Keep access while you are away' }).waitFor();
      await item.getByText('Status: active').waitFor();
      await item.getByText(/^Last used .* UTC by Release notes agent\.$/).waitFor();
      await page.getByRole('link', { name: 'Back to Acme Robotics' }).waitFor();
      await page.screenshot({ path: shot, fullPage: true });
    });
    // The tenant's colour on the page's top edge (the card's border), in the screenshot people look at.
    const image = readPng(fs.readFileSync(shot));
    const box = (await page.locator('main').boundingBox())!;
    expect(
      near(image.pixel(Math.round(box.x + box.width / 2), Math.round(box.y + 2)), [0x00, 0x69, 0x5c]),
    ).toEqual([0x00, 0x69, 0x5c]);
    // The disconnect button is drawn as a warning (red outline, no fill), unlike the brand-coloured buttons.
    const button = page.getByRole('button', { name: 'Disconnect In-house Git' });
    const b = (await button.boundingBox())!;
    expect(
      near(image.pixel(Math.round(b.x + 1), Math.round(b.y + b.height / 2)), [0xa5, 0x0e, 0x0e]),
    ).toEqual([0xa5, 0x0e, 0x0e]);

    const before = op.revocations;
    await step(page, 'disconnect', async () => {
      await button.click();
      await page.getByRole('heading', { name: 'Disconnect In-house Git?' }).waitFor();
      await page.getByRole('button', { name: 'Disconnect In-house Git' }).click();
      await page.getByRole('heading', { name: 'Disconnected' }).waitFor();
      await page.getByText('In-house Git is being asked to revoke it').waitFor();
      await page.getByRole('link', { name: 'Back to your connections' }).click();
      await page.getByText('You have no accounts connected to').waitFor();
    });
    expect(violations).toEqual([]);
    await page.close();
    expect((await exchange('grace')).body.error).toBe('consent_required');
    await app.custos.app.get(ProviderRevocationService).processDue();
    for (let i = 0; i < 50 && op.revocations - before < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(op.revocations - before).toBe(2);
  }, 60_000);
});
