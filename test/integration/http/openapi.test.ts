/**
 * The OpenAPI document at /openapi.json (browsed at /docs) is complete and true: every operation has a summary,
 * a description and its answers with schemas; every example validates against its schema; the security schemes
 * say what the credentials are; the token endpoint's form lists its parameters so that "Try it out" can send it.
 * And the documented schemas describe what the running API really answers, for a walk through the admin API.
 */
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import ajvFormats from 'ajv-formats';
import { startTestApp, type Reply, type TestApp } from '../../support/app.js';
import { createTenant, type TenantFixture } from '../../support/factories.js';

/** The document, walked as plain JSON. */
type Json = any;

const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;

let app: TestApp;
let doc: Json;
// Annotations OpenAPI adds (example, description) are not errors; unknown formats are caught by a test below.
const ajv = new Ajv2020({ strict: false, allErrors: true, logger: false });
(((ajvFormats as Json).default ?? ajvFormats) as (a: Ajv2020) => void)(ajv);

interface Operation {
  method: string;
  path: string;
  op: Json;
}

const operations = (): Operation[] =>
  Object.entries(doc.paths as Record<string, Json>).flatMap(([path, item]) =>
    METHODS.filter((m) => item[m]).map((method) => ({ method, path, op: item[method] })),
  );
const label = (o: Operation) => `${o.method.toUpperCase()} ${o.path}`;

const compiled = new Map<Json, ValidateFunction>();
function validator(schema: Json): ValidateFunction {
  let v = compiled.get(schema);
  if (!v) {
    v = ajv.compile(schema);
    compiled.set(schema, v);
  }
  return v;
}

/** The problems of `value` against `schema`, as readable lines (empty: it conforms). */
function problems(schema: Json, value: unknown): string[] {
  const v = validator(schema);
  return v(value) ? [] : (v.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''}`);
}

/** Every example of a media type object: `example` and each of `examples`. */
function examplesOf(media: Json): [string, unknown][] {
  const out: [string, unknown][] = [];
  if (media.example !== undefined) out.push(['example', media.example]);
  for (const [name, ex] of Object.entries((media.examples ?? {}) as Record<string, Json>))
    out.push([name, ex.value]);
  return out;
}

beforeAll(async () => {
  app = await startTestApp();
  const res = await app.request('GET', '/openapi.json');
  expect(res.status).toBe(200);
  doc = res.body;
});
afterAll(async () => {
  await app.close();
});

/** A request example of the document, by operation and name: what "Try it out" would send. */
function requestExample(method: string, template: string, name: string): Record<string, unknown> {
  const content = doc.paths[template]?.[method.toLowerCase()]?.requestBody?.content ?? {};
  const media = Object.values(content as Record<string, Json>)[0];
  const value = media?.examples?.[name]?.value;
  if (value === undefined) throw new Error(`no request example ${name} for ${method} ${template}`);
  return value as Record<string, unknown>;
}

describe('the OpenAPI document', () => {
  it('is OpenAPI 3.1, whose schemas are the JSON Schema the zod schemas convert to, browsable at /docs', async () => {
    expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
    // Swagger UI, offline: served by Custos itself, reading this document.
    const ui = await app.request('GET', '/docs');
    expect(ui.status).toBe(200);
    expect(String(ui.headers['content-type'])).toMatch(/^text\/html/);
    expect(operations().length).toBeGreaterThanOrEqual(40);
  });

  it('uses only formats a client’s validator knows', () => {
    const formats = new Set<string>();
    JSON.stringify(doc, (key, value: unknown) => {
      if (key === 'format' && typeof value === 'string') formats.add(value);
      return value;
    });
    const known = ['date-time', 'uuid', 'uri', 'email', 'binary', 'int32', 'int64', 'regex'];
    expect([...formats].filter((f) => !known.includes(f))).toEqual([]);
  });

  it('gives every operation a summary and a description of its own', () => {
    const missing = operations()
      .filter(({ op }) => {
        const summary = typeof op.summary === 'string' ? op.summary.trim() : '';
        const description = typeof op.description === 'string' ? op.description.trim() : '';
        return summary.length < 8 || description.length < 20 || description === summary;
      })
      .map(label);
    expect(missing).toEqual([]);
  });

  it('documents every operation’s answers: a success, and each answer with a description', () => {
    const bad: string[] = [];
    for (const o of operations()) {
      const responses = Object.entries((o.op.responses ?? {}) as Record<string, Json>);
      if (!responses.some(([status]) => /^2\d\d$/.test(status))) bad.push(`${label(o)}: no 2xx`);
      // Whatever takes credentials or input can be refused: its error answers are documented too.
      const takesInput = o.op.security?.length || o.op.parameters?.length || o.op.requestBody;
      if (takesInput && !responses.some(([status]) => /^[45]\d\d$/.test(status)))
        bad.push(`${label(o)}: no error answer`);
      for (const [status, r] of responses) {
        if (!r.description?.trim()) bad.push(`${label(o)} ${status}: no description`);
        // A body is documented with its schema and at least one example (204 and redirects have none).
        if (status === '204') continue;
        const content = Object.entries((r.content ?? {}) as Record<string, Json>);
        if (content.length === 0) bad.push(`${label(o)} ${status}: no body documented`);
        for (const [type, media] of content) {
          if (!media.schema) bad.push(`${label(o)} ${status} ${type}: no schema`);
          if (examplesOf(media).length === 0) bad.push(`${label(o)} ${status} ${type}: no example`);
        }
      }
    }
    expect(bad).toEqual([]);
  });

  it('has request bodies with schemas and examples, and every example validates against its schema', () => {
    const bad: string[] = [];
    let checked = 0;
    for (const o of operations()) {
      const bodies: [string, Json][] = [];
      for (const [type, media] of Object.entries((o.op.requestBody?.content ?? {}) as Record<string, Json>))
        bodies.push([`request ${type}`, media]);
      for (const [status, r] of Object.entries((o.op.responses ?? {}) as Record<string, Json>))
        for (const [type, media] of Object.entries((r.content ?? {}) as Record<string, Json>))
          bodies.push([`${status} ${type}`, media]);
      for (const [where, media] of bodies) {
        if (
          where.startsWith('request') &&
          examplesOf(media).length === 0 &&
          media.schema?.format !== 'binary'
        )
          bad.push(`${label(o)} ${where}: no example`);
        if (!media.schema) continue;
        for (const [name, value] of examplesOf(media)) {
          checked++;
          const p = problems(media.schema, value);
          if (p.length > 0) bad.push(`${label(o)} ${where} example ${name}: ${p.join('; ')}`);
        }
      }
      // Every parameter says what it is and has an example "Try it out" fills in, which its schema accepts.
      for (const param of (o.op.parameters ?? []) as Json[]) {
        const where = `${label(o)} parameter ${param.name}`;
        if (!param.description?.trim()) bad.push(`${where}: no description`);
        const values = examplesOf(param);
        if (param.in === 'path' && values.length === 0) bad.push(`${where}: no example`);
        for (const [name, value] of values) {
          const p = problems(param.schema ?? {}, value);
          if (p.length > 0) bad.push(`${where} example ${name}: ${p.join('; ')}`);
        }
      }
    }
    expect(bad).toEqual([]);
    expect(checked).toBeGreaterThan(100);
  });

  it('describes the admin key as what it is, and connectors’ Basic credentials, and uses only those schemes', () => {
    const schemes = doc.components.securitySchemes as Record<string, Json>;
    expect(schemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(schemes.bearer.bearerFormat).not.toMatch(/JWT/);
    expect(schemes.bearer.description).toMatch(/admin key/i);
    expect(schemes.bearer.description).toMatch(/cus_/);
    expect(schemes.basic).toMatchObject({ type: 'http', scheme: 'basic' });
    expect(schemes.basic.description).toMatch(/clientId/);
    expect(schemes.basic.description).toMatch(/clientSecret/);
    const undeclared = operations().flatMap((o) =>
      ((o.op.security ?? []) as Record<string, unknown>[])
        .flatMap((req) => Object.keys(req))
        .filter((name) => !(name in schemes))
        .map((name) => `${label(o)}: ${name}`),
    );
    expect(undeclared).toEqual([]);
    // Every admin operation says it needs an admin key, except the public signing keys.
    const open = operations()
      .filter((o) => o.path.startsWith('/v1/') && !o.path.endsWith('/keys'))
      .filter((o) => !((o.op.security ?? []) as Json[]).some((req) => 'bearer' in req))
      .map(label);
    expect(open).toEqual([]);
  });

  it('documents the token endpoint’s form, its parameters and its answers, so that "Try it out" can send it', () => {
    const op = doc.paths['/oauth/token'].post;
    expect(Object.keys(op.requestBody.content)).toEqual(['application/x-www-form-urlencoded']);
    const form = op.requestBody.content['application/x-www-form-urlencoded'];
    const props = form.schema.properties as Record<string, Json>;
    for (const name of [
      'grant_type',
      'subject_token',
      'subject_token_type',
      'audience',
      'scope',
      'client_id',
      'client_assertion',
      'client_assertion_type',
    ]) {
      expect(props[name]?.description).toEqual(expect.any(String));
    }
    expect(props.grant_type.enum).toEqual(['urn:ietf:params:oauth:grant-type:token-exchange']);
    expect(props.subject_token_type.enum).toContain('urn:ietf:params:oauth:token-type:jwt');
    expect(props.client_assertion_type.enum).toEqual([
      'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    ]);
    expect(form.schema.required).toEqual(expect.arrayContaining(['grant_type', 'subject_token', 'audience']));
    expect(Object.keys(op.responses)).toEqual(expect.arrayContaining(['200', '400', '401', '429', '503']));
    for (const status of ['200', '400', '401', '429', '503']) {
      const media = op.responses[status].content['application/json'];
      expect(examplesOf(media).length).toBeGreaterThan(0);
    }
    expect(
      examplesOf(op.responses['400'].content['application/json']).map(([, v]) => (v as Json).error),
    ).toEqual(expect.arrayContaining(['consent_required', 'invalid_request', 'invalid_grant']));
    expect(op.security).toEqual(expect.arrayContaining([{ basic: [] }]));
  });

  it('answers a "Try it out" of the documented token form as documented: a token, consent_required, invalid_client', async () => {
    const op = doc.paths['/oauth/token'].post;
    const t = await createTenant(app);
    const base = `/v1/tenants/${t.tenantId}`;
    const connector = await app.request('POST', `${base}/connectors`, {
      key: t.adminKey,
      body: {
        name: 'trusted',
        allowedProviders: ['github'],
        delegation: 'trusted',
        auth: { method: 'client_secret_basic' },
      },
    });
    await app.request('PUT', `${base}/providers/github/app`, {
      key: t.adminKey,
      body: { clientId: 'Iv1.0123456789abcdef', clientSecret: 'github-client-secret' },
    });
    const form = requestExample('POST', '/oauth/token', 'trusted');
    await app.request(
      'PUT',
      `${base}/users/${encodeURIComponent(String(form.subject_token))}/connections/github`,
      {
        key: t.adminKey,
        body: { type: 'oauth2', accessToken: 'gho_example_token', scopes: ['repo'] },
      },
    );
    const exchange = (body: Record<string, unknown>, clientId: string, secret: string) =>
      app.request('POST', '/oauth/token', {
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`,
        },
        payload: new URLSearchParams(body as Record<string, string>).toString(),
      });
    const schemaOf = (status: number) => op.responses[String(status)].content['application/json'].schema;

    const released = await exchange(form, connector.body.clientId, connector.body.clientSecret);
    expect({ status: released.status, problems: problems(schemaOf(200), released.body) }).toEqual({
      status: 200,
      problems: [],
    });
    expect(released.body.access_token).toBe('gho_example_token');

    const consent = await exchange(
      { ...form, subject_token: 'bob@example.com' },
      connector.body.clientId,
      connector.body.clientSecret,
    );
    expect({
      status: consent.status,
      error: consent.body.error,
      problems: problems(schemaOf(400), consent.body),
    }).toEqual({
      status: 400,
      error: 'consent_required',
      problems: [],
    });

    const refused = await exchange(form, connector.body.clientId, 'not-the-secret');
    expect({ status: refused.status, problems: problems(schemaOf(401), refused.body) }).toEqual({
      status: 401,
      problems: [],
    });
  });
});

/** The documented response for `method path` with `status` (a concrete path matched against the templates). */
function documented(method: string, url: string, status: number): Json {
  const path = url.split('?')[0];
  for (const [template, item] of Object.entries(doc.paths as Record<string, Json>)) {
    const pattern = new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`);
    if (!pattern.test(path) || !item[method.toLowerCase()]) continue;
    // A literal segment beats a parameter: /v1/audit/platform/keys is not /v1/tenants/{id}/….
    const response = item[method.toLowerCase()].responses[String(status)];
    return response ?? { missing: `${method} ${template} has no ${status}` };
  }
  return { missing: `no operation ${method} ${path}` };
}

/** Calls the API and checks the answer against the documented response for its status. */
async function conforms(
  method: string,
  url: string,
  opts: Parameters<TestApp['request']>[2] = {},
  expectStatus?: number,
): Promise<Reply> {
  const res = await app.request(method, url, opts);
  if (expectStatus !== undefined)
    expect({ url, status: res.status, body: res.body }).toMatchObject({ status: expectStatus });
  const response = documented(method, url, res.status);
  expect(response.missing).toBeUndefined();
  if (res.status !== 204) {
    const type = String(res.headers['content-type'] ?? '').split(';')[0];
    const media = response.content?.[type];
    expect({ url, type, documented: Object.keys(response.content ?? {}) }).toMatchObject({
      documented: expect.arrayContaining([type]),
    });
    if (type === 'application/json')
      expect({ url, problems: problems(media.schema, res.body) }).toEqual({ url, problems: [] });
  }
  return res;
}

describe('what the API answers', () => {
  let t: TenantFixture;

  beforeAll(async () => {
    t = await createTenant(app);
  });

  it('takes the documented request examples and answers in the documented schemas, walking the admin API', async () => {
    const base = `/v1/tenants/${t.tenantId}`;
    const tenantPath = '/v1/tenants/{tenantId}';
    const platform = { key: app.bootstrapKey };
    const admin = { key: t.adminKey };
    await conforms('GET', '/healthz', {}, 200);
    await conforms('GET', '/readyz', {}, 200);
    await conforms('GET', '/v1/providers', admin, 200);
    await conforms(
      'POST',
      '/v1/tenants',
      { ...platform, body: requestExample('POST', '/v1/tenants', 'acme') },
      201,
    );
    await conforms('GET', '/v1/tenants', platform, 200);
    await conforms('GET', base, admin, 200);
    await conforms('PATCH', base, { ...admin, body: requestExample('PATCH', tenantPath, 'returnUrls') }, 200);
    await conforms('PATCH', base, { ...admin, body: requestExample('PATCH', tenantPath, 'branding') }, 200);
    const key = await conforms(
      'POST',
      `${base}/admin-keys`,
      { ...admin, body: requestExample('POST', `${tenantPath}/admin-keys`, 'auditor') },
      201,
    );
    await conforms('GET', `${base}/admin-keys`, admin, 200);
    await conforms('DELETE', `${base}/admin-keys/${key.body.id}`, admin, 204);
    await conforms('GET', `${base}/providers`, admin, 200);
    await conforms('GET', `${base}/providers/github`, admin, 200);
    await conforms(
      'PUT',
      `${base}/providers/github/app`,
      { ...admin, body: requestExample('PUT', `${tenantPath}/providers/{provider}/app`, 'secret') },
      201,
    );
    await conforms('GET', `${base}/providers/github/app`, admin, 200);
    const connectors = `${tenantPath}/connectors`;
    const connector = await conforms(
      'POST',
      `${base}/connectors`,
      { ...admin, body: requestExample('POST', connectors, 'secret') },
      201,
    );
    const connectorUrl = `${base}/connectors/${connector.body.id}`;
    await conforms('GET', `${base}/connectors`, admin, 200);
    await conforms('GET', connectorUrl, admin, 200);
    await conforms(
      'PATCH',
      connectorUrl,
      { ...admin, body: requestExample('PATCH', `${connectors}/{connectorId}`, 'narrow') },
      200,
    );
    await conforms('POST', `${connectorUrl}/secret`, admin, 200);
    await conforms(
      'PUT',
      `${base}/identity-providers/corp`,
      { ...admin, body: requestExample('PUT', `${tenantPath}/identity-providers/{name}`, 'jwks') },
      201,
    );
    await conforms('GET', `${base}/identity-providers`, admin, 200);
    await conforms('GET', `${base}/identity-providers/corp`, admin, 200);
    const user = encodeURIComponent('alice@example.com');
    const connectionPath = `${tenantPath}/users/{userId}/connections/{provider}`;
    const connection = await conforms(
      'PUT',
      `${base}/users/${user}/connections/github`,
      { ...admin, body: requestExample('PUT', connectionPath, 'oauth2') },
      201,
    );
    await conforms(
      'PUT',
      `${base}/users/${user}/connections/anthropic`,
      { ...admin, body: requestExample('PUT', connectionPath, 'apiKey') },
      201,
    );
    await conforms('GET', `${base}/users/${user}/connections?includeRevoked=true`, admin, 200);
    const sessions = `${tenantPath}/connect/sessions`;
    const session = await conforms(
      'POST',
      `${base}/connect/sessions`,
      { ...admin, body: requestExample('POST', sessions, 'github') },
      201,
    );
    await conforms(
      'POST',
      `${base}/connect/sessions`,
      { ...admin, body: requestExample('POST', sessions, 'minimal') },
      201,
    );
    await conforms('GET', `${base}/connect/sessions/${session.body.id}`, admin, 200);
    await conforms('DELETE', `${base}/connections/${connection.body.id}`, admin, 204);
    await conforms('GET', `${base}/key-backend`, admin, 200);
    await conforms(
      'PUT',
      `${base}/key-backend`,
      { ...admin, body: requestExample('PUT', `${tenantPath}/key-backend`, 'managed') },
      200,
    );
    await conforms('POST', `${base}/key-backend/flush`, admin, 200);
    await conforms('POST', `${base}/key-backend/rotate`, admin, 200);
    await conforms('POST', `${base}/key-backend/migration/resume`, admin, 409);
    await conforms('GET', `${base}/audit/events?limit=5&action=connection.created`, admin, 200);
    await conforms('GET', `${base}/audit/keys`, {}, 200);
    await conforms('GET', '/v1/audit/platform/keys', {}, 200);
    await conforms('GET', '/v1/audit/platform/events?limit=5', platform, 200);
    await conforms('GET', `${base}/audit/export`, admin, 200);
    await conforms('DELETE', `${base}/identity-providers/corp`, admin, 204);
    await conforms('DELETE', connectorUrl, admin, 204);
    await conforms('DELETE', `${base}/providers/github/app`, admin, 204);
  });

  it('answers errors in the documented shape', async () => {
    const base = `/v1/tenants/${t.tenantId}`;
    await conforms('GET', base, {}, 401);
    await conforms('GET', `${base}/connectors`, { key: t.auditorKey }, 403);
    await conforms(
      'GET',
      `${base}/connectors/00000000-0000-4000-8000-000000000000`,
      { key: t.adminKey },
      404,
    );
    await conforms('GET', '/v1/tenants/not-a-uuid', { key: t.adminKey }, 400);
    await conforms('POST', `${base}/connectors`, { key: t.adminKey, body: { name: '' } }, 400);
    await conforms('POST', `${base}/key-backend/migration/cancel`, { key: t.adminKey }, 409);
    const backend = await conforms(
      'PUT',
      `${base}/key-backend`,
      {
        key: t.adminKey,
        body: {
          type: 'vault-transit',
          address: 'https://vault.custos-test.invalid',
          keyName: 'k',
          token: 't',
        },
      },
      400,
    );
    expect(backend.body.error).toBe('key_backend_unreachable');
  });
});
