/**
 * A tenant's branding on its hosted pages: a display name and colour (validated), and a small logo that is
 * read by its bytes (PNG or JPEG only, never SVG; polyglots, oversized, malformed and wrong-magic files
 * refused; metadata stripped), stored in PostgreSQL and served by Custos with headers that keep it an image.
 * The connect page shows all three under a CSP that stays strict. Tenant admins only, each tenant its own.
 */
import { createHash } from 'node:crypto';
import { startTestApp, type Reply, type TestApp } from '../../support/app.js';
import { createTenant, type TenantFixture } from '../../support/factories.js';
import { localPath } from '../../support/browser.js';
import { jpeg, png, pngChunkTypes } from './hosted-pages-images.js';

const PUBLIC_URL = 'https://custos.example.test';

let app: TestApp;
let a: TenantFixture;
let b: TenantFixture;

beforeAll(async () => {
  app = await startTestApp({ CUSTOS_PUBLIC_URL: PUBLIC_URL });
  a = await createTenant(app);
  b = await createTenant(app);
});
afterAll(() => app.close());

const patch = (t: TenantFixture, body: unknown, key = t.adminKey) =>
  app.request('PATCH', `/v1/tenants/${t.tenantId}`, { key, body });

/** Uploads `bytes` as the tenant's logo, declared as `type`. */
async function upload(t: TenantFixture, bytes: Buffer, type = 'image/png', key = t.adminKey): Promise<Reply> {
  const res = await app.custos.app
    .getHttpAdapter()
    .getInstance()
    .inject({
      method: 'PUT',
      url: `/v1/tenants/${t.tenantId}/logo`,
      headers: { authorization: `Bearer ${key}`, 'content-type': type },
      payload: bytes,
    });
  return {
    status: res.statusCode,
    headers: res.headers,
    body: res.body ? JSON.parse(res.body) : undefined,
    raw: res.body,
  };
}

/** The logo as served (raw bytes), without any key. */
async function served(tenantId: string, headers: Record<string, string> = {}, query = '') {
  return app.custos.app
    .getHttpAdapter()
    .getInstance()
    .inject({ method: 'GET', url: `/connect/branding/${tenantId}/logo${query}`, headers });
}

const stored = async (tenantId: string) =>
  (
    await app.custos.runtime.dataSource.query(
      'SELECT logo, logo_content_type, logo_width, logo_height FROM tenants WHERE id = $1',
      [tenantId],
    )
  )[0] as { logo: Buffer | null; logo_content_type: string | null };

const events = (tenantId: string, action: string) =>
  app.custos.runtime.dataSource.query<{ details: Record<string, unknown> }[]>(
    'SELECT details FROM audit_events WHERE tenant_id = $1 AND action = $2 ORDER BY id',
    [tenantId, action],
  );

describe('display name and colour', () => {
  it('sets, shows and removes them, audited, with the colour in lower case', async () => {
    const set = await patch(a, { displayName: '  Acme Robotics  ', brandColor: '#7B1FA2' });
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({ displayName: 'Acme Robotics', brandColor: '#7b1fa2', logo: null });
    const read = await app.request('GET', `/v1/tenants/${a.tenantId}`, { key: a.adminKey });
    expect(read.body).toMatchObject({ displayName: 'Acme Robotics', brandColor: '#7b1fa2' });
    const [event] = (await events(a.tenantId, 'tenant.updated')).slice(-1);
    expect(event.details).toMatchObject({
      changed: ['brandColor', 'displayName'],
      displayName: 'Acme Robotics',
      brandColor: '#7b1fa2',
    });
    const removed = await patch(a, { brandColor: null });
    expect(removed.body).toMatchObject({ displayName: 'Acme Robotics', brandColor: null });
    expect((await patch(a, { brandColor: '#7b1fa2' })).status).toBe(200);
  });

  it('refuses names that are not clean text or too long, and colours that are not #rrggbb', async () => {
    const bad: [Record<string, unknown>, string][] = [
      [{ displayName: 'x'.repeat(101) }, 'displayName'],
      [{ displayName: '' }, 'displayName'],
      [{ displayName: '   ' }, 'displayName'],
      [{ displayName: 'Acme\nRobotics' }, 'displayName'],
      [{ displayName: 'Acme\u0007' }, 'displayName'],
      // A right-to-left override makes "Acme‮lapyap" read as "Acmepaypal".
      [{ displayName: 'Acme\u202Elapyap' }, 'displayName'],
      [{ displayName: 'Ac\u200Bme' }, 'displayName'],
      [{ displayName: 'Acme\uE000' }, 'displayName'],
      [{ brandColor: 'red' }, 'brandColor'],
      [{ brandColor: '#abc' }, 'brandColor'],
      [{ brandColor: '#12345g' }, 'brandColor'],
      [{ brandColor: '#1234567' }, 'brandColor'],
      [{ brandColor: '#123456;background:url(x)' }, 'brandColor'],
      [{ brandColor: 'rgb(1,2,3)' }, 'brandColor'],
    ];
    for (const [body, path] of bad) {
      const res = await patch(b, body);
      expect({ body, status: res.status, error: res.body.error }).toEqual({
        body,
        status: 400,
        error: 'validation_failed',
      });
      expect(res.body.details.issues[0].path).toBe(path);
    }
    // Exactly 100 characters, letters from any script, and emoji are fine.
    const ok = await patch(b, { displayName: 'Ünïcødé 株式会社 🚀 '.padEnd(100, 'x') });
    expect(ok.status).toBe(200);
    const after = await app.request('GET', `/v1/tenants/${b.tenantId}`, { key: b.adminKey });
    expect(after.body.brandColor).toBeNull();
  });

  it('is for tenant admins of the tenant only', async () => {
    expect((await patch(a, { displayName: 'Mallory' }, b.adminKey)).status).toBe(404);
    expect((await patch(a, { displayName: 'Mallory' }, a.auditorKey)).status).toBe(403);
    const read = await app.request('GET', `/v1/tenants/${a.tenantId}`, { key: a.adminKey });
    expect(read.body.displayName).toBe('Acme Robotics');
  });
});

describe('logo upload', () => {
  it('takes a PNG, strips its text chunks, stores and serves exactly the rewritten image, audited', async () => {
    const script = Buffer.from('<script>alert(document.cookie)</script>');
    const image = png(64, 32, '#00a86b', {
      chunks: [
        ['tEXt', Buffer.concat([Buffer.from('Comment\0'), script])],
        ['pHYs', Buffer.from([0, 0, 11, 19, 0, 0, 11, 19, 1])],
      ],
    });
    const res = await upload(a, image);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      url: `${PUBLIC_URL}/connect/branding/${a.tenantId}/logo`,
      contentType: 'image/png',
      bytes: expect.any(Number),
      width: 64,
      height: 32,
      sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
      updatedAt: expect.any(String),
    });
    const row = await stored(a.tenantId);
    expect(pngChunkTypes(row.logo!)).toEqual(['IHDR', 'pHYs', 'IDAT', 'IEND']);
    expect(row.logo!.includes(script)).toBe(false);
    expect(res.body.bytes).toBe(row.logo!.length);
    expect(res.body.sha256).toBe(createHash('sha256').update(row.logo!).digest('hex'));
    const get = await served(a.tenantId);
    expect(get.statusCode).toBe(200);
    expect(get.rawPayload.equals(row.logo!)).toBe(true);
    const [event] = (await events(a.tenantId, 'tenant.logo_set')).slice(-1);
    expect(event.details).toEqual({
      contentType: 'image/png',
      declaredType: 'image/png',
      bytes: row.logo!.length,
      uploadedBytes: image.length,
      width: 64,
      height: 32,
      sha256: res.body.sha256,
    });
    const tenant = await app.request('GET', `/v1/tenants/${a.tenantId}`, { key: a.adminKey });
    expect(tenant.body.logo).toEqual(res.body);
  });

  it('takes a JPEG, dropping its comment and Exif segments, and decides the type by the bytes', async () => {
    const image = jpeg(40, 24, {
      segments: [
        [0xe1, Buffer.from('Exif\0\0<html><body onload=alert(1)>')],
        [0xfe, Buffer.from('<?php system($_GET["c"]); ?>')],
      ],
    });
    // Declared as a PNG: the bytes say JPEG, and JPEG it is.
    const res = await upload(b, image, 'image/png');
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ contentType: 'image/jpeg', width: 40, height: 24 });
    const row = await stored(b.tenantId);
    expect(row.logo_content_type).toBe('image/jpeg');
    expect(row.logo!.toString('latin1')).not.toMatch(/html|php|Exif/);
    expect(row.logo!.subarray(0, 4).toString('hex')).toBe('ffd8ffe0');
    expect(row.logo!.subarray(-2).toString('hex')).toBe('ffd9');
    const get = await served(b.tenantId);
    expect(get.headers['content-type']).toBe('image/jpeg');
    expect(get.rawPayload.equals(row.logo!)).toBe(true);
    const [event] = (await events(b.tenantId, 'tenant.logo_set')).slice(-1);
    expect(event.details).toMatchObject({ contentType: 'image/jpeg', declaredType: 'image/png' });
  });

  it('refuses SVG, other formats, polyglots, malformed and oversized images, and keeps the logo it had', async () => {
    const svg = Buffer.from(
      '<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="9" height="9"/></svg>',
    );
    const good = png(16, 16);
    const badCrc = Buffer.from(good);
    badCrc[good.length - 20] ^= 0xff;
    const gif = Buffer.concat([Buffer.from('GIF89a'), Buffer.alloc(32)]);
    const cases: [string, Buffer, string, number, string, string | undefined][] = [
      ['SVG as SVG', svg, 'image/svg+xml', 415, 'unsupported_media_type', undefined],
      ['SVG declared as a PNG', svg, 'image/png', 415, 'unsupported_media_type', 'svg'],
      ['GIF declared as a PNG', gif, 'image/png', 415, 'unsupported_media_type', 'unsupported'],
      [
        'HTML declared as a JPEG',
        Buffer.from('<html>hi</html>'),
        'image/jpeg',
        415,
        'unsupported_media_type',
        'unsupported',
      ],
      ['PNG magic then nothing', good.subarray(0, 8), 'image/png', 400, 'validation_failed', 'malformed'],
      [
        'PNG cut short',
        good.subarray(0, good.length - 12),
        'image/png',
        400,
        'validation_failed',
        'malformed',
      ],
      ['PNG with a bad checksum', badCrc, 'image/png', 400, 'validation_failed', 'malformed'],
      [
        'PNG with HTML after IEND',
        png(16, 16, '#00a86b', { trailing: Buffer.from('<html><script>alert(1)</script></html>') }),
        'image/png',
        400,
        'validation_failed',
        'trailing_data',
      ],
      [
        'PNG with a ZIP after IEND',
        png(16, 16, '#00a86b', { trailing: Buffer.from('PK\x03\x04payload', 'latin1') }),
        'application/octet-stream',
        400,
        'validation_failed',
        'trailing_data',
      ],
      [
        'JPEG with HTML after EOI',
        jpeg(8, 8, { trailing: Buffer.from('<script>alert(1)</script>') }),
        'image/jpeg',
        400,
        'validation_failed',
        'trailing_data',
      ],
      ['PNG wider than 512', png(513, 1), 'image/png', 400, 'validation_failed', 'dimensions'],
      ['JPEG taller than 512', jpeg(8, 600), 'image/jpeg', 400, 'validation_failed', 'dimensions'],
      [
        'more than 64 KiB',
        Buffer.concat([good, Buffer.alloc(65 * 1024)]),
        'image/png',
        413,
        'payload_too_large',
        undefined,
      ],
      ['an empty body', Buffer.alloc(0), 'image/png', 415, 'unsupported_media_type', 'unsupported'],
    ];
    const before = await stored(a.tenantId);
    for (const [name, bytes, type, status, error, reason] of cases) {
      const res = await upload(a, bytes, type);
      expect({ name, status: res.status, error: res.body?.error, reason: res.body?.details?.reason }).toEqual(
        {
          name,
          status,
          error,
          reason,
        },
      );
    }
    // A JSON body is not an image either.
    const json = await app.request('PUT', `/v1/tenants/${a.tenantId}/logo`, {
      key: a.adminKey,
      body: { logo: good.toString('base64') },
    });
    expect(json.status).toBe(415);
    expect((await stored(a.tenantId)).logo!.equals(before.logo!)).toBe(true);
  });

  it('gives an image body to no other route', async () => {
    const res = await upload(a, png(8, 8), 'image/png');
    expect(res.status).toBe(200);
    const elsewhere = await app.custos.app
      .getHttpAdapter()
      .getInstance()
      .inject({
        method: 'PATCH',
        url: `/v1/tenants/${a.tenantId}`,
        headers: { authorization: `Bearer ${a.adminKey}`, 'content-type': 'image/png' },
        payload: png(8, 8),
      });
    expect(elsewhere.statusCode).toBe(415);
    expect(JSON.parse(elsewhere.body).error).toBe('unsupported_media_type');
  });
});

describe('the served logo', () => {
  let sha: string;
  beforeAll(async () => {
    const res = await upload(a, png(48, 48, '#d03050'));
    expect(res.status).toBe(200);
    sha = res.body.sha256;
  });

  it('is an image that cannot be read as anything else: nosniff, a CSP that allows nothing, cached briefly', async () => {
    const res = await served(a.tenantId);
    expect(res.statusCode).toBe(200);
    expect(res.headers).toMatchObject({
      'content-type': 'image/png',
      'x-content-type-options': 'nosniff',
      'content-security-policy': "default-src 'none'; sandbox; frame-ancestors 'none'",
      'cross-origin-resource-policy': 'same-origin',
      'cache-control': 'public, max-age=300',
      etag: `"${sha}"`,
      'content-disposition': 'inline; filename="logo.png"',
    });
    expect(res.rawPayload.subarray(0, 8).toString('hex')).toBe('89504e470d0a1a0a');
  });

  it('answers 304 to a matching ETag, and is cached for a year when the request names its version', async () => {
    const again = await served(a.tenantId, { 'if-none-match': `W/"other", "${sha}"` });
    expect(again.statusCode).toBe(304);
    expect(again.rawPayload.length).toBe(0);
    const versioned = await served(a.tenantId, {}, `?v=${sha.slice(0, 16)}`);
    expect(versioned.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    const stale = await served(a.tenantId, {}, '?v=0000000000000000');
    expect(stale.headers['cache-control']).toBe('public, max-age=300');
    expect(stale.statusCode).toBe(200);
  });

  it('keeps tenants apart: each serves its own, no tenant can replace or remove another’s', async () => {
    const mine = await served(b.tenantId);
    expect(mine.headers['content-type']).toBe('image/jpeg');
    expect((await upload(a, png(8, 8, '#000000'), 'image/png', b.adminKey)).status).toBe(404);
    expect((await upload(a, png(8, 8, '#000000'), 'image/png', a.auditorKey)).status).toBe(403);
    const foreignDelete = await app.request('DELETE', `/v1/tenants/${a.tenantId}/logo`, { key: b.adminKey });
    expect(foreignDelete.status).toBe(404);
    expect((await served(a.tenantId)).headers.etag).toBe(`"${sha}"`);

    const c = await createTenant(app);
    const none = await served(c.tenantId);
    expect(none.statusCode).toBe(404);
    expect(none.headers['content-type']).toMatch(/^text\/html/);
    expect((await served('not-a-uuid')).statusCode).toBe(400);
  });

  it('is removed by its tenant’s admin, audited, and stops being served', async () => {
    const c = await createTenant(app);
    expect((await upload(c, png(8, 8))).status).toBe(200);
    const del = await app.request('DELETE', `/v1/tenants/${c.tenantId}/logo`, { key: c.adminKey });
    expect(del.status).toBe(204);
    expect((await served(c.tenantId)).statusCode).toBe(404);
    expect((await app.request('DELETE', `/v1/tenants/${c.tenantId}/logo`, { key: c.adminKey })).status).toBe(
      404,
    );
    expect(await events(c.tenantId, 'tenant.logo_removed')).toHaveLength(1);
    const view = await app.request('GET', `/v1/tenants/${c.tenantId}`, { key: c.adminKey });
    expect(view.body.logo).toBeNull();
    // Others keep theirs.
    expect((await served(a.tenantId)).statusCode).toBe(200);
  });

  it('is no longer served once its tenant is being deleted', async () => {
    const c = await createTenant(app, `doomed-${Date.now()}`);
    expect((await upload(c, png(8, 8))).status).toBe(200);
    const name = (await app.request('GET', `/v1/tenants/${c.tenantId}`, { key: c.adminKey })).body.name;
    const del = await app.request('DELETE', `/v1/tenants/${c.tenantId}?confirm=${encodeURIComponent(name)}`, {
      key: app.bootstrapKey,
    });
    expect(del.status).toBe(202);
    expect((await served(c.tenantId)).statusCode).toBe(404);
  });
});

describe('the connect page, branded', () => {
  it('shows the display name, the colour and the logo, under a CSP that allows exactly those', async () => {
    const logo = await upload(a, png(96, 40, '#2060c0'));
    expect(logo.status).toBe(200);
    const session = await app.request('POST', `/v1/tenants/${a.tenantId}/connect/sessions`, {
      key: a.adminKey,
      body: { userId: 'alice', provider: 'openai' },
    });
    expect(session.status).toBe(201);
    const page = await app.request('GET', localPath(session.body.url, PUBLIC_URL));
    expect(page.status).toBe(200);
    expect(page.raw).toContain('<span>Acme Robotics</span>');
    expect(page.raw).toContain('<strong>Acme Robotics</strong> asks to use your own OpenAI access');
    expect(page.raw).toContain('<title>Connect OpenAI · Acme Robotics</title>');
    const logoUrl = `${PUBLIC_URL}/connect/branding/${a.tenantId}/logo?v=${logo.body.sha256.slice(0, 16)}`;
    expect(page.raw).toContain(`<img src="${logoUrl}" alt="" width="96" height="40">`);
    // The colour is a stylesheet of its own, allowed by its hash; white text on this purple reads (AA).
    const brandCss = ':root{--brand:#7b1fa2;--on-brand:#ffffff}';
    expect(page.raw).toContain(`<style>${brandCss}</style>`);
    const csp = String(page.headers['content-security-policy']);
    const hash = createHash('sha256').update(brandCss).digest('base64');
    expect(csp).toContain(`'sha256-${hash}'`);
    expect(csp).toContain("img-src 'self'");
    expect(csp).toMatch(/^default-src 'none'; /);
    expect(csp).not.toMatch(/unsafe-inline|https?:|data:/);
    // Every stylesheet on the page is allowed by a hash in the CSP, and nothing else is.
    const styles = [...page.raw.matchAll(/<style>([\s\S]*?)<\/style>/g)].map((m) => m[1]);
    expect(styles).toHaveLength(2);
    for (const css of styles) {
      expect(csp).toContain(`'sha256-${createHash('sha256').update(css).digest('base64')}'`);
    }
  });

  it('picks black text on a light colour, and shows no logo, colour or img-src for a tenant without them', async () => {
    const light = await createTenant(app);
    await patch(light, { brandColor: '#ffd54f' });
    const s1 = await app.request('POST', `/v1/tenants/${light.tenantId}/connect/sessions`, {
      key: light.adminKey,
      body: { userId: 'alice', provider: 'openai' },
    });
    const p1 = await app.request('GET', localPath(s1.body.url, PUBLIC_URL));
    expect(p1.raw).toContain(':root{--brand:#ffd54f;--on-brand:#000000}');

    const plain = await createTenant(app, 'plain-tenant-' + Date.now());
    const s2 = await app.request('POST', `/v1/tenants/${plain.tenantId}/connect/sessions`, {
      key: plain.adminKey,
      body: { userId: 'alice', provider: 'openai' },
    });
    const p2 = await app.request('GET', localPath(s2.body.url, PUBLIC_URL));
    expect(p2.raw).toContain(`<span>plain-tenant-`);
    expect(p2.raw).not.toContain('<img');
    expect(p2.raw).not.toContain('--brand:');
    expect(String(p2.headers['content-security-policy'])).not.toContain('img-src');
  });

  it('escapes a display name that looks like markup', async () => {
    const t = await createTenant(app);
    await patch(t, { displayName: '<img src=x onerror=alert(1)> & "co"' });
    const s = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
      key: t.adminKey,
      body: { userId: 'alice', provider: 'openai' },
    });
    const page = await app.request('GET', localPath(s.body.url, PUBLIC_URL));
    expect(page.raw).toContain('&lt;img src=x onerror=alert(1)&gt; &amp; &quot;co&quot;');
    expect(page.raw).not.toContain('<img src=x');
  });
});
