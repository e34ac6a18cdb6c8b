/**
 * The provider definition schema: what Custos knows about a third-party provider (where to send users, where
 * to exchange codes, how to check an API key). It validates the shipped catalog (providers/*.yaml) and the
 * custom providers that tenants send through the API, so it is strict: unknown fields are errors. Custom
 * providers may also use http: URLs, which the SSRF-safe client accepts only for allow-listed hosts.
 */
import { isSafePattern } from 'redos-detector';
import { z } from 'zod';
import { CommonException } from '../common/errors.js';
import { text, textRule } from '../common/validation.js';

export const PROVIDER_KEY_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const PARAM_KEY_PATTERN = /^[a-z][a-zA-Z0-9_]{0,62}$/;
/** RFC 6749 §3.3 scope-token: printable ASCII except space, '"' and '\'. */
const SCOPE_TOKEN_PATTERN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;
/** RFC 9110 token, for header names. */
const HEADER_NAME_PATTERN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HEADER_VALUE_PATTERN = /^[\x20-\x7E]*$/;
const PLACEHOLDER_PATTERN = /\{([^{}]*)\}/g;
const HAS_PLACEHOLDER = /\{[^{}]*\}/;
/**
 * A host that contains a placeholder must end in at least two fixed labels, so a value supplied at connect
 * time picks a subdomain of the provider's domain and never the domain itself.
 */
const FIXED_HOST_SUFFIX_PATTERN = /^\.[a-z0-9-]+(\.[a-z0-9-]+)+$/;
/** Every connection-config value must fit this before its own pattern is tried (hostname label / path segment). */
const CONNECTION_VALUE_PATTERN = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})$/;
/** Parameters Custos sets itself on the authorization request; a definition may not override them. */
const RESERVED_AUTHORIZATION_PARAMS = new Set([
  'client_id',
  'client_secret',
  'redirect_uri',
  'response_type',
  'scope',
  'state',
  'nonce',
  'code_challenge',
  'code_challenge_method',
]);
/** How many scopes a definition may describe in words. */
const MAX_SCOPE_DESCRIPTIONS = 200;
/**
 * Shown to people on a tenant's behalf, so no invisible formatting (bidi overrides, zero-width characters),
 * private-use or unassigned code points that would make the words read differently from what they are.
 */
const INVISIBLE = /[\p{Cf}\p{Co}\p{Cn}]/u;
/** Headers that frame or route the request; a verify call may not set them. */
const RESERVED_VERIFY_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection']);

/**
 * Whether a connection-config pattern is free of catastrophic backtracking. Bounded: a pattern the checker
 * cannot clear within its step budget (and, for a tenant's pattern, its time budget, so that a tenant cannot
 * spend Custos's CPU) counts as unsafe. The catalog's own patterns get no time budget: a verdict that depends
 * on how busy the machine is must not decide whether Custos starts. (Values are also capped at 253 characters
 * before a pattern ever runs.)
 */
function patternIsSafe(pattern: string, timeoutMs: number | undefined): boolean {
  try {
    return isSafePattern(pattern, { unicode: true, maxSteps: 5000, timeout: timeoutMs }).safe;
  } catch {
    return false;
  }
}

/** The `{name}` placeholders of a URL template, in order of appearance. */
export function urlPlaceholders(url: string): string[] {
  return [...url.matchAll(PLACEHOLDER_PATTERN)].map((m) => m[1] ?? '');
}

/**
 * Why a (possibly templated) URL is unacceptable, or undefined when it is fine. `allowHttp` admits http: URLs
 * (custom providers: the SSRF-safe client then requires an allow-listed host), but never with a placeholder
 * in the host, which could not be allow-listed.
 */
function urlProblem(raw: string, allowPlaceholders: boolean, allowHttp = false): string | undefined {
  const placeholders = urlPlaceholders(raw);
  if (placeholders.length > 0) {
    if (!allowPlaceholders) return 'must not contain {placeholders}';
    const bad = placeholders.find((p) => !PARAM_KEY_PATTERN.test(p));
    if (bad !== undefined) return `has a malformed placeholder {${bad}}`;
  }
  const substituted = raw.replace(PLACEHOLDER_PATTERN, 'x');
  if (/[{}]/.test(substituted)) return 'has an unbalanced { or }';
  if (raw.includes('#')) return 'must not have a fragment';
  let url: URL;
  try {
    url = new URL(substituted);
  } catch {
    return 'must be an absolute URL';
  }
  if (url.protocol !== 'https:' && !(allowHttp && url.protocol === 'http:')) {
    return allowHttp ? 'must be an https: or http: URL' : 'must be an https: URL';
  }
  if (url.username !== '' || url.password !== '') return 'must not contain credentials';
  if (placeholders.length > 0) {
    const queryStart = raw.indexOf('?');
    if (queryStart !== -1 && HAS_PLACEHOLDER.test(raw.slice(queryStart))) {
      return 'may have placeholders only in its host and path';
    }
    // Read the host from the raw text, so it must be spelled plainly: 'HTTPS://{x}' or 'https:{x}' would
    // otherwise hide a placeholder that makes up the whole host.
    const rawHost = /^https?:\/\/([^/?]*)/.exec(raw)?.[1];
    if (rawHost === undefined) return 'with placeholders must start with https://';
    if (rawHost.includes('{') && url.protocol !== 'https:') {
      return 'may use a placeholder in its host only with https:';
    }
    if (
      rawHost.includes('{') &&
      !FIXED_HOST_SUFFIX_PATTERN.test(rawHost.slice(rawHost.lastIndexOf('}') + 1))
    ) {
      return 'may use a placeholder in its host only before a fixed domain of at least two labels';
    }
  }
  return undefined;
}

function providerUrl(options: { allowPlaceholders: boolean; allowHttp: boolean }) {
  const scheme = options.allowHttp
    ? 'Absolute https: URL (http: only for a host in CUSTOS_OUTBOUND_ALLOW_HOSTS)'
    : 'Absolute https: URL';
  return z
    .string()
    .describe(
      options.allowPlaceholders
        ? `${scheme} without credentials or fragment; {param} placeholders declared in connectionConfig may appear in the host (before a fixed domain) and path.`
        : `${scheme} without credentials or fragment.`,
    )
    .max(2048)
    .superRefine(textRule())
    .superRefine((value, ctx) => {
      const problem = urlProblem(value, options.allowPlaceholders, options.allowHttp);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `URL ${problem}` });
    });
}

/**
 * What differs between the catalog and custom providers: URLs are https: only for the catalog, https: or
 * http: for custom providers; a custom provider's connection-config pattern is checked within a time budget.
 */
interface UrlSchemas {
  templated: ReturnType<typeof providerUrl>;
  plain: ReturnType<typeof providerUrl>;
  connectionParam: ReturnType<typeof connectionParamSchemaFor>;
}

/** How long the backtracking check of a tenant's pattern may run. */
const TENANT_PATTERN_CHECK_MS = 200;

const urlSchemas = (custom: boolean): UrlSchemas => ({
  templated: providerUrl({ allowPlaceholders: true, allowHttp: custom }),
  plain: providerUrl({ allowPlaceholders: false, allowHttp: custom }),
  connectionParam: connectionParamSchemaFor(custom ? TENANT_PATTERN_CHECK_MS : undefined),
});

const connectionParamSchemaFor = (patternCheckMs: number | undefined) =>
  z.strictObject({
    key: z.string().regex(PARAM_KEY_PATTERN, 'must match ^[a-z][a-zA-Z0-9_]{0,62}$'),
    label: text({ max: 100, trim: true }),
    /** An anchored regular expression the value must match, on top of the built-in hostname-safe check. */
    pattern: text({ max: 200 })
      .superRefine((value, ctx) => {
        if (!value.startsWith('^') || !value.endsWith('$')) {
          ctx.addIssue({ code: 'custom', message: 'pattern must be anchored with ^ and $' });
          return;
        }
        // Tenants write these and users' input runs through them: refusing repeated groups rules out the
        // nested quantifiers behind catastrophic backtracking.
        if (/\)[*+{]/.test(value)) {
          ctx.addIssue({ code: 'custom', message: 'pattern must not repeat a group with *, + or {}' });
          return;
        }
        try {
          new RegExp(value, 'u');
        } catch {
          ctx.addIssue({ code: 'custom', message: 'pattern is not a valid regular expression' });
          return;
        }
        // Nested quantifiers are not the only way to backtrack badly (`^a*a*a*$` has none): a pattern that
        // redos-detector cannot prove safe within its budget is refused.
        if (!patternIsSafe(value, patternCheckMs)) {
          ctx.addIssue({
            code: 'custom',
            message: 'pattern could backtrack catastrophically; use a simpler expression',
          });
        }
      })
      .optional(),
  });

const oauth2SchemaFor = (urls: UrlSchemas) =>
  z.strictObject({
    authorizationUrl: urls.templated,
    tokenUrl: urls.templated,
    /** An RFC 7009 revocation endpoint; leave it out for providers whose revocation is proprietary. */
    revocationUrl: urls.templated.optional(),
    /** Expected `iss` of ID tokens / RFC 9207 authorization responses. */
    issuer: urls.templated.optional(),
    /**
     * The provider's JWK Set (its discovery document's `jwks_uri`), for an OpenID provider. With it (and
     * `issuer`), the ID token of a connect flow is verified (signature, iss, aud, exp, nonce) and its `sub`
     * is kept as the connection's provider account id; without it the ID token is never read.
     */
    jwksUri: urls.templated.optional(),
    /** Default scopes requested at connect time. */
    scopes: z
      .array(z.string().max(512).regex(SCOPE_TOKEN_PATTERN, 'must be an RFC 6749 scope token'))
      .max(100)
      .default([]),
    scopeSeparator: z.enum([' ', ',']).default(' '),
    /** Send an S256 PKCE challenge. */
    pkce: z.boolean().default(true),
    tokenEndpointAuthMethod: z
      .enum(['client_secret_basic', 'client_secret_post', 'private_key_jwt'])
      .default('client_secret_basic'),
    /** Extra authorization request parameters, e.g. `{access_type: offline, prompt: consent}`. */
    authorizationParams: z
      .record(text({ max: 100 }), text({ min: 0, max: 1000 }))
      .superRefine((params, ctx) => {
        for (const name of Object.keys(params)) {
          if (RESERVED_AUTHORIZATION_PARAMS.has(name)) {
            ctx.addIssue({
              code: 'custom',
              path: [name],
              message: `${name} is set by Custos and cannot be overridden`,
            });
          }
        }
      })
      .default({}),
    /**
     * Each refresh returns a new refresh token and invalidates the old one, so refreshes must be single-flight
     * and the new token stored before the access token is used. When unsure, true is the safe value.
     */
    rotatesRefreshToken: z.boolean().default(false),
    /**
     * The token endpoint honours `scope` on a refresh_token grant naming a subset of the grant (RFC 6749 §6)
     * and answers with an access token for just those scopes. With it, a connector that asks for fewer scopes
     * than the user granted (least privilege per tool) gets a token minted for exactly those; without it, a
     * grant wider than the connector's allowed scopes is refused unless the tenant opts in to pass-through.
     */
    narrowsScopesOnRefresh: z.boolean().default(false),
    /**
     * Access-token lifetime in seconds, assumed when a token response that carries a refresh token omits
     * expires_in. (A response with neither a refresh token nor expires_in is a token that does not expire.)
     */
    defaultExpiresIn: z.int().positive().max(31_536_000).default(3600),
  });

const apiKeyVerifySchemaFor = (urls: UrlSchemas) =>
  z.strictObject({
    url: urls.templated,
    method: z.enum(['GET', 'POST']).default('GET'),
    header: z
      .string()
      .max(100)
      .regex(HEADER_NAME_PATTERN, 'must be an HTTP header name')
      .default('Authorization'),
    /**
     * The header value, with `{key}` standing for the secret: the API key, or for basic providers the
     * base64 of `username:password`.
     */
    format: z
      .string()
      .max(200)
      .regex(HEADER_VALUE_PATTERN, 'must be printable ASCII')
      .refine((value) => value.includes('{key}'), 'format must contain {key}')
      .default('Bearer {key}'),
    /** Fixed extra headers, e.g. `{anthropic-version: "2023-06-01"}`. */
    headers: z
      .record(
        z.string().max(100).regex(HEADER_NAME_PATTERN, 'must be an HTTP header name'),
        z.string().max(1000).regex(HEADER_VALUE_PATTERN, 'must be printable ASCII'),
      )
      .optional(),
  });

const definitionSchemaFor = (urls: UrlSchemas) =>
  z
    .strictObject({
      key: z.string().regex(PROVIDER_KEY_PATTERN, 'must match ^[a-z0-9][a-z0-9_-]{0,62}$'),
      name: text({ max: 100, trim: true }),
      authMode: z.enum(['oauth2', 'api_key', 'basic']),
      docsUrl: urls.plain.optional(),
      /** Values the user supplies at connect time (account, subdomain, …), usable as `{key}` in URLs. */
      connectionConfig: z.array(urls.connectionParam).min(1).max(10).optional(),
      oauth2: oauth2SchemaFor(urls).optional(),
      /**
       * What each scope lets Custos do, in words the hosted pages show the person connecting (`{repo: "Read and
       * write your repositories"}`); a scope without words is shown as its token. OAuth providers only.
       */
      scopeDescriptions: z
        .record(
          z.string().max(512).regex(SCOPE_TOKEN_PATTERN, 'must be an RFC 6749 scope token'),
          text({ max: 200, trim: true }).refine(
            (v) => !INVISIBLE.test(v),
            'must not contain invisible formatting, private-use or unassigned characters',
          ),
        )
        .refine((m) => Object.keys(m).length <= MAX_SCOPE_DESCRIPTIONS, {
          message: `at most ${MAX_SCOPE_DESCRIPTIONS} scope descriptions`,
        })
        .optional(),
      apiKey: z
        .strictObject({
          /** A cheap authenticated request that succeeds (2xx) only for a valid key. */
          verify: apiKeyVerifySchemaFor(urls).optional(),
        })
        .optional(),
    })
    .superRefine((def, ctx) => {
      if (def.authMode === 'oauth2' && def.oauth2 === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['oauth2'],
          message: 'oauth2 is required when authMode is oauth2',
        });
      }
      if (def.authMode !== 'oauth2' && def.oauth2 !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['oauth2'],
          message: `oauth2 is not allowed when authMode is ${def.authMode}`,
        });
      }
      if (def.oauth2?.jwksUri !== undefined && def.oauth2.issuer === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['oauth2', 'issuer'],
          message: 'issuer is required with jwksUri (ID tokens are checked against it)',
        });
      }
      if (def.authMode !== 'oauth2' && def.scopeDescriptions !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['scopeDescriptions'],
          message: `scopeDescriptions is not allowed when authMode is ${def.authMode}`,
        });
      }
      if (def.authMode === 'oauth2' && def.apiKey !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['apiKey'],
          message: 'apiKey is not allowed when authMode is oauth2',
        });
      }

      const declared = new Set<string>();
      def.connectionConfig?.forEach((param, i) => {
        if (declared.has(param.key)) {
          ctx.addIssue({
            code: 'custom',
            path: ['connectionConfig', i, 'key'],
            message: `duplicate key ${param.key}`,
          });
        }
        declared.add(param.key);
      });
      const urls: [(string | number)[], string | undefined][] = [
        [['oauth2', 'authorizationUrl'], def.oauth2?.authorizationUrl],
        [['oauth2', 'tokenUrl'], def.oauth2?.tokenUrl],
        [['oauth2', 'revocationUrl'], def.oauth2?.revocationUrl],
        [['oauth2', 'issuer'], def.oauth2?.issuer],
        [['oauth2', 'jwksUri'], def.oauth2?.jwksUri],
        [['apiKey', 'verify', 'url'], def.apiKey?.verify?.url],
      ];
      for (const [path, url] of urls) {
        for (const name of urlPlaceholders(url ?? '')) {
          if (!declared.has(name)) {
            ctx.addIssue({
              code: 'custom',
              path,
              message: `placeholder {${name}} is not declared in connectionConfig`,
            });
          }
        }
      }

      def.oauth2?.scopes.forEach((scope, i) => {
        if (def.oauth2?.scopeSeparator === ',' && scope.includes(',')) {
          ctx.addIssue({
            code: 'custom',
            path: ['oauth2', 'scopes', i],
            message: 'scope contains the separator',
          });
        }
      });

      const verify = def.apiKey?.verify;
      for (const name of Object.keys(verify?.headers ?? {})) {
        const lower = name.toLowerCase();
        if (RESERVED_VERIFY_HEADERS.has(lower) || lower === verify?.header.toLowerCase()) {
          ctx.addIssue({
            code: 'custom',
            path: ['apiKey', 'verify', 'headers', name],
            message: `header ${name} cannot be set`,
          });
        }
      }
    });

/** The catalog's schema (providers/*.yaml): https: URLs only. */
export const providerDefinitionSchema = definitionSchemaFor(urlSchemas(false));
/**
 * A tenant's custom provider: the same rules, except that a URL may also be http: (never with a placeholder
 * in its host). Whether an http: host is allow-listed, and whether any host is public, is the SSRF-safe
 * client's decision at save and on every request.
 */
export const customProviderDefinitionSchema = definitionSchemaFor(urlSchemas(true));

export type ProviderDefinition = z.infer<typeof providerDefinitionSchema>;
/** What a definition may look like before defaults are applied (YAML files, API request bodies). */
export type ProviderDefinitionInput = z.input<typeof providerDefinitionSchema>;
export type OAuth2Config = z.infer<ReturnType<typeof oauth2SchemaFor>>;
export type ApiKeyVerifyConfig = z.infer<ReturnType<typeof apiKeyVerifySchemaFor>>;
export type ConnectionParam = z.infer<ReturnType<typeof connectionParamSchemaFor>>;
export type AuthMode = ProviderDefinition['authMode'];

export type OAuth2ProviderDefinition = ProviderDefinition & { authMode: 'oauth2'; oauth2: OAuth2Config };

export function isOAuth2Provider(def: ProviderDefinition): def is OAuth2ProviderDefinition {
  return def.authMode === 'oauth2' && def.oauth2 !== undefined;
}

/** Scopes as the hosted pages show them: with the definition's words for each, where it has them. */
export function describeScopes(
  def: Pick<ProviderDefinition, 'scopeDescriptions'>,
  scopes: readonly string[],
): { scope: string; description?: string }[] {
  const words = def.scopeDescriptions ?? {};
  return scopes.map((scope) =>
    Object.hasOwn(words, scope) ? { scope, description: words[scope] } : { scope },
  );
}

/** JSON Schema (request-body shape, before defaults) for OpenAPI documentation. */
export const providerJsonSchema = z.toJSONSchema(providerDefinitionSchema, { io: 'input' });

export interface ValidationIssue {
  path: string;
  message: string;
}

function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(root)';
  return path
    .map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i === 0 ? '' : '.'}${String(part)}`))
    .join('');
}

function toIssues(error: z.ZodError): ValidationIssue[] {
  return error.issues.flatMap((issue) =>
    issue.code === 'unrecognized_keys'
      ? issue.keys.map((key) => ({ path: formatPath([...issue.path, key]), message: 'unknown field' }))
      : [{ path: formatPath(issue.path), message: issue.message }],
  );
}

function parseWithSchema(
  schema: typeof providerDefinitionSchema,
  input: unknown,
  unknownFieldCode: 'validation_failed' | 'unknown_field',
): ProviderDefinition {
  const result = schema.safeParse(input, {
    error: (issue) => (issue.code === 'invalid_type' && issue.input === undefined ? 'required' : undefined),
  });
  if (result.success) return result.data;
  const issues = toIssues(result.error);
  const unknownField = issues.find((i) => i.message === 'unknown field');
  if (unknownField !== undefined && unknownFieldCode === 'unknown_field') {
    throw new CommonException('unknown_field', `Unknown field in provider definition: ${unknownField.path}`, {
      issues,
    });
  }
  const first = issues[0] ?? { path: '(root)', message: 'invalid' };
  throw new CommonException(
    'validation_failed',
    `Invalid provider definition at ${first.path}: ${first.message}`,
    {
      issues,
    },
  );
}

/** Validates a catalog provider definition and applies defaults; throws CustosException 'validation_failed'. */
export function parseProviderDefinition(input: unknown): ProviderDefinition {
  return parseWithSchema(providerDefinitionSchema, input, 'validation_failed');
}

/**
 * Validates a tenant's custom provider definition (an API request body) and applies defaults. Throws
 * CustosException 'unknown_field' for an unknown field, as every API body does, else 'validation_failed'.
 */
export function parseCustomProviderDefinition(input: unknown): ProviderDefinition {
  return parseWithSchema(customProviderDefinitionSchema, input, 'unknown_field');
}

/** Every URL of a definition with where it sits, in a stable order (for SSRF checks and audit details). */
export function definitionUrls(def: ProviderDefinition): { path: string; url: string }[] {
  const urls: [string, string | undefined][] = [
    ['docsUrl', def.docsUrl],
    ['oauth2.authorizationUrl', def.oauth2?.authorizationUrl],
    ['oauth2.tokenUrl', def.oauth2?.tokenUrl],
    ['oauth2.revocationUrl', def.oauth2?.revocationUrl],
    ['oauth2.issuer', def.oauth2?.issuer],
    ['oauth2.jwksUri', def.oauth2?.jwksUri],
    ['apiKey.verify.url', def.apiKey?.verify?.url],
  ];
  return urls.flatMap(([path, url]) => (url === undefined ? [] : [{ path, url }]));
}

/**
 * Checks the values a user supplies at connect time against the definition's connectionConfig: every declared
 * key present, no other key, each value hostname-safe and matching its pattern. Throws 'validation_failed'.
 */
export function parseConnectionConfig(
  def: Pick<ProviderDefinition, 'connectionConfig'>,
  input: unknown,
): Record<string, string> {
  const params = def.connectionConfig ?? [];
  const fail = (path: string, message: string): never => {
    throw new CommonException('validation_failed', `Invalid connection config at ${path}: ${message}`, {
      issues: [{ path, message }],
    });
  };
  if (input === undefined && params.length === 0) return {};
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    return fail('(root)', 'expected object');
  const record = input as Record<string, unknown>;
  const declared = new Set(params.map((p) => p.key));
  const unknownKey = Object.keys(record).find((k) => !declared.has(k));
  if (unknownKey !== undefined) fail(unknownKey, 'unknown field');
  const values: Record<string, string> = {};
  for (const param of params) {
    const value = record[param.key];
    if (typeof value !== 'string') return fail(param.key, `${param.label} is required`);
    if (!CONNECTION_VALUE_PATTERN.test(value) || value.includes('..')) {
      fail(param.key, 'may contain only letters, digits, ".", "-" and "_"');
    }
    if (param.pattern !== undefined && !new RegExp(param.pattern, 'u').test(value)) {
      fail(param.key, `does not match ${param.pattern}`);
    }
    values[param.key] = value;
  }
  return values;
}

/** Substitutes validated connection-config values (from parseConnectionConfig) into a URL template. */
export function expandProviderUrl(template: string, values: Readonly<Record<string, string>>): string {
  const expanded = template.replace(PLACEHOLDER_PATTERN, (_match, name: string) => {
    const value = values[name];
    if (value === undefined || !CONNECTION_VALUE_PATTERN.test(value) || value.includes('..')) {
      throw new CommonException('validation_failed', `Missing or invalid connection config value ${name}`, {
        issues: [{ path: name, message: 'missing or invalid' }],
      });
    }
    return value;
  });
  // An http: template can only come from a custom provider whose host is fixed (and was allow-listed).
  if (urlProblem(expanded, false, template.startsWith('http://')) !== undefined) {
    throw new CommonException('validation_failed', 'Connection config does not produce a valid URL');
  }
  return expanded;
}
