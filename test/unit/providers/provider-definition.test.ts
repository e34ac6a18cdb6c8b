import fc from 'fast-check';
import { CustosException } from '../../../src/common/errors.js';
import {
  expandProviderUrl,
  isOAuth2Provider,
  parseConnectionConfig,
  parseProviderDefinition,
  providerJsonSchema,
} from '../../../src/providers/provider-definition.js';

function oauth2Definition(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    key: 'acme',
    name: 'Acme',
    authMode: 'oauth2',
    oauth2: {
      authorizationUrl: 'https://auth.acme.example/authorize',
      tokenUrl: 'https://auth.acme.example/token',
      scopes: ['read'],
    },
    ...overrides,
  };
}

function oauth2With(oauth2: Record<string, unknown>): Record<string, unknown> {
  const base = oauth2Definition();
  return { ...base, oauth2: { ...(base.oauth2 as Record<string, unknown>), ...oauth2 } };
}

function apiKeyDefinition(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    key: 'acme-ai',
    name: 'Acme AI',
    authMode: 'api_key',
    apiKey: { verify: { url: 'https://api.acme.example/v1/me' } },
    ...overrides,
  };
}

function templatedDefinition(authorizationUrl: string): Record<string, unknown> {
  return {
    ...oauth2With({ authorizationUrl, tokenUrl: 'https://{tenant}.acme.example/token' }),
    connectionConfig: [{ key: 'tenant', label: 'Tenant', pattern: '^[a-z0-9-]{1,63}$' }],
  };
}

function rejection(input: unknown): CustosException {
  try {
    parseProviderDefinition(input);
  } catch (error) {
    if (error instanceof CustosException) return error;
    throw error;
  }
  throw new Error('expected the definition to be rejected');
}

describe('parseProviderDefinition', () => {
  it('applies the documented defaults', () => {
    const def = parseProviderDefinition(oauth2Definition());
    expect(def.oauth2).toEqual({
      authorizationUrl: 'https://auth.acme.example/authorize',
      tokenUrl: 'https://auth.acme.example/token',
      scopes: ['read'],
      scopeSeparator: ' ',
      pkce: true,
      tokenEndpointAuthMethod: 'client_secret_basic',
      authorizationParams: {},
      rotatesRefreshToken: false,
      narrowsScopesOnRefresh: false,
      defaultExpiresIn: 3600,
    });
    expect(isOAuth2Provider(def)).toBe(true);
  });

  it('applies verify defaults for api_key providers', () => {
    const def = parseProviderDefinition(apiKeyDefinition());
    expect(def.apiKey?.verify).toEqual({
      url: 'https://api.acme.example/v1/me',
      method: 'GET',
      header: 'Authorization',
      format: 'Bearer {key}',
    });
    expect(isOAuth2Provider(def)).toBe(false);
  });

  it('accepts placeholders declared in connectionConfig', () => {
    const def = parseProviderDefinition(
      templatedDefinition('https://{tenant}.acme.example/{tenant}/authorize'),
    );
    expect(def.connectionConfig).toEqual([{ key: 'tenant', label: 'Tenant', pattern: '^[a-z0-9-]{1,63}$' }]);
  });

  it('accepts a jwksUri with its issuer', () => {
    const def = parseProviderDefinition(
      oauth2With({ issuer: 'https://auth.acme.example', jwksUri: 'https://auth.acme.example/jwks' }),
    );
    expect(def.oauth2?.jwksUri).toBe('https://auth.acme.example/jwks');
  });

  it('accepts extra verify headers', () => {
    const def = parseProviderDefinition(
      apiKeyDefinition({
        apiKey: {
          verify: {
            url: 'https://api.acme.example/v1/me',
            header: 'x-api-key',
            format: '{key}',
            headers: { 'acme-version': '2024-01-01' },
          },
        },
      }),
    );
    expect(def.apiKey?.verify?.headers).toEqual({ 'acme-version': '2024-01-01' });
  });

  it.each<[string, unknown, string, RegExp]>([
    ['an unknown top-level field', oauth2Definition({ colour: 'blue' }), 'colour', /unknown field/],
    ['an unknown nested field', oauth2With({ clientSecret: 'x' }), 'oauth2.clientSecret', /unknown field/],
    ['an http: URL', oauth2With({ tokenUrl: 'http://auth.acme.example/token' }), 'oauth2.tokenUrl', /https/],
    [
      'a URL with credentials',
      oauth2With({ tokenUrl: 'https://user:pass@auth.acme.example/token' }),
      'oauth2.tokenUrl',
      /credentials/,
    ],
    [
      'a URL with a fragment',
      oauth2With({ authorizationUrl: 'https://auth.acme.example/authorize#x' }),
      'oauth2.authorizationUrl',
      /fragment/,
    ],
    ['a relative URL', oauth2With({ tokenUrl: '/token' }), 'oauth2.tokenUrl', /absolute/],
    [
      'an oauth2 provider without an oauth2 block',
      oauth2Definition({ oauth2: undefined }),
      'oauth2',
      /required when authMode is oauth2/,
    ],
    [
      'an api_key provider with an oauth2 block',
      apiKeyDefinition({ oauth2: oauth2Definition().oauth2 }),
      'oauth2',
      /not allowed when authMode is api_key/,
    ],
    [
      'an oauth2 provider with an apiKey block',
      oauth2Definition({ apiKey: {} }),
      'apiKey',
      /not allowed when authMode is oauth2/,
    ],
    [
      'a jwksUri without an issuer to check ID tokens against',
      oauth2With({ jwksUri: 'https://auth.acme.example/jwks' }),
      'oauth2.issuer',
      /issuer is required with jwksUri/,
    ],
    [
      'an http: jwksUri in the catalog',
      oauth2With({ issuer: 'https://auth.acme.example', jwksUri: 'http://auth.acme.example/jwks' }),
      'oauth2.jwksUri',
      /https/,
    ],
    [
      'a jwksUri with an undeclared placeholder',
      oauth2With({ issuer: 'https://auth.acme.example', jwksUri: 'https://{region}.acme.example/jwks' }),
      'oauth2.jwksUri',
      /\{region\} is not declared/,
    ],
    [
      'an undeclared placeholder',
      oauth2With({ tokenUrl: 'https://{region}.acme.example/token' }),
      'oauth2.tokenUrl',
      /\{region\} is not declared/,
    ],
    [
      'a placeholder in the query',
      templatedDefinition('https://auth.acme.example/authorize?t={tenant}'),
      'oauth2.authorizationUrl',
      /host and path/,
    ],
    [
      'a placeholder as the whole host',
      templatedDefinition('https://{tenant}/authorize'),
      'oauth2.authorizationUrl',
      /fixed domain/,
    ],
    [
      'a placeholder choosing the registrable domain',
      templatedDefinition('https://login.{tenant}.com/authorize'),
      'oauth2.authorizationUrl',
      /fixed domain/,
    ],
    [
      'a placeholder in docsUrl',
      {
        ...templatedDefinition('https://{tenant}.acme.example/a'),
        docsUrl: 'https://{tenant}.acme.example/',
      },
      'docsUrl',
      /placeholders/,
    ],
    [
      'a verify format without {key}',
      apiKeyDefinition({
        apiKey: { verify: { url: 'https://api.acme.example/v1/me', format: 'Bearer key' } },
      }),
      'apiKey.verify.format',
      /must contain \{key\}/,
    ],
    ['an upper-case key', oauth2Definition({ key: 'Acme' }), 'key', /must match/],
    ['a key starting with a dash', oauth2Definition({ key: '-acme' }), 'key', /must match/],
    ['a key with a slash', oauth2Definition({ key: 'ac/me' }), 'key', /must match/],
    ['an unknown authMode', oauth2Definition({ authMode: 'saml' }), 'authMode', /.+/],
    ['a scope with a space', oauth2With({ scopes: ['read write'] }), 'oauth2.scopes[0]', /scope token/],
    [
      'a scope containing the comma separator',
      oauth2With({ scopes: ['a,b'], scopeSeparator: ',' }),
      'oauth2.scopes[0]',
      /separator/,
    ],
    [
      'an authorization parameter that Custos sets',
      oauth2With({ authorizationParams: { redirect_uri: 'https://evil.example/cb' } }),
      'oauth2.authorizationParams.redirect_uri',
      /cannot be overridden/,
    ],
    [
      'a non-integer defaultExpiresIn',
      oauth2With({ defaultExpiresIn: 1.5 }),
      'oauth2.defaultExpiresIn',
      /.+/,
    ],
    ['a zero defaultExpiresIn', oauth2With({ defaultExpiresIn: 0 }), 'oauth2.defaultExpiresIn', /.+/],
    [
      'duplicate connectionConfig keys',
      {
        ...oauth2Definition(),
        connectionConfig: [
          { key: 'tenant', label: 'A' },
          { key: 'tenant', label: 'B' },
        ],
      },
      'connectionConfig[1].key',
      /duplicate/,
    ],
    [
      'an unanchored connectionConfig pattern',
      { ...oauth2Definition(), connectionConfig: [{ key: 'tenant', label: 'T', pattern: '[a-z]+' }] },
      'connectionConfig[0].pattern',
      /anchored/,
    ],
    [
      'a connectionConfig pattern with a repeated group',
      { ...oauth2Definition(), connectionConfig: [{ key: 'tenant', label: 'T', pattern: '^(a+)+$' }] },
      'connectionConfig[0].pattern',
      /must not repeat a group/,
    ],
    ['a missing name', oauth2Definition({ name: undefined }), 'name', /^required$/],
    ['a missing tokenUrl', oauth2With({ tokenUrl: undefined }), 'oauth2.tokenUrl', /^required$/],
    [
      'an invalid connectionConfig pattern',
      { ...oauth2Definition(), connectionConfig: [{ key: 'tenant', label: 'T', pattern: '^([a-z]$' }] },
      'connectionConfig[0].pattern',
      /not a valid regular expression/,
    ],
    [
      'a verify header that repeats the credential header',
      apiKeyDefinition({
        apiKey: { verify: { url: 'https://api.acme.example/v1/me', headers: { authorization: 'x' } } },
      }),
      'apiKey.verify.headers.authorization',
      /cannot be set/,
    ],
    [
      'a verify header value with a line break',
      apiKeyDefinition({
        apiKey: { verify: { url: 'https://api.acme.example/v1/me', headers: { 'x-a': 'a\r\nb' } } },
      }),
      'apiKey.verify.headers.x-a',
      /printable/,
    ],
  ])('rejects %s', (_name, input, path, message) => {
    const error = rejection(input);
    expect(error.code).toBe('validation_failed');
    expect(error.message).toContain(`at ${path}:`);
    const issues = (error.details as { issues: { path: string; message: string }[] }).issues;
    expect(issues[0]?.path).toBe(path);
    expect(issues[0]?.message).toMatch(message);
  });

  it('rejects a non-object with a root-level issue', () => {
    expect(rejection(null).message).toMatch(/at \(root\):/);
    expect(rejection([]).message).toMatch(/at \(root\):/);
  });

  it('throws only CustosException for arbitrary JSON', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (input) => {
        try {
          parseProviderDefinition(input);
        } catch (error) {
          expect(error).toBeInstanceOf(CustosException);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('throws only CustosException when any field of a valid definition is replaced by arbitrary JSON', () => {
    const fields = [
      ['key'],
      ['authMode'],
      ['docsUrl'],
      ['connectionConfig'],
      ['oauth2'],
      ['oauth2', 'authorizationUrl'],
      ['oauth2', 'tokenUrl'],
      ['oauth2', 'issuer'],
      ['oauth2', 'jwksUri'],
      ['oauth2', 'scopes'],
      ['oauth2', 'scopeSeparator'],
      ['oauth2', 'authorizationParams'],
      ['oauth2', 'defaultExpiresIn'],
    ];
    const urlish = fc.oneof(
      fc.jsonValue(),
      fc.string().map((s) => `https://${s}`),
      fc.string().map((s) => `https://{tenant}${s}`),
      fc.webUrl({ withFragments: true, withQueryParameters: true }),
    );
    fc.assert(
      fc.property(fc.constantFrom(...fields), urlish, (fieldPath, value) => {
        const def = templatedDefinition('https://{tenant}.acme.example/authorize');
        const [head, sub] = fieldPath as [string, string | undefined];
        if (sub === undefined) def[head] = value;
        else (def[head] as Record<string, unknown>)[sub] = value;
        try {
          parseProviderDefinition(def);
        } catch (error) {
          expect(error).toBeInstanceOf(CustosException);
        }
      }),
      { numRuns: 1000 },
    );
  });
});

describe('parseConnectionConfig and expandProviderUrl', () => {
  const def = parseProviderDefinition(templatedDefinition('https://{tenant}.acme.example/authorize'));

  it('expands declared placeholders with validated values', () => {
    const values = parseConnectionConfig(def, { tenant: 'contoso' });
    expect(expandProviderUrl('https://{tenant}.acme.example/authorize', values)).toBe(
      'https://contoso.acme.example/authorize',
    );
  });

  it.each([
    ['a value that escapes the host', { tenant: 'evil.example/' }],
    ['a value with an @', { tenant: 'a@evil' }],
    ['a value that fails the pattern', { tenant: 'UPPER' }],
    ['a missing value', {}],
    ['an undeclared value', { tenant: 'a', other: 'b' }],
    ['a non-object', 'tenant=a'],
  ])('rejects %s', (_name, input) => {
    expect(() => parseConnectionConfig(def, input)).toThrow(CustosException);
  });

  it('refuses to expand a template with a value that is missing or unsafe', () => {
    expect(() => expandProviderUrl('https://{tenant}.acme.example/', {})).toThrow(CustosException);
    expect(() => expandProviderUrl('https://{tenant}.acme.example/', { tenant: 'a/../b' })).toThrow(
      CustosException,
    );
  });
});

describe('providerJsonSchema', () => {
  it('describes the request body, with defaulted fields optional and unknown fields refused', () => {
    const schema = providerJsonSchema as {
      required?: string[];
      additionalProperties?: boolean;
      properties?: Record<string, unknown>;
    };
    expect(schema.required).toEqual(['key', 'name', 'authMode']);
    expect(schema.additionalProperties).toBe(false);
    expect(Object.keys(schema.properties ?? {})).toEqual(
      expect.arrayContaining(['key', 'name', 'authMode', 'docsUrl', 'connectionConfig', 'oauth2', 'apiKey']),
    );
  });
});
