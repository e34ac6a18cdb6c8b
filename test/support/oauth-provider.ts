/**
 * `oidc-provider` on loopback as a real third-party OAuth server and identity provider for tests: code flow
 * with PKCE (S256), refresh tokens with rotation, revocation (RFC 7009), introspection, userinfo and `iss`
 * in authorization responses (RFC 9207). It adds fault injection and counters on the token endpoint, a
 * browserless consent driver, and raw token-endpoint helpers that check rotation without any OAuth client.
 *
 * Behaviour worth knowing (oidc-provider 9):
 * - `offline_access` is honoured without `prompt=consent` (as Microsoft or Atlassian do): a middleware in
 *   front of GET `/auth` adds `consent` to `prompt` when the scope asks for `offline_access`, because
 *   oidc-provider otherwise drops the scope before any interaction. Pushed (PAR) and request-object scopes are
 *   not rewritten. `issueRefreshToken` then issues a refresh token for clients allowed the `refresh_token`
 *   grant whenever `offline_access` was granted (never when `issueRefreshTokens` is false).
 * - Reusing a rotated refresh token gives `invalid_grant` and revokes the whole grant (its other tokens too).
 * - Storage is a per-instance in-memory adapter (the built-in one is process-global and capped at 1000 items).
 * - Resource indicators are off: access tokens are opaque, audience userinfo, scopes as granted.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';

export interface TestOAuthClient {
  client_id: string;
  client_secret?: string;
  redirect_uris: string[];
  /** Defaults to `client_secret_basic` with a secret, `none` without one. */
  token_endpoint_auth_method?: 'client_secret_basic' | 'client_secret_post' | 'none' | 'private_key_jwt';
  /** Public keys for `private_key_jwt`. */
  jwks?: { keys: Array<Record<string, unknown>> };
}

export interface TestOAuthProviderOptions {
  clients: TestOAuthClient[];
  /** Default 3600. */
  accessTokenTtlSeconds?: number;
  /** Rotate refresh tokens on every refresh, for confidential and public clients alike. Default true. */
  refreshTokenRotation?: boolean;
  /** Default ['openid', 'profile', 'email', 'offline_access', 'repo', 'read:user']. */
  scopes?: string[];
  /** Issue refresh tokens when `offline_access` was granted. Default true. */
  issueRefreshTokens?: boolean;
  /** Require PKCE (S256 is the only method oidc-provider 9 accepts). Default true. */
  pkceRequired?: boolean;
  /** Claims by account id; any other account id can sign in too, with `sub` only. */
  users?: Record<string, { email?: string; name?: string }>;
}

export interface TokenEndpointFaults {
  /** Answer every token request with this status and a JSON error body, without calling oidc-provider. */
  tokenStatus: number | null;
  /** Retry-After on the `tokenStatus` responses. */
  retryAfterSeconds: number | null;
  /** Wait this long before handling a token request (faults included). */
  delayMs: number;
  /** Answer refresh_token grants with 400 {"error":"invalid_grant"}; other grants pass through. */
  invalidGrant: boolean;
  /** Never answer token requests (until `close()`). */
  hang: boolean;
}

export type RevokedTokenType = 'access_token' | 'refresh_token' | 'client_credentials' | 'unknown';

/** A token-endpoint answer as received, for tests that check the protocol without an OAuth client. */
export interface RawTokenResponse {
  status: number;
  headers: Headers;
  body: {
    access_token?: string;
    refresh_token?: string;
    id_token?: string;
    token_type?: string;
    expires_in?: number;
    scope?: string;
    error?: string;
    error_description?: string;
  };
}

/** The parts of the oidc-provider instance this harness relies on (the package ships no types). */
export interface OidcProvider {
  readonly issuer: string;
  callback(): http.RequestListener;
  use(middleware: KoaMiddleware): unknown;
  on(event: string, listener: (...args: any[]) => void): unknown;
  interactionDetails(req: http.IncomingMessage, res: http.ServerResponse): Promise<InteractionDetails>;
  interactionResult(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    result: Record<string, unknown>,
    options?: { mergeWithLastSubmission?: boolean },
  ): Promise<string>;
  Grant: GrantModel;
}

export interface TestOAuthProvider {
  /** `http://127.0.0.1:<port>`, exactly as in discovery and in `iss`. */
  issuer: string;
  /** Base URL, the issuer with a trailing slash. */
  url: string;
  /** `127.0.0.1:<port>`, for CUSTOS_OUTBOUND_ALLOW_HOSTS. */
  hostPort: string;
  endpoints: {
    discovery: string;
    authorization: string;
    token: string;
    revocation: string;
    introspection: string;
    userinfo: string;
    jwks: string;
  };
  provider: OidcProvider;
  /** Mutable; `reset()` restores the defaults. */
  faults: TokenEndpointFaults;
  /** Every request reaching the token endpoint, faulted ones included. */
  tokenRequests: { authorization_code: number; refresh_token: number; total: number };
  /** Successful (200) revocation requests. */
  revocations: number;
  /** The kind of each token a revocation request named (`unknown` when it named no live token). */
  revokedTokenTypes: RevokedTokenType[];
  /** Errors oidc-provider reported as 500s; a test can assert this stays empty. */
  serverErrors: Error[];
  /** Follows an authorization URL like a browser: signs in as `account`, then grants (or denies) consent. */
  authorize(
    authorizationUrl: string,
    opts?: { account?: string; deny?: boolean },
  ): Promise<{ redirectedTo: string }>;
  exchangeCode(
    clientId: string,
    clientSecret: string | undefined,
    code: string,
    redirectUri: string,
    codeVerifier: string | undefined,
  ): Promise<RawTokenResponse>;
  refresh(
    clientId: string,
    clientSecret: string | undefined,
    refreshToken: string,
  ): Promise<RawTokenResponse>;
  /** Clears faults, counters and recorded errors. */
  reset(): void;
  close(): Promise<void>;
}

interface InteractionDetails {
  uid: string;
  prompt: { name: string; details: Record<string, unknown> };
  params: Record<string, unknown>;
  session?: { accountId?: string };
  grantId?: string;
}

interface GrantInstance {
  addOIDCScope(scope: string): void;
  addOIDCClaims(claims: string[]): void;
  save(): Promise<string>;
}

interface GrantModel {
  new (init: { accountId: string; clientId: string }): GrantInstance;
  find(id: string): Promise<GrantInstance | undefined>;
}

/** The Koa context as far as these middlewares use it. */
interface KoaContext {
  method: string;
  path: string;
  querystring: string;
  req: http.IncomingMessage;
  res: http.ServerResponse;
  status: number;
  body: unknown;
  type: string;
  set(field: string, value: string): void;
  oidc?: {
    params?: Record<string, unknown>;
    entities?: Record<string, unknown>;
  };
}

type KoaMiddleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void>;

interface ProviderConstructor {
  new (issuer: string, configuration: Record<string, unknown>): OidcProvider;
}

const DEFAULT_SCOPES = ['openid', 'profile', 'email', 'offline_access', 'repo', 'read:user'];
const ROUTES = {
  authorization: '/auth',
  token: '/token',
  revocation: '/token/revocation',
  introspection: '/token/introspection',
  userinfo: '/me',
  jwks: '/jwks',
};
const DAY = 24 * 60 * 60;

function defaultFaults(): TokenEndpointFaults {
  return { tokenStatus: null, retryAfterSeconds: null, delayMs: 0, invalidGrant: false, hang: false };
}

/**
 * oidc-provider ships no type declarations and this project may not add a `.d.ts` for it; importing through
 * a variable keeps the compiler from resolving the untyped module (under Jest swc turns it into `require`).
 */
async function loadProvider(): Promise<ProviderConstructor> {
  const specifier = 'oidc-provider';
  const mod = (await import(specifier)) as { default: ProviderConstructor };
  return mod.default;
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** RFC 6749 §2.3.1: client credentials are form-encoded before they go into Basic authentication. */
function basicAuth(clientId: string, clientSecret: string): string {
  const encode = (v: string) => encodeURIComponent(v).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${encode(clientId)}:${encode(clientSecret)}`).toString('base64')}`;
}

/**
 * Per-instance storage for oidc-provider's models, with expiry and the grant index that revocation and
 * refresh-token reuse detection need.
 */
function memoryAdapterFactory() {
  const store = new Map<string, { payload: Record<string, unknown>; expiresAt: number }>();
  const byGrant = new Map<string, Set<string>>();
  const byUid = new Map<string, string>();
  const byUserCode = new Map<string, string>();
  const get = (key: string) => {
    const entry = store.get(key);
    if (entry && entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry?.payload;
  };
  return (model: string) => {
    const key = (id: string) => `${model}:${id}`;
    return {
      async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number) {
        const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
        store.set(key(id), { payload, expiresAt });
        if (typeof payload.grantId === 'string') {
          const members = byGrant.get(payload.grantId) ?? new Set<string>();
          byGrant.set(payload.grantId, members.add(key(id)));
        }
        if (model === 'Session' && typeof payload.uid === 'string') byUid.set(payload.uid, id);
        if (typeof payload.userCode === 'string') byUserCode.set(payload.userCode, id);
      },
      async find(id: string) {
        return get(key(id));
      },
      async findByUid(uid: string) {
        const id = byUid.get(uid);
        return id === undefined ? undefined : get(key(id));
      },
      async findByUserCode(userCode: string) {
        const id = byUserCode.get(userCode);
        return id === undefined ? undefined : get(key(id));
      },
      async consume(id: string) {
        const payload = get(key(id));
        if (payload) payload.consumed = Math.floor(Date.now() / 1000);
      },
      async destroy(id: string) {
        store.delete(key(id));
      },
      async revokeByGrantId(grantId: string) {
        for (const member of byGrant.get(grantId) ?? []) store.delete(member);
        byGrant.delete(grantId);
      },
    };
  };
}

function interactionPage(uid: string, details: InteractionDetails): string {
  const scope = typeof details.params.scope === 'string' ? details.params.scope : '';
  const clientId = typeof details.params.client_id === 'string' ? details.params.client_id : '';
  const deny = `<form id="deny" method="post" action="/interaction/${uid}/abort"><button type="submit">Deny</button></form>`;
  const main =
    details.prompt.name === 'login'
      ? `<form id="login" method="post" action="/interaction/${uid}/login">` +
        `<input name="account" autocomplete="username" required><button type="submit">Sign in</button></form>`
      : `<form id="consent" method="post" action="/interaction/${uid}/confirm">` +
        `<p>${escapeHtml(clientId)} asks for: <span id="scope">${escapeHtml(scope)}</span></p>` +
        `<button type="submit">Allow</button></form>`;
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${details.prompt.name}</title></head><body>${main}${deny}</body></html>`;
}

/** The `<form id=... action=...>` elements of an interaction page, by id. */
function formsOf(html: string): Map<string, string> {
  const forms = new Map<string, string>();
  for (const [tag] of html.matchAll(/<form\b[^>]*>/g)) {
    const id = /\bid="([^"]*)"/.exec(tag)?.[1];
    const action = /\baction="([^"]*)"/.exec(tag)?.[1];
    if (id && action) forms.set(id, action.replace(/&amp;/g, '&'));
  }
  return forms;
}

/** A cookie jar for one browser session against one origin; paths are ignored (oidc-provider's names are unique). */
class CookieJar {
  private readonly cookies = new Map<string, string>();

  store(res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const expired = attrs.some((a) => {
        const [k, v = ''] = a.trim().split('=');
        const key = k.toLowerCase();
        return (key === 'max-age' && Number(v) <= 0) || (key === 'expires' && Date.parse(v) <= Date.now());
      });
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, pair.slice(eq + 1).trim());
    }
  }

  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

export async function startOAuthProvider(opts: TestOAuthProviderOptions): Promise<TestOAuthProvider> {
  const Provider = await loadProvider();
  const scopes = opts.scopes ?? DEFAULT_SCOPES;
  const users = opts.users ?? {};
  const accessTokenTtl = opts.accessTokenTtlSeconds ?? 3600;
  const issueRefreshTokens = opts.issueRefreshTokens ?? true;
  const pkceRequired = opts.pkceRequired ?? true;

  let listener: http.RequestListener = (_req, res) => res.writeHead(503).end();
  const server = http.createServer((req, res) => listener(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const issuer = `http://127.0.0.1:${port}`;

  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

  const clients = opts.clients.map((c) => ({
    client_id: c.client_id,
    ...(c.client_secret === undefined ? {} : { client_secret: c.client_secret }),
    redirect_uris: c.redirect_uris,
    token_endpoint_auth_method:
      c.token_endpoint_auth_method ?? (c.client_secret === undefined ? 'none' : 'client_secret_basic'),
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    ...(c.jwks ? { jwks: c.jwks } : {}),
  }));
  const authMethodOf = (clientId: string) =>
    clients.find((c) => c.client_id === clientId)?.token_endpoint_auth_method;

  // Defined here (oidc-provider prints a "you SHOULD change" notice for its defaults): any confidential client
  // may introspect, a public one only its own tokens; a client may revoke only its own tokens (others: 200, no-op).
  type PolicyClient = { clientId: string; clientAuthMethod: string };
  const introspectionPolicy = async (_ctx: unknown, client: PolicyClient, token: { clientId: string }) =>
    token.clientId === client.clientId || client.clientAuthMethod !== 'none';
  const revocationPolicy = async (_ctx: unknown, client: PolicyClient, token: { clientId: string }) =>
    token.clientId === client.clientId;

  const provider = new Provider(issuer, {
    adapter: memoryAdapterFactory(),
    clients,
    clientBasedCORS: () => false,
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    jwks: { keys: [signingKey] },
    scopes,
    claims: {
      acr: null,
      sid: null,
      auth_time: null,
      iss: null,
      openid: ['sub'],
      profile: ['name'],
      email: ['email', 'email_verified'],
    },
    async findAccount(_ctx: unknown, sub: string) {
      const user = users[sub] ?? {};
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            ...(user.name === undefined ? {} : { name: user.name }),
            ...(user.email === undefined ? {} : { email: user.email, email_verified: true }),
          };
        },
      };
    },
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true, allowedPolicy: introspectionPolicy },
      revocation: { enabled: true, allowedPolicy: revocationPolicy },
      resourceIndicators: { enabled: false },
      userinfo: { enabled: true },
    },
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    issueRefreshToken: async (
      _ctx: unknown,
      client: { grantTypeAllowed(type: string): boolean },
      code: { scopes: Set<string> },
    ) => issueRefreshTokens && client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
    pkce: { required: () => pkceRequired },
    rotateRefreshToken: opts.refreshTokenRotation ?? true,
    routes: ROUTES,
    renderError(ctx: KoaContext, out: Record<string, string>) {
      ctx.type = 'json';
      ctx.body = out;
    },
    ttl: {
      AccessToken: accessTokenTtl,
      AuthorizationCode: 60,
      ClientCredentials: accessTokenTtl,
      IdToken: 3600,
      Interaction: 600,
      RefreshToken: 365 * DAY,
      Session: 365 * DAY,
      Grant: 365 * DAY,
    },
  });

  const harness: TestOAuthProvider = {
    issuer,
    url: `${issuer}/`,
    hostPort: `127.0.0.1:${port}`,
    endpoints: {
      discovery: `${issuer}/.well-known/openid-configuration`,
      authorization: `${issuer}${ROUTES.authorization}`,
      token: `${issuer}${ROUTES.token}`,
      revocation: `${issuer}${ROUTES.revocation}`,
      introspection: `${issuer}${ROUTES.introspection}`,
      userinfo: `${issuer}${ROUTES.userinfo}`,
      jwks: `${issuer}${ROUTES.jwks}`,
    },
    provider,
    faults: defaultFaults(),
    tokenRequests: { authorization_code: 0, refresh_token: 0, total: 0 },
    revocations: 0,
    revokedTokenTypes: [],
    serverErrors: [],
    authorize,
    exchangeCode: (clientId, clientSecret, code, redirectUri, codeVerifier) =>
      tokenRequest(clientId, clientSecret, {
        grant_type: 'authorization_code',
        code,
        redirect_uri: redirectUri,
        ...(codeVerifier === undefined ? {} : { code_verifier: codeVerifier }),
      }),
    refresh: (clientId, clientSecret, refreshToken) =>
      tokenRequest(clientId, clientSecret, { grant_type: 'refresh_token', refresh_token: refreshToken }),
    reset() {
      // In place, so references a test took before stay live.
      Object.assign(harness.faults, defaultFaults());
      Object.assign(harness.tokenRequests, { authorization_code: 0, refresh_token: 0, total: 0 });
      harness.revocations = 0;
      harness.revokedTokenTypes.length = 0;
      harness.serverErrors.length = 0;
    },
    close,
  };

  const hanging = new Set<() => void>();

  function countTokenRequest(grantType: unknown): void {
    harness.tokenRequests.total++;
    if (grantType === 'authorization_code' || grantType === 'refresh_token')
      harness.tokenRequests[grantType]++;
  }

  function tokenFaultBody(status: number): { error: string; error_description: string } {
    const error = status === 429 || status === 503 ? 'temporarily_unavailable' : 'server_error';
    return { error, error_description: `injected fault: HTTP ${status}` };
  }

  async function tokenEndpoint(ctx: KoaContext, next: () => Promise<void>): Promise<void> {
    const faults = harness.faults;
    if (faults.delayMs > 0) await new Promise((r) => setTimeout(r, faults.delayMs));
    if (!faults.hang && faults.tokenStatus === null && !faults.invalidGrant) {
      await next();
      countTokenRequest(ctx.oidc?.params?.grant_type);
      return;
    }
    // A fault needs the grant type before oidc-provider runs, so the body is read here.
    const raw = await readBody(ctx.req);
    const grantType = new URLSearchParams(raw).get('grant_type');
    countTokenRequest(grantType);
    ctx.set('cache-control', 'no-store');
    if (faults.hang) {
      await new Promise<void>((resolve) => hanging.add(resolve));
      ctx.status = 503;
      return;
    }
    if (faults.tokenStatus !== null) {
      ctx.status = faults.tokenStatus;
      if (faults.retryAfterSeconds !== null) ctx.set('retry-after', String(faults.retryAfterSeconds));
      ctx.body = tokenFaultBody(faults.tokenStatus);
      return;
    }
    if (grantType === 'refresh_token') {
      ctx.status = 400;
      ctx.body = { error: 'invalid_grant', error_description: 'injected fault: grant revoked' };
      return;
    }
    // Another grant under the invalidGrant fault: hand oidc-provider a stream that replays the body read here
    // (its fallback for pre-parsed bodies works too, but warns). It reads only the body from ctx.req.
    ctx.req = Object.assign(Readable.from([Buffer.from(raw)], { objectMode: false }), {
      headers: ctx.req.headers,
      method: ctx.req.method,
      url: ctx.req.url,
    }) as unknown as http.IncomingMessage;
    await next();
  }

  async function interactions(ctx: KoaContext): Promise<void> {
    const [, , uid, action] = ctx.path.split('/');
    try {
      const details = await provider.interactionDetails(ctx.req, ctx.res);
      if (details.uid !== uid) throw new Error('interaction does not match its cookie');
      if (ctx.method === 'GET' && action === undefined) {
        ctx.type = 'html';
        ctx.body = interactionPage(uid, details);
        return;
      }
      if (ctx.method !== 'POST') throw new Error(`unexpected ${ctx.method} ${ctx.path}`);
      const form = new URLSearchParams(await readBody(ctx.req));
      let returnTo: string;
      if (action === 'abort') {
        returnTo = await provider.interactionResult(
          ctx.req,
          ctx.res,
          { error: 'access_denied', error_description: 'End-User aborted interaction' },
          { mergeWithLastSubmission: false },
        );
      } else if (action === 'login' && details.prompt.name === 'login') {
        const accountId = form.get('account');
        if (!accountId) throw new Error('account is required');
        returnTo = await provider.interactionResult(
          ctx.req,
          ctx.res,
          { login: { accountId } },
          { mergeWithLastSubmission: false },
        );
      } else if (action === 'confirm' && details.prompt.name === 'consent') {
        returnTo = await provider.interactionResult(ctx.req, ctx.res, {
          consent: { grantId: await grantAll(details) },
        });
      } else {
        throw new Error(`unexpected ${action ?? 'page'} for prompt ${details.prompt.name}`);
      }
      ctx.status = 303;
      ctx.set('location', returnTo);
      ctx.body = '';
    } catch (err) {
      ctx.status = 400;
      ctx.type = 'text';
      ctx.body = `interaction failed: ${(err as Error).message}`;
    }
  }

  /** Consent to everything the interaction found missing, as the user clicking "Allow" does. */
  async function grantAll(details: InteractionDetails): Promise<string> {
    const { Grant } = provider;
    const grant =
      (details.grantId ? await Grant.find(details.grantId) : undefined) ??
      new Grant({ accountId: details.session?.accountId ?? '', clientId: String(details.params.client_id) });
    const missingScope = details.prompt.details.missingOIDCScope;
    const missingClaims = details.prompt.details.missingOIDCClaims;
    if (Array.isArray(missingScope)) grant.addOIDCScope(missingScope.join(' '));
    if (Array.isArray(missingClaims)) grant.addOIDCClaims(missingClaims as string[]);
    return grant.save();
  }

  /** oidc-provider drops offline_access unless prompt has consent; add it, unless prompt=none forbids any. */
  function honourOfflineAccess(ctx: KoaContext): void {
    const query = new URLSearchParams(ctx.querystring);
    const prompts = (query.get('prompt') ?? '').split(' ').filter(Boolean);
    if (!(query.get('scope') ?? '').split(' ').includes('offline_access')) return;
    if (prompts.includes('none') || prompts.includes('consent')) return;
    query.set('prompt', [...prompts, 'consent'].join(' '));
    ctx.querystring = query.toString();
  }

  provider.use(async (ctx, next) => {
    if (ctx.path.startsWith('/interaction/')) return interactions(ctx);
    if (ctx.path === ROUTES.token && ctx.method === 'POST') return tokenEndpoint(ctx, next);
    if (ctx.path === ROUTES.authorization && ctx.method === 'GET') honourOfflineAccess(ctx);
    await next();
    if (ctx.path === ROUTES.revocation && ctx.method === 'POST' && ctx.status === 200) {
      const entities = ctx.oidc?.entities ?? {};
      harness.revocations++;
      harness.revokedTokenTypes.push(
        'RefreshToken' in entities
          ? 'refresh_token'
          : 'AccessToken' in entities
            ? 'access_token'
            : 'ClientCredentials' in entities
              ? 'client_credentials'
              : 'unknown',
      );
    }
  });
  provider.on('server_error', (_ctx: unknown, err: Error) => harness.serverErrors.push(err));
  listener = provider.callback();

  async function tokenRequest(
    clientId: string,
    clientSecret: string | undefined,
    params: Record<string, string>,
  ): Promise<RawTokenResponse> {
    const body = new URLSearchParams(params);
    const headers: Record<string, string> = {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
    };
    const method = authMethodOf(clientId) ?? (clientSecret === undefined ? 'none' : 'client_secret_basic');
    switch (method) {
      case 'client_secret_basic':
        headers.authorization = basicAuth(clientId, clientSecret ?? '');
        break;
      case 'client_secret_post':
        body.set('client_id', clientId);
        body.set('client_secret', clientSecret ?? '');
        break;
      case 'none':
        body.set('client_id', clientId);
        break;
      case 'private_key_jwt':
        throw new Error('the raw token helpers do not sign client assertions; use an OAuth client');
    }
    const res = await fetch(harness.endpoints.token, { method: 'POST', headers, body });
    const text = await res.text();
    return {
      status: res.status,
      headers: res.headers,
      body: text ? (JSON.parse(text) as RawTokenResponse['body']) : {},
    };
  }

  async function authorize(
    authorizationUrl: string,
    { account = 'alice', deny = false }: { account?: string; deny?: boolean } = {},
  ): Promise<{ redirectedTo: string }> {
    const jar = new CookieJar();
    let request: { url: string; form?: URLSearchParams } = { url: authorizationUrl };
    if (new URL(authorizationUrl).origin !== new URL(issuer).origin) {
      throw new Error(`${authorizationUrl} is not on this provider (${issuer})`);
    }
    for (let step = 0; step < 20; step++) {
      const target = new URL(request.url);
      // Leaving the provider means reaching the client's redirect_uri, with a code or an error.
      if (target.origin !== new URL(issuer).origin) return { redirectedTo: target.href };
      const res = await fetch(target, {
        method: request.form ? 'POST' : 'GET',
        redirect: 'manual',
        headers: {
          cookie: jar.header(),
          ...(request.form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        },
        body: request.form,
      });
      jar.store(res);
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        await res.body?.cancel();
        request = { url: new URL(location, target).href };
        continue;
      }
      const page = await res.text();
      const forms = formsOf(page);
      const login = forms.get('login');
      const consent = forms.get('consent');
      const abort = forms.get('deny');
      if (res.status !== 200 || !abort || (!login && !consent)) {
        throw new Error(
          `authorization stopped at ${target.href} with HTTP ${res.status}: ${page.slice(0, 500)}`,
        );
      }
      if (login) request = { url: new URL(login, target).href, form: new URLSearchParams({ account }) };
      else request = { url: new URL(deny ? abort : consent!, target).href, form: new URLSearchParams() };
    }
    throw new Error(`authorization did not reach a redirect_uri within 20 steps (last: ${request.url})`);
  }

  async function close(): Promise<void> {
    for (const release of hanging) release();
    hanging.clear();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  return harness;
}
