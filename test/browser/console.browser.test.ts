/**
 * The console in a real browser (Debian's Chromium, driven by playwright-core): a tenant admin signs in, browses
 * the connections and filters them, disables a connector with the keyboard only (Tab to its switch, Space),
 * and finds the change in the audit trail. The strict CSP lets the console's own script and stylesheet through
 * and nothing else complains; screenshots are checked for the visible focus ring, the switch's states and the
 * chart's bars, and kept in the temporary folder (with a full page when a step fails).
 *
 * Chromium comes from Debian (`apt-get install -y chromium`, done by .ci/run). Without it this file is skipped
 * with a message, except under CI (CI=true), where a missing browser fails the run.
 */
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
  importUniqueToken,
  type SecretConnector,
  type TenantFixture,
} from '../support/factories.js';
import { readPng } from '../integration/connect/hosted-pages-images.js';

describeBrowser('the console in Chromium', () => {
  let app: TestApp;
  let browser: Browser;
  let t: TenantFixture;
  let support: SecretConnector;
  let sales: SecretConnector;
  let publicUrl: string;

  const shot = (name: string) => path.join(os.tmpdir(), `custos-console-${name}.png`);

  /** Runs a step; on failure keeps a screenshot of the page and says where. */
  async function step(page: Page, name: string, run: () => Promise<void>) {
    try {
      await run();
    } catch (err) {
      const file = shot(`${name}-failed-${Date.now()}`);
      await page.screenshot({ path: file, fullPage: true }).catch(() => undefined);
      throw new Error(`${name} failed (screenshot: ${file}): ${(err as Error).message}`, { cause: err });
    }
  }

  const exchange = (c: SecretConnector, user: string) =>
    app.request('POST', '/oauth/token', {
      payload: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: user,
        subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
        audience: 'github',
      }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(c) },
    });

  beforeAll(async () => {
    const port = await freePort();
    publicUrl = `http://127.0.0.1:${port}`;
    app = await startTestApp({ HOST: '127.0.0.1', PORT: String(port), CUSTOS_PUBLIC_URL: publicUrl });
    await app.custos.app.listen({ port, host: '127.0.0.1' });
    t = await createTenant(app);
    support = await createConnector(app, t, { name: 'Support agent', allowedProviders: ['github', 'slack'] });
    sales = await createConnector(app, t, { name: 'Sales copilot', allowedProviders: ['github'] });
    for (const user of ['alice@example.com', 'bob@example.com', 'carol@example.com']) {
      await importUniqueToken(app, t, user);
    }
    await importUniqueToken(app, t, 'alice@example.com', 'slack');
    expect((await exchange(support, 'alice@example.com')).status).toBe(200);
    expect((await exchange(sales, 'carol@example.com')).status).toBe(200);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await app?.close();
  });

  it('signs in, browses connections, disables a connector with the keyboard and finds it in the audit trail', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const complaints: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || /Content[- ]Security[- ]Policy|Refused to/i.test(m.text())) {
        complaints.push(m.text());
      }
    });
    page.on('pageerror', (e) => complaints.push(e.message));

    await step(page, 'sign-in', async () => {
      await page.goto(`${publicUrl}/console`);
      await page.getByRole('heading', { name: 'Sign in to the console' }).waitFor();
      // The key field has the focus from the start; type the key and press Enter.
      expect(await page.locator(':focus').getAttribute('id')).toBe('key');
      await page.keyboard.type(t.adminKey);
      await page.keyboard.press('Enter');
      await page.getByRole('heading', { name: 'Connections' }).waitFor();
      expect(page.url()).toBe(`${publicUrl}/console/connections`);
    });

    await step(page, 'connections', async () => {
      const table = page.getByRole('table', { name: 'Connections by user and provider' });
      expect(await table.getByRole('row').count()).toBe(5);
      await table
        .getByRole('row')
        .filter({ hasText: 'alice@example.com' })
        .filter({ hasText: 'GitHub' })
        .getByText('by Support agent')
        .waitFor();
      // The script ran (allowed by script-src 'self'): times are shown in local time, UTC in the tooltip.
      expect(await page.locator('time').first().getAttribute('title')).toMatch(/ UTC$/);
      await page.getByLabel('Provider').selectOption('slack');
      await page.getByRole('button', { name: 'Filter' }).click();
      await page.waitForURL(`${publicUrl}/console/connections?provider=slack`);
      expect(await table.getByRole('row').count()).toBe(2);
      await table.getByRole('row').filter({ hasText: 'alice@example.com' }).waitFor();
      await page.screenshot({ path: shot('connections'), fullPage: true });
    });

    await step(page, 'disable with the keyboard', async () => {
      await page.goto(`${publicUrl}/console/connectors`);
      await page.getByRole('heading', { name: 'Connectors' }).waitFor();
      // The first Tab reaches the skip link.
      await page.keyboard.press('Tab');
      expect(await page.locator(':focus').textContent()).toBe('Skip to main content');
      const target = 'Connector Sales copilot enabled';
      for (let i = 0; i < 40; i++) {
        if ((await page.locator(':focus').getAttribute('aria-label')) === target) break;
        await page.keyboard.press('Tab');
      }
      expect(await page.locator(':focus').getAttribute('aria-label')).toBe(target);
      const toggle = page.getByRole('switch', { name: target });
      expect(await toggle.getAttribute('aria-checked')).toBe('true');

      // The focus is visible: an orange ring just outside the green switch.
      const box = (await toggle.boundingBox())!;
      const pad = 8;
      const ring = readPng(
        await page.screenshot({
          path: shot('focused-switch'),
          clip: { x: box.x - pad, y: box.y - pad, width: box.width + 2 * pad, height: box.height + 2 * pad },
        }),
      );
      const midY = Math.round(ring.height / 2);
      const ringColours = [2, 3, 4, 5, 6].map((x) => near(ring.pixel(x, midY), [0xe3, 0x74, 0x00]));
      expect(ringColours).toContainEqual([0xe3, 0x74, 0x00]);
      expect(near(ring.pixel(pad + 6, midY), [0x1a, 0x7f, 0x37])).toEqual([0x1a, 0x7f, 0x37]);

      await page.keyboard.press('Space');
      await page.getByText('Connector “Sales copilot” disabled.').waitFor();
      const off = page.getByRole('switch', { name: target });
      expect(await off.getAttribute('aria-checked')).toBe('false');
      // Off is grey, not green.
      const offShot = readPng(await off.screenshot({ path: shot('disabled-switch') }));
      expect(near(offShot.pixel(3, Math.round(offShot.height / 2)), [0xe5, 0xe7, 0xeb])).toEqual([
        0xe5, 0xe7, 0xeb,
      ]);
      await page.screenshot({ path: shot('connectors'), fullPage: true });
    });
    // The connector is refused at once.
    expect((await exchange(sales, 'carol@example.com')).status).toBe(401);

    await step(page, 'audit', async () => {
      await page.getByRole('navigation', { name: 'Console' }).getByRole('link', { name: 'Audit' }).click();
      await page.getByRole('heading', { name: 'Audit trail' }).waitFor();
      const disabled = page
        .getByRole('table', { name: 'Events' })
        .getByRole('row')
        .filter({ hasText: 'connector.disabled' });
      await disabled.getByText('admin key admin').waitFor();
      expect(await disabled.count()).toBe(1);
      expect(await disabled.textContent()).toContain(sales.id);
      // The charts: one release per connector today, drawn as green bars.
      const bar = page.locator('#chart-connectors rect.released').first();
      const barShot = readPng(await bar.screenshot({ path: shot('chart-bar') }));
      expect(near(barShot.pixel(barShot.width >> 1, barShot.height >> 1), [0x1a, 0x7f, 0x37])).toEqual([
        0x1a, 0x7f, 0x37,
      ]);
      await page.getByText('By connector as a table').click();
      const salesRow = page
        .locator('#chart-connectors')
        .getByRole('row')
        .filter({ hasText: 'Sales copilot' });
      expect((await salesRow.getByRole('cell').allTextContents())[1]).toBe('1');
      await page.screenshot({ path: shot('audit'), fullPage: true });
    });

    expect(complaints).toEqual([]);
    await page.close();
  }, 60_000);
});
