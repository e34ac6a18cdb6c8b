/**
 * The custom-provider variant of the provider schema: the catalog's rules plus http: URLs (whose hosts the
 * SSRF-safe client must allow-list), never with a placeholder in an http: host; the catalog stays https-only.
 */
import { CustosException } from '../../../src/common/errors.js';
import {
  definitionUrls,
  expandProviderUrl,
  parseCustomProviderDefinition,
  parseProviderDefinition,
} from '../../../src/providers/provider-definition.js';
import { definitionHosts } from '../../../src/providers/tenant-providers.service.js';

const oauth2 = (urls: Record<string, string>, extra: Record<string, unknown> = {}) => ({
  key: 'corp',
  name: 'Corp',
  authMode: 'oauth2',
  oauth2: {
    authorizationUrl: 'https://sso.corp.example/authorize',
    tokenUrl: 'https://sso.corp.example/token',
    ...urls,
  },
  ...extra,
});
const tenantParam = { connectionConfig: [{ key: 'tenant', label: 'Tenant' }] };

function failure(parse: (input: unknown) => unknown, input: unknown): CustosException {
  try {
    parse(input);
  } catch (error) {
    if (error instanceof CustosException) return error;
    throw error;
  }
  throw new Error('expected the definition to be rejected');
}

describe('parseCustomProviderDefinition', () => {
  it('accepts http: URLs that the catalog schema refuses', () => {
    const input = oauth2({ tokenUrl: 'http://127.0.0.1:4444/token' });
    expect(parseCustomProviderDefinition(input).oauth2?.tokenUrl).toBe('http://127.0.0.1:4444/token');
    const err = failure(parseProviderDefinition, input);
    expect(err.details?.issues).toEqual([{ path: 'oauth2.tokenUrl', message: 'URL must be an https: URL' }]);
  });

  it('allows placeholders in the path of an http: URL but never in its host', () => {
    const pathOnly = oauth2({ tokenUrl: 'http://127.0.0.1:4444/{tenant}/token' }, tenantParam);
    expect(parseCustomProviderDefinition(pathOnly).oauth2?.tokenUrl).toBe(
      'http://127.0.0.1:4444/{tenant}/token',
    );
    const inHost = failure(
      parseCustomProviderDefinition,
      oauth2({ tokenUrl: 'http://{tenant}.corp.example/token' }, tenantParam),
    );
    expect(inHost.details?.issues).toEqual([
      { path: 'oauth2.tokenUrl', message: 'URL may use a placeholder in its host only with https:' },
    ]);
  });

  it.each([
    ['an upper-case scheme', 'HTTPS://{tenant}/token'],
    ['a scheme without slashes', 'https:{tenant}/token'],
    ['a single slash', 'https:/{tenant}/token'],
  ])('refuses a templated URL spelled with %s, in both schemas', (_name, tokenUrl) => {
    for (const parse of [parseProviderDefinition, parseCustomProviderDefinition]) {
      const err = failure(parse, oauth2({ tokenUrl }, tenantParam));
      expect(err.code).toBe('validation_failed');
      expect(err.details?.issues).toEqual([
        { path: 'oauth2.tokenUrl', message: 'URL with placeholders must start with https://' },
      ]);
    }
  });

  it.each(['ftp://files.corp.example/x', 'file:///etc/passwd', 'javascript:alert(1)'])(
    'refuses the scheme of %s',
    (docsUrl) => {
      const err = failure(parseCustomProviderDefinition, oauth2({}, { docsUrl }));
      expect(err.details?.issues).toEqual([
        { path: 'docsUrl', message: 'URL must be an https: or http: URL' },
      ]);
    },
  );

  it('reports an unknown field with the API’s unknown_field code (the catalog keeps validation_failed)', () => {
    const input = oauth2({}, { colour: 'blue' });
    expect(failure(parseCustomProviderDefinition, input).code).toBe('unknown_field');
    expect(failure(parseProviderDefinition, input).code).toBe('validation_failed');
  });
});

describe('definitionUrls and definitionHosts', () => {
  it('name every URL of a definition and their distinct hosts, placeholders kept', () => {
    const def = parseCustomProviderDefinition(
      oauth2(
        {
          authorizationUrl: 'https://{tenant}.corp.example/authorize',
          tokenUrl: 'http://127.0.0.1:4444/token',
          revocationUrl: 'http://127.0.0.1:4444/revoke',
          issuer: 'https://sso.corp.example',
          jwksUri: 'http://127.0.0.1:4444/jwks',
        },
        { ...tenantParam, docsUrl: 'https://docs.corp.example/' },
      ),
    );
    expect(definitionUrls(def).map((u) => u.path)).toEqual([
      'docsUrl',
      'oauth2.authorizationUrl',
      'oauth2.tokenUrl',
      'oauth2.revocationUrl',
      'oauth2.issuer',
      'oauth2.jwksUri',
    ]);
    expect(definitionHosts(def)).toEqual([
      '127.0.0.1:4444',
      'docs.corp.example',
      'sso.corp.example',
      '{tenant}.corp.example',
    ]);
  });
});

describe('expandProviderUrl for custom providers', () => {
  it('keeps an http: template http:, and never turns an https: template into anything else', () => {
    expect(expandProviderUrl('http://127.0.0.1:4444/{tenant}/token', { tenant: 'acme' })).toBe(
      'http://127.0.0.1:4444/acme/token',
    );
    expect(expandProviderUrl('https://{tenant}.corp.example/token', { tenant: 'acme' })).toBe(
      'https://acme.corp.example/token',
    );
  });
});
