/**
 * The demo's OAuth provider: a local stand-in for a service such as GitHub or Google, where the user has an
 * account and grants the tenant's app access. It is oidc-provider (a certified OpenID Connect server) on
 * loopback: authorization code flow with PKCE, `iss` in the authorization response (RFC 9207), ID tokens,
 * refresh tokens for `offline_access`, revocation (RFC 7009) and userinfo, with its own sign-in page (any
 * name, no password) and consent page. Everything is kept in memory and is gone when the demo stops.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { closeServer, listen } from './loopback.js';

export interface DemoProviderOptions {
  port: number;
  /** The tenant's OAuth app as registered here (Custos holds the same id and secret). */
  client: { clientId: string; clientSecret: string; redirectUri: string; displayName: string };
  /** Prefilled on the sign-in page. */
  suggestedAccount: string;
  accessTokenTtlSeconds: number;
}

export interface DemoProvider {
  /** `http://127.0.0.1:<port>`, exactly as in `iss`. */
  issuer: string;
  /** `127.0.0.1:<port>`, for CUSTOS_OUTBOUND_ALLOW_HOSTS. */
  hostPort: string;
  endpoints: { authorization: string; token: string; revocation: string; userinfo: string; jwks: string };
  /** The scopes it knows, in words for its consent page. */
  scopes: Record<string, string>;
  close(): Promise<void>;
}

/** The scopes of the demo provider and what granting each one means, as its consent page says it. */
export const DEMO_SCOPES: Record<string, string> = {
  openid: 'Know your account name',
  profile: 'Read your profile (your name)',
  email: 'Read your email address',
  offline_access: 'Keep this access when you are not using it (a refresh token)',
  'files:read': 'Read your files',
};

const ROUTES = {
  authorization: '/auth',
  token: '/token',
  revocation: '/token/revocation',
  userinfo: '/me',
  jwks: '/jwks',
};

/** The parts of oidc-provider this module uses (the package ships no type declarations). */
interface Provider {
  callback(): http.RequestListener;
  use(middleware: (ctx: KoaContext, next: () => Promise<void>) => Promise<void>): unknown;
  interactionDetails(req: http.IncomingMessage, res: http.ServerResponse): Promise<Interaction>;
  interactionResult(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    result: Record<string, unknown>,
    options?: { mergeWithLastSubmission?: boolean },
  ): Promise<string>;
  Grant: {
    new (init: { accountId: string; clientId: string }): Grant;
    find(id: string): Promise<Grant | undefined>;
  };
}

interface Grant {
  addOIDCScope(scope: string): void;
  addOIDCClaims(claims: string[]): void;
  save(): Promise<string>;
}

interface Interaction {
  uid: string;
  prompt: { name: string; details: Record<string, unknown> };
  params: Record<string, unknown>;
  session?: { accountId?: string };
  grantId?: string;
}

interface KoaContext {
  method: string;
  path: string;
  req: http.IncomingMessage;
  res: http.ServerResponse;
  status: number;
  body: unknown;
  type: string;
  set(field: string, value: string): void;
}

type ProviderConstructor = new (issuer: string, configuration: Record<string, unknown>) => Provider;

/**
 * Loads oidc-provider. Imported through a variable so that the compiler does not look for its (missing)
 * types. On Node 20 it prints an "unsupported runtime" notice at import; it works there (the test suite runs
 * it on Node 20), and the notice would only puzzle someone trying the demo, so that one line is held back.
 */
async function loadProvider(): Promise<ProviderConstructor> {
  const specifier = 'oidc-provider';
  /* eslint-disable no-console -- holding back one line that oidc-provider writes with console.warn */
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes('Unsupported runtime')) return;
    warn(...args);
  };
  try {
    return ((await import(specifier)) as { default: ProviderConstructor }).default;
  } finally {
    console.warn = warn;
  }
  /* eslint-enable no-console */
}

export async function startOAuthProvider(opts: DemoProviderOptions): Promise<DemoProvider> {
  const Provider = await loadProvider();
  let listener: http.RequestListener = (_req, res) => res.writeHead(503).end();
  const server = http.createServer((req, res) => listener(req, res));
  await listen(server, opts.port);
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;

  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'demo-rs256', alg: 'RS256', use: 'sig' };
  const { clientId, clientSecret, redirectUri, displayName } = opts.client;
  const ownTokenOnly = async (_ctx: unknown, client: { clientId: string }, token: { clientId: string }) =>
    token.clientId === client.clientId;

  const provider = new Provider(issuer, {
    adapter: memoryAdapter(),
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        client_name: displayName,
        redirect_uris: [redirectUri],
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
      },
    ],
    clientBasedCORS: () => false,
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    jwks: { keys: [signingKey] },
    scopes: Object.keys(DEMO_SCOPES),
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
      return {
        accountId: sub,
        async claims() {
          return { sub, name: sub, email: `${sub}@demo-provider.example`, email_verified: true };
        },
      };
    },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true, allowedPolicy: ownTokenOnly },
      userinfo: { enabled: true },
      rpInitiatedLogout: { enabled: false },
    },
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    pkce: { required: () => true },
    routes: ROUTES,
    renderError(ctx: KoaContext, out: Record<string, string>) {
      ctx.type = 'html';
      ctx.body = page(
        'Something went wrong',
        `<p>${escapeHtml(out.error ?? 'error')}: ${escapeHtml(out.error_description ?? '')}</p>`,
      );
    },
    ttl: {
      AccessToken: opts.accessTokenTtlSeconds,
      AuthorizationCode: 60,
      ClientCredentials: opts.accessTokenTtlSeconds,
      IdToken: 3600,
      Interaction: 3600,
      RefreshToken: 30 * 24 * 3600,
      Session: 24 * 3600,
      Grant: 30 * 24 * 3600,
    },
  });

  async function interactions(ctx: KoaContext): Promise<void> {
    const [, , uid, action] = ctx.path.split('/');
    try {
      const details = await provider.interactionDetails(ctx.req, ctx.res);
      if (details.uid !== uid) throw new Error('this sign-in does not match your browser; start again');
      if (ctx.method === 'GET' && action === undefined) {
        ctx.type = 'html';
        ctx.body = interactionPage(details, displayName, opts.suggestedAccount);
        return;
      }
      if (ctx.method !== 'POST') throw new Error('unexpected request');
      const form = new URLSearchParams(await readBody(ctx.req));
      let result: Record<string, unknown>;
      if (action === 'abort') {
        result = { error: 'access_denied', error_description: 'The user declined' };
      } else if (action === 'login' && details.prompt.name === 'login') {
        const accountId = (form.get('account') ?? '').trim();
        if (!/^[A-Za-z0-9._@-]{1,64}$/.test(accountId)) {
          ctx.type = 'html';
          ctx.body = interactionPage(
            details,
            displayName,
            opts.suggestedAccount,
            'Use 1 to 64 letters, digits, or . _ @ -',
          );
          return;
        }
        result = { login: { accountId } };
      } else if (action === 'confirm' && details.prompt.name === 'consent') {
        result = { consent: { grantId: await grantAll(details) } };
      } else {
        throw new Error('this step is over; start again from your connect link');
      }
      const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
        mergeWithLastSubmission: action === 'confirm',
      });
      ctx.status = 303;
      ctx.set('location', returnTo);
      ctx.body = '';
    } catch (err) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = page('Something went wrong', `<p>${escapeHtml((err as Error).message)}</p>`);
    }
  }

  /** Grants what the interaction found missing, as the user's "Allow" says. */
  async function grantAll(details: Interaction): Promise<string> {
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

  provider.use(async (ctx, next) => {
    if (ctx.path.startsWith('/interaction/')) return interactions(ctx);
    await next();
  });
  listener = provider.callback();

  return {
    issuer,
    hostPort: `127.0.0.1:${port}`,
    endpoints: {
      authorization: `${issuer}${ROUTES.authorization}`,
      token: `${issuer}${ROUTES.token}`,
      revocation: `${issuer}${ROUTES.revocation}`,
      userinfo: `${issuer}${ROUTES.userinfo}`,
      jwks: `${issuer}${ROUTES.jwks}`,
    },
    scopes: DEMO_SCOPES,
    close: () => closeServer(server),
  };
}

function interactionPage(details: Interaction, appName: string, suggested: string, problem?: string): string {
  const uid = encodeURIComponent(details.uid);
  const deny =
    `<form method="post" action="/interaction/${uid}/abort">` +
    `<button type="submit" class="secondary">Cancel</button></form>`;
  if (details.prompt.name === 'login') {
    return page(
      'Sign in to Demo Provider',
      `<p>This local provider stands in for a service such as GitHub or Google. There is no password: ` +
        `type any account name.</p>` +
        `<form method="post" action="/interaction/${uid}/login">` +
        `<label for="account">Account name</label>` +
        `<input id="account" name="account" value="${escapeHtml(suggested)}" autocomplete="username" required autofocus>` +
        (problem ? `<p class="problem">${escapeHtml(problem)}</p>` : '') +
        `<button type="submit">Sign in</button></form>${deny}`,
    );
  }
  const scopes = (typeof details.params.scope === 'string' ? details.params.scope : '')
    .split(' ')
    .filter(Boolean);
  const items = scopes
    .map((s) => `<li>${escapeHtml(DEMO_SCOPES[s] ?? s)} <code>${escapeHtml(s)}</code></li>`)
    .join('');
  return page(
    'Allow access?',
    `<p><strong>${escapeHtml(appName)}</strong> asks to access your Demo Provider account ` +
      `<strong>${escapeHtml(details.session?.accountId ?? '')}</strong>:</p><ul>${items}</ul>` +
      `<form method="post" action="/interaction/${uid}/confirm"><button type="submit" autofocus>Allow</button></form>` +
      deny,
  );
}

function page(title: string, body: string): string {
  return (
    `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(title)}</title>` +
    `<style>body{font:16px/1.5 system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#1f2328}` +
    `header{font-weight:600;color:#6e40c9;margin-bottom:1rem}input{display:block;width:100%;box-sizing:border-box;` +
    `padding:.5rem;margin:.25rem 0 1rem;font:inherit}button{font:inherit;padding:.5rem 1.25rem;margin:.25rem 0;` +
    `background:#6e40c9;color:#fff;border:0;border-radius:6px;cursor:pointer}button.secondary{background:#eaeef2;` +
    `color:#1f2328}.problem{color:#cf222e}code{font-size:.85em;color:#57606a}</style></head>` +
    `<body><header>Demo Provider</header><h1>${escapeHtml(title)}</h1>${body}</body></html>`
  );
}

function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > 16_384) throw new Error('form too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * In-memory storage for oidc-provider's models, with expiry and the per-grant index that revocation and
 * refresh-token reuse detection need. (Its built-in one is process-wide and warns it is for development.)
 */
function memoryAdapter() {
  const store = new Map<string, { payload: Record<string, unknown>; expiresAt: number }>();
  const byGrant = new Map<string, Set<string>>();
  const byUid = new Map<string, string>();
  const get = (key: string) => {
    const entry = store.get(key);
    if (entry && entry.expiresAt <= Date.now()) store.delete(key);
    else return entry?.payload;
    return undefined;
  };
  return (model: string) => {
    const key = (id: string) => `${model}:${id}`;
    return {
      async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number) {
        const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
        store.set(key(id), { payload, expiresAt });
        if (typeof payload.grantId === 'string') {
          byGrant.set(payload.grantId, (byGrant.get(payload.grantId) ?? new Set<string>()).add(key(id)));
        }
        if (model === 'Session' && typeof payload.uid === 'string') byUid.set(payload.uid, id);
      },
      async find(id: string) {
        return get(key(id));
      },
      async findByUid(uid: string) {
        const id = byUid.get(uid);
        return id === undefined ? undefined : get(key(id));
      },
      async findByUserCode() {
        return undefined;
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
