/**
 * The shared string rule in every admin request schema (issue 12, finding 6). Every zod schema that a
 * `src/**\/*.dto.ts` module exports (and the custom-provider definition and the shared scope token) must have an example here, so a new
 * schema is covered; in each example, every string is replaced by hostile values: the schema must refuse
 * NUL bytes, lone surrogates, control characters and line breaks, and whatever it accepts passes the rule.
 */
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { z } from 'zod';
import {
  jsonProblem,
  MAX_JSON_DEPTH,
  scopeTokenSchema,
  textProblem,
  userIdSchema,
} from '../../../src/common/validation.js';
import { customProviderDefinitionSchema } from '../../../src/providers/provider-definition.js';
import { hostileString } from '../../support/naughty-strings.js';

const SRC = path.join(__dirname, '../../../src');
const IP = '93.184.215.14';

/** Valid examples of each exported schema, by "<module>:<export>". */
const examples: Record<string, unknown[]> = {
  'tenants.dto:createTenantSchema': [{ name: 'Acme' }],
  'tenants.dto:deleteTenantQuerySchema': [{ confirm: 'Acme' }],
  'admin-keys.dto:createAdminKeySchema': [{ name: 'ci', role: 'admin' }],
  'tenants.dto:returnUrlSchema': ['https://app.example/done'],
  'tenants.dto:updateTenantSchema': [
    {
      name: 'Acme',
      allowedReturnUrls: ['https://app.example/done'],
      webhookUrl: 'https://hooks.example/custos',
      connectLogin: { identityProvider: 'main', clientId: 'custos', clientSecret: 's3cret' },
      consoleLogin: {
        identityProvider: 'main',
        clientId: 'custos-console',
        clientSecret: 's3cret',
        admins: ['alice'],
        auditors: ['audrey'],
      },
    },
  ],
  'tenants.dto:consoleLoginSchema': [
    { identityProvider: 'main', clientId: 'custos-console', clientSecret: 's3cret', admins: ['alice'] },
  ],
  'connectors.dto:connectorAuthSchema': [
    { method: 'client_secret_basic' },
    { method: 'private_key_jwt', jwksUri: `https://${IP}/jwks` },
  ],
  'connectors.dto:createConnectorSchema': [
    {
      name: 'Docs MCP',
      owner: 'platform team',
      allowedProviders: ['github'],
      allowedScopes: { github: ['repo'] },
      delegation: 'user_token',
      auth: { method: 'private_key_jwt', jwksUri: `https://${IP}/jwks` },
    },
  ],
  'connectors.dto:updateConnectorSchema': [{ name: 'Docs MCP', owner: 'team', disabled: false }],
  'connectors.dto:saveIdentityProviderSchema': [
    { issuer: `https://${IP}/`, jwksUri: `https://${IP}/jwks`, audiences: ['custos'], userClaim: 'sub' },
  ],
  'validation:scopeTokenSchema': ['repo'],
  'connections.dto:importCredentialSchema': [
    { type: 'api_key', apiKey: 'sk-123' },
    {
      type: 'oauth2',
      accessToken: 'gho_1',
      refreshToken: 'ghr_1',
      expiresAt: '2030-01-01T00:00:00Z',
      scopes: ['repo'],
    },
  ],
  'connections.dto:listConnectionsQuerySchema': [{ includeRevoked: 'true' }],
  'audit.dto:auditQuerySchema': [
    { limit: '10', cursor: 'YToxMA', action: 'token.exchange', userId: 'alice' },
  ],
  'connect-sessions.dto:createConnectSessionSchema': [
    { userId: 'alice', provider: 'github', scopes: ['repo'], returnTo: 'https://app.example/done' },
  ],
  'provider-apps.dto:saveProviderAppSchema': [{ clientId: 'abc', clientSecret: 'def', scopes: ['repo'] }],
  'console.dto:connectionsQuerySchema': [
    { user: 'alice', provider: 'github', status: 'needs_reauth', after: 'WyJhbGljZSJd' },
  ],
  'console.dto:auditQuerySchema': [
    {
      action: 'token.exchange',
      outcome: 'denied',
      user: 'alice',
      connector: '8d0f8d64-0b39-4a8e-9f5f-5a1c3c7e2b10',
      provider: 'github',
      from: '2026-12-01',
      to: '2026-12-04T10:00Z',
      before: '1234',
    },
  ],
  'console.dto:connectorsQuerySchema': [{ done: 'disabled', id: '8d0f8d64-0b39-4a8e-9f5f-5a1c3c7e2b10' }],
  'console.dto:keyBackendQuerySchema': [{ done: 'rotated', epoch: '3', rewrapped: '10', notified: '1' }],
  'console.dto:signInQuerySchema': [{ ended: 'expired' }],
  'console.dto:ssoQuerySchema': [{ tenant: '3f0c1e8a-5b7d-4c2e-9a61-2d4f8b9e0c17' }],
  'console.dto:emptyQuerySchema': [{}],
  'console.dto:signInFormSchema': [{ csrf: 'Zm9ybS10b2tlbg', key: 'cus_abcdefghijklmnop' }],
  'console.dto:csrfFormSchema': [{ csrf: 'Zm9ybS10b2tlbg' }],
  'console.dto:connectorStateFormSchema': [{ csrf: 'Zm9ybS10b2tlbg', enabled: 'false' }],
  'console.dto:verifyFormSchema': [{ csrf: 'Zm9ybS10b2tlbg', from: '2026-11-01', to: '2026-12-01' }],
  'portal-sessions.dto:createPortalSessionSchema': [
    { userId: 'alice', returnTo: 'https://app.example/done' },
  ],
  'key-backend.dto:keyBackendInputSchema': [
    { type: 'managed' },
    {
      type: 'aws-kms',
      keyId: 'alias/custos',
      region: 'eu-west-1',
      endpoint: `https://${IP}/`,
      credentials: {
        accessKeyId: `AKIA${'ABCDEFGHIJKLMNOP'}`, // a made-up key id, built so no scanner mistakes it for a real one
        secretAccessKey: 'secret/key+1',
        sessionToken: 'tok',
      },
    },
    {
      type: 'vault-transit',
      address: `https://${IP}:8200`,
      mount: 'transit',
      keyName: 'custos',
      appRole: { roleId: 'role', secretId: 'secret', mount: 'approle' },
      namespace: 'team',
    },
  ],
  'provider-definition:customProviderDefinitionSchema': [
    {
      key: 'corp',
      name: 'Corp API',
      authMode: 'oauth2',
      docsUrl: `https://${IP}/docs`,
      connectionConfig: [{ key: 'tenant', label: 'Tenant', pattern: '^[a-z]+$' }],
      oauth2: {
        authorizationUrl: 'https://{tenant}.corp.example/authorize',
        tokenUrl: `https://${IP}/token`,
        scopes: ['read'],
        authorizationParams: { prompt: 'consent' },
      },
    },
    {
      key: 'corp-key',
      name: 'Corp key',
      authMode: 'api_key',
      apiKey: { verify: { url: `https://${IP}/me`, format: 'Token {key}', headers: { 'x-api': '1' } } },
    },
  ],
};

/** Every exported zod schema of every DTO module, found on disk (so a new one needs an example above). */
function dtoSchemas(): Record<string, z.ZodType> {
  const out: Record<string, z.ZodType> = {};
  const walk = (dir: string): string[] =>
    fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
      const p = path.join(dir, e.name);
      return e.isDirectory() ? walk(p) : e.name.endsWith('.dto.ts') ? [p] : [];
    });
  for (const file of walk(SRC)) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(file) as Record<string, unknown>;
    for (const [name, value] of Object.entries(mod)) {
      if (value instanceof z.ZodType) out[`${path.basename(file, '.ts')}:${name}`] = value;
    }
  }
  out['provider-definition:customProviderDefinitionSchema'] = customProviderDefinitionSchema;
  // Shared by several DTOs (connectors, provider apps, connect sessions, imports), so it lives in common/.
  out['validation:scopeTokenSchema'] = scopeTokenSchema;
  return out;
}

type Path = (string | number)[];

/** The paths of every string inside a JSON value (object keys excluded). */
function stringPaths(value: unknown, at: Path = []): Path[] {
  if (typeof value === 'string') return [at];
  if (Array.isArray(value)) return value.flatMap((v, i) => stringPaths(v, [...at, i]));
  if (value && typeof value === 'object')
    return Object.entries(value).flatMap(([k, v]) => stringPaths(v, [...at, k]));
  return [];
}

function replaceAt(value: unknown, at: Path, replacement: string): unknown {
  if (at.length === 0) return replacement;
  const copy = (Array.isArray(value) ? [...value] : { ...(value as object) }) as Record<
    string | number,
    unknown
  >;
  copy[at[0]] = replaceAt(copy[at[0]], at.slice(1), replacement);
  return copy;
}

const schemas = dtoSchemas();
const cases = Object.entries(examples).flatMap(([name, list]) =>
  list.flatMap((example, i) =>
    stringPaths(example).map((p) => ({
      name,
      schema: schemas[name],
      example,
      path: p,
      label: `${name}#${i} ${p.join('.') || '(value)'}`,
    })),
  ),
);

describe('every request schema', () => {
  it('has an example here (a new DTO schema must be added)', () => {
    expect(Object.keys(schemas).sort()).toEqual(Object.keys(examples).sort());
  });

  it.each(Object.entries(examples))('%s accepts its examples', (name, list) => {
    for (const example of list) {
      const result = schemas[name].safeParse(example);
      expect(result.error?.issues ?? []).toEqual([]);
    }
  });

  const bad: [string, (ok: string) => string][] = [
    ['a NUL byte', (ok) => `${ok}\u0000`],
    ['a lone high surrogate', (ok) => `${ok}\ud800`],
    ['a lone low surrogate', (ok) => `\udc00${ok}`],
    ['CR LF', (ok) => `${ok}\r\nX-Injected: 1`],
    ['a line separator', (ok) => `${ok}\u2028`],
    ['an escape character', (ok) => `\u001b[31m${ok}`],
    ['a C1 control', (ok) => `${ok}\u0085`],
  ];

  /** Accepted only if what comes out is clean: trimmed away, or coerced to a number, is fine. */
  const expectNothingHostileThrough = (c: (typeof cases)[number], input: string): void => {
    const result = c.schema.safeParse(replaceAt(c.example, c.path, input));
    if (!result.success) return;
    const out = c.path.reduce<unknown>((v, k) => (v as Record<string | number, unknown>)?.[k], result.data);
    if (typeof out === 'string')
      expect({ input, out, problem: textProblem(out) }).toMatchObject({ problem: null });
  };

  it.each(cases.map((c) => [c.label, c] as const))('%s refuses hostile characters', (_label, c) => {
    const original = String(
      c.path.reduce<unknown>((v, k) => (v as Record<string | number, unknown>)[k], c.example),
    );
    for (const [, make] of bad) {
      // In the middle (no trimming can take it away) and at an end.
      expectNothingHostileThrough(c, original.slice(0, 1) + make('') + original.slice(1));
      expectNothingHostileThrough(c, make(original));
    }
  });

  it('lets a hostile string through no field (property over naughty strings and random text)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...cases), hostileString, (c, s) => expectNothingHostileThrough(c, s)),
      { numRuns: 2000 },
    );
  });
});

describe('the string rule', () => {
  it('refuses exactly the strings that are not well formed or hold control characters', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 30 }), (s) => {
        const wellFormed = !/\p{Cs}/u.test(s);
        const controls = /[\p{Cc}\u2028\u2029]/u.test(s);
        expect(textProblem(s) === null).toBe(wellFormed && !controls);
        expect(userIdSchema.safeParse(s).success).toBe(
          wellFormed && !controls && s.length >= 1 && s.length <= 255,
        );
      }),
    );
  });

  it('accepts surrogate pairs, right-to-left text and combining marks', () => {
    for (const s of ['🚀', '👩‍👩‍👧', 'שלום', 'é', 'Z̤͔ͧ̑̓']) expect(textProblem(s)).toBeNull();
  });

  it('allows tab and line breaks only in multiline text', () => {
    expect(textProblem('a\r\n\tb', true)).toBeNull();
    expect(textProblem('a\r\n\tb')).not.toBeNull();
    expect(textProblem('a\u0000b', true)).not.toBeNull();
  });
});

describe('jsonProblem (the edge guard on JSON bodies)', () => {
  const nest = (depth: number): unknown => {
    let v: unknown = 1;
    for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { k: v };
    return v;
  };

  it(`refuses nesting deeper than ${MAX_JSON_DEPTH}, at any depth, without recursion`, () => {
    expect(jsonProblem(nest(MAX_JSON_DEPTH))).toBeNull();
    expect(jsonProblem(nest(MAX_JSON_DEPTH + 1))).toEqual({ kind: 'too_deep' });
    expect(jsonProblem(nest(1_000_000))).toEqual({ kind: 'too_deep' });
  });

  it('names where a bad string or key is', () => {
    expect(jsonProblem({ a: [{ b: 'x\u0000' }] })).toMatchObject({ kind: 'text', path: 'a.0.b' });
    expect(jsonProblem({ a: { ['k\ud800']: 1 } })).toMatchObject({ kind: 'text', path: 'a.(key)' });
    expect(jsonProblem({ pem: '-----BEGIN-----\r\nAAA\n-----END-----\n' })).toBeNull();
  });

  it('finds any bad string anywhere in an arbitrary JSON value', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), hostileString, (json, s) => {
        const bad = textProblem(s, true) !== null;
        const problem = jsonProblem({ json, s });
        if (bad) expect(problem).not.toBeNull();
      }),
      { numRuns: 500 },
    );
  });
});
