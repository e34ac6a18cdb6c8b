/**
 * CustosClient: a user's own provider token from Custos's RFC 8693 token endpoint, cached briefly, one request
 * for concurrent identical asks; and the connect sessions Custos hands out when the user must connect first.
 */
import {
  cacheKey,
  DEFAULT_MAX_AGE_MS,
  DEFAULT_MAX_ENTRIES,
  DEFAULT_TTL_WITHOUT_EXPIRY_MS,
  freshUntil,
  subjectKey,
  TokenCache,
  unverifiedJwtExpiry,
  type CacheOptions,
} from './cache.js';
import { ClientCredentials, type PrivateKeyInput } from './credentials.js';
import { ConsentRequiredError, CustosError, type ConsentReason } from './errors.js';
import {
  DEFAULT_RETRY,
  isRetryable,
  NO_RETRY,
  parseRetryAfter,
  sleep,
  type RetryEvent,
  type RetryOptions,
  type RetryPolicy,
} from './retry.js';
import { field, serverText, Transport, type Answer } from './transport.js';

export interface CustosClientOptions {
  /** Custos's base URL, e.g. `https://custos.example.com` (a path prefix is kept). */
  url: string;
  clientId: string;
  /** client_secret_basic. Exactly one of clientSecret and privateKey. */
  clientSecret?: string;
  /** private_key_jwt: the key whose public half is registered with the connector. */
  privateKey?: PrivateKeyInput;
  /** The `kid` of client assertions (default: the JWK's `kid`, else none). */
  keyId?: string;
  /** The assertions' JWS algorithm (default: from the key; RS256 for RSA keys). */
  algorithm?: string;
  /**
   * Custos's public URL (its CUSTOS_PUBLIC_URL) when `url` is another way in, e.g. an internal address:
   * client assertions name its token endpoint, and connect session URIs under it are read through `url`.
   * Default: `url`.
   */
  publicUrl?: string;
  /** Per HTTP attempt. Default 10 s. */
  timeoutMs?: number;
  /** On network errors, timeouts, 429 and 502-504, honouring `Retry-After`; `false`: one attempt only. */
  retry?: RetryOptions | false;
  /** Called before each wait between attempts (for logs or metrics; it never sees credentials). */
  onRetry?: (event: RetryEvent) => void;
  /** The in-memory token cache (on by default); `false` asks Custos every time. */
  cache?: CacheOptions | false;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
}

export interface TokenRequest {
  /** The provider's key in Custos, e.g. `github` (the token request's `audience`). */
  provider: string;
  /** Scopes the token must carry: space-separated, or a list. */
  scope?: string | string[];
  /** The user's token from the tenant's identity provider (a JWT). Exactly one of subjectToken and userId. */
  subjectToken?: string;
  /** The user's id, for connectors Custos trusts to assert one. */
  userId?: string;
  signal?: AbortSignal;
}

export interface AccessToken {
  accessToken: string;
  /** `Bearer`, or `N_A` for an API key. */
  tokenType: string;
  /** RFC 8693's issued_token_type: an access token, or Custos's API-key type. */
  issuedTokenType: string;
  /** When the token expires (from `expires_in`); absent when Custos does not know (API keys). */
  expiresAt?: Date;
  /** The scopes the token carries (what Custos says was granted, else what was asked for). */
  scopes: string[];
}

export type ConnectSessionStatus = 'pending' | 'completed' | 'failed' | 'expired';

export interface ConnectSession {
  id: string;
  userId: string;
  provider: string;
  scopes: string[];
  status: ConnectSessionStatus;
  createdAt: Date;
  expiresAt: Date;
}

export interface WaitOptions {
  signal?: AbortSignal;
  /** Between reads of the session. Default 2 s. */
  intervalMs?: number;
}

export interface ForgetFilter {
  provider?: string;
  subjectToken?: string;
  userId?: string;
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const USER_ID_TOKEN_TYPE = 'urn:custos:params:oauth:token-type:user-id';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_POLL_INTERVAL_MS = 2_000;
const MAX_TIMER_MS = 2 ** 31 - 1;
const CONSENT_REASONS: readonly ConsentReason[] = [
  'not_connected',
  'needs_reauth',
  'expired',
  'insufficient_scope',
];
const SESSION_STATUSES: readonly ConnectSessionStatus[] = ['pending', 'completed', 'failed', 'expired'];

/** RFC 6749 §3.3 scope-token. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]{1,256}$/;
/** A compact JWS: header.payload.signature. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const CONTROL_OR_LONE_SURROGATE =
  // eslint-disable-next-line no-control-regex
  /[\u0000-\u001f\u007f-\u009f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
/** A connect session's path below Custos's base path. */
const SESSION_PATH = /^\/v1\/tenants\/[A-Za-z0-9-]{1,64}\/connect\/sessions\/[A-Za-z0-9-]{1,64}$/;

const invalid = (message: string) => new CustosError('invalid_argument', message);

/** A printable, non-empty string of at most `max` characters (else an invalid_argument naming `name`). */
function text(value: unknown, name: string, max: number): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max) {
    throw invalid(`${name} must be a non-empty string of at most ${max} characters`);
  }
  if (CONTROL_OR_LONE_SURROGATE.test(value)) throw invalid(`${name} contains control characters`);
  return value;
}

/** An http(s) URL without credentials, query or fragment, as origin + path without a trailing slash. */
function baseUrl(value: unknown, name: string): { origin: string; path: string } {
  let u: URL;
  try {
    u = new URL(text(value, name, 2048));
  } catch (err) {
    if (err instanceof CustosError) throw err;
    throw invalid(`${name} must be an absolute URL`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw invalid(`${name} must be an http(s) URL`);
  if (u.username || u.password) throw invalid(`${name} must not carry credentials`);
  if (u.search || u.hash) throw invalid(`${name} must not have a query or fragment`);
  return { origin: u.origin, path: u.pathname.replace(/\/+$/, '') };
}

function positive(value: unknown, name: string, { integer = false, min = 0 } = {}): number {
  if (
    typeof value !== 'number' ||
    !Number.isFinite(value) ||
    value < min ||
    value > MAX_TIMER_MS ||
    (integer && !Number.isInteger(value))
  ) {
    throw invalid(`${name} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${MAX_TIMER_MS}`);
  }
  return value;
}

function normaliseScopes(scope: unknown): string[] {
  if (scope === undefined) return [];
  let list: unknown[];
  if (typeof scope === 'string') list = scope.split(' ').filter((s) => s.length > 0);
  else if (Array.isArray(scope)) list = scope;
  else throw invalid('scope must be a space-separated string or a list of strings');
  if (list.length > 100) throw invalid('scope has more than 100 entries');
  for (const s of list) {
    if (typeof s !== 'string' || !SCOPE_TOKEN.test(s)) {
      throw invalid('scope entries must be OAuth scope tokens (printable ASCII, no spaces or quotes)');
    }
  }
  return [...new Set(list as string[])];
}

function retryPolicy(retry: RetryOptions | false | undefined): RetryPolicy {
  if (retry === false) return NO_RETRY;
  if (retry === undefined) return DEFAULT_RETRY;
  if (typeof retry !== 'object' || retry === null) throw invalid('retry must be an object or false');
  const {
    attempts = DEFAULT_RETRY.attempts,
    baseDelayMs = DEFAULT_RETRY.baseDelayMs,
    maxDelayMs = DEFAULT_RETRY.maxDelayMs,
  } = retry;
  return {
    attempts: positive(attempts, 'retry.attempts', { integer: true, min: 1 }),
    baseDelayMs: positive(baseDelayMs, 'retry.baseDelayMs'),
    maxDelayMs: positive(maxDelayMs, 'retry.maxDelayMs'),
  };
}

function cacheSettings(cache: CacheOptions | false | undefined): Required<CacheOptions> | null {
  if (cache === false) return null;
  if (cache !== undefined && (typeof cache !== 'object' || cache === null)) {
    throw invalid('cache must be an object or false');
  }
  const { maxEntries = DEFAULT_MAX_ENTRIES, maxAgeMs = DEFAULT_MAX_AGE_MS } = cache ?? {};
  return {
    maxEntries: positive(maxEntries, 'cache.maxEntries', { integer: true, min: 1 }),
    maxAgeMs: positive(maxAgeMs, 'cache.maxAgeMs', { min: 1 }),
  };
}

interface NormalisedRequest {
  provider: string;
  scopes: string[];
  subject: { subjectToken: string } | { userId: string };
}

function normaliseRequest(request: TokenRequest): NormalisedRequest {
  if (typeof request !== 'object' || request === null) throw invalid('The token request must be an object');
  const provider = text(request.provider, 'provider', 64);
  if (/\s/.test(provider)) throw invalid('provider must be a provider key, without spaces');
  const scopes = normaliseScopes(request.scope);
  const { subjectToken, userId } = request;
  if ((subjectToken === undefined) === (userId === undefined)) {
    throw invalid('Give exactly one of subjectToken and userId');
  }
  if (request.signal !== undefined && !(request.signal instanceof AbortSignal)) {
    throw invalid('signal must be an AbortSignal');
  }
  if (subjectToken !== undefined) {
    if (typeof subjectToken !== 'string' || !COMPACT_JWS.test(subjectToken)) {
      // The token itself never goes into the message.
      throw invalid('subjectToken must be a JWT (compact serialisation)');
    }
    return { provider, scopes, subject: { subjectToken } };
  }
  return { provider, scopes, subject: { userId: text(userId, 'userId', 255) } };
}

interface Flight {
  key: string;
  promise: Promise<AccessToken>;
  controller: AbortController;
  waiters: number;
}

const copy = (t: AccessToken): AccessToken => ({
  accessToken: t.accessToken,
  tokenType: t.tokenType,
  issuedTokenType: t.issuedTokenType,
  ...(t.expiresAt && { expiresAt: new Date(t.expiresAt.getTime()) }),
  scopes: [...t.scopes],
});

export class CustosClient {
  readonly #base: string;
  readonly #origins: { origin: string; path: string }[];
  readonly #tokenEndpoint: string;
  /** The audience of client assertions: Custos's token endpoint under its public URL. */
  readonly #audience: string;
  readonly #credentials: ClientCredentials;
  readonly #transport: Transport;
  readonly #cache: TokenCache<AccessToken> | null;
  readonly #maxAgeMs: number;
  readonly #inflight = new Map<string, Flight>();
  /** Bumped by forget(): a request that started before it does not fill the cache. */
  #epoch = 0;

  constructor(options: CustosClientOptions) {
    if (typeof options !== 'object' || options === null) throw invalid('options must be an object');
    const base = baseUrl(options.url, 'url');
    const pub = options.publicUrl === undefined ? base : baseUrl(options.publicUrl, 'publicUrl');
    this.#base = base.origin + base.path;
    this.#origins = [base, pub];
    this.#tokenEndpoint = `${this.#base}/oauth/token`;
    this.#audience = `${pub.origin}${pub.path}/oauth/token`;
    this.#credentials = new ClientCredentials({
      clientId: text(options.clientId, 'clientId', 255),
      clientSecret: options.clientSecret,
      privateKey: options.privateKey,
      keyId: options.keyId,
      algorithm: options.algorithm,
    });

    const timeoutMs =
      options.timeoutMs === undefined
        ? DEFAULT_TIMEOUT_MS
        : positive(options.timeoutMs, 'timeoutMs', { min: 1 });
    if (options.onRetry !== undefined && typeof options.onRetry !== 'function') {
      throw invalid('onRetry must be a function');
    }
    if (options.fetch !== undefined && typeof options.fetch !== 'function') {
      throw invalid('fetch must be a function');
    }
    this.#transport = new Transport({
      fetch: options.fetch ?? ((input, init) => fetch(input, init)),
      timeoutMs,
      retry: retryPolicy(options.retry),
      onRetry: options.onRetry,
    });
    const cache = cacheSettings(options.cache);
    this.#cache = cache && new TokenCache<AccessToken>(cache.maxEntries);
    this.#maxAgeMs = cache ? cache.maxAgeMs : 0;
  }

  /**
   * The user's access token (or API key) for `provider`. Throws `ConsentRequiredError` when the user must
   * connect first, `CustosError` for every other refusal or failure, and the signal's reason on abort.
   */
  async getAccessToken(request: TokenRequest): Promise<AccessToken> {
    const req = normaliseRequest(request);
    const { signal } = request;
    signal?.throwIfAborted();
    const subject = subjectKey(req.subject);
    const key = cacheKey(subject, req.provider, req.scopes);
    const hit = this.#cache?.get(key);
    if (hit) return copy(hit);
    let flight = this.#inflight.get(key);
    if (!flight) flight = this.#start(key, subject, req);
    return copy(await this.#join(flight, signal));
  }

  /** Reads a connect session (from a ConsentRequiredError's `sessionUri`) with this connector's credentials. */
  async getConnectSession(sessionUri: string, signal?: AbortSignal): Promise<ConnectSession> {
    const url = this.#sessionUrl(sessionUri);
    signal?.throwIfAborted();
    return this.#transport.call(
      async () => ({
        url,
        init: {
          method: 'GET',
          headers: {
            accept: 'application/json',
            authorization: await this.#credentials.authorization(this.#audience),
          },
        },
      }),
      readSession,
      signal,
    );
  }

  /**
   * Reads the session every `intervalMs` until it is no longer pending: completed, failed, or expired (also
   * when its expiry passes while it is still pending). Passing failures (network, 503, ...) between reads
   * do not end the wait; an abort does, with the signal's reason.
   */
  async waitForConnectSession(sessionUri: string, opts: WaitOptions = {}): Promise<ConnectSession> {
    this.#sessionUrl(sessionUri);
    const { signal } = opts;
    const intervalMs =
      opts.intervalMs === undefined
        ? DEFAULT_POLL_INTERVAL_MS
        : positive(opts.intervalMs, 'intervalMs', { min: 1 });
    let last: ConnectSession | undefined;
    for (;;) {
      try {
        last = await this.getConnectSession(sessionUri, signal);
        if (last.status !== 'pending') return last;
      } catch (err) {
        if (signal?.aborted || !last || !isRetryable(err)) throw err;
      }
      const left = last.expiresAt.getTime() - Date.now();
      if (left <= 0) return { ...last, status: 'expired' };
      await sleep(Math.min(intervalMs, left), signal);
    }
  }

  /** Drops cached tokens: all of them, or those matching every field given. */
  forget(filter: ForgetFilter = {}): void {
    const f: { subject?: string; provider?: string } = {};
    if (filter.subjectToken !== undefined && filter.userId !== undefined) {
      throw invalid('Give at most one of subjectToken and userId');
    }
    if (filter.subjectToken !== undefined)
      f.subject = subjectKey({ subjectToken: String(filter.subjectToken) });
    if (filter.userId !== undefined) f.subject = subjectKey({ userId: String(filter.userId) });
    if (filter.provider !== undefined) f.provider = String(filter.provider);
    this.#epoch++;
    this.#cache?.forget(f);
  }

  #start(key: string, subject: string, req: NormalisedRequest): Flight {
    const controller = new AbortController();
    const epoch = this.#epoch;
    const promise = this.#transport
      .call(
        () => this.#tokenRequest(req),
        (answer) => this.#readToken(answer, req),
        controller.signal,
      )
      .then(({ token, fresh }) => {
        if (this.#cache && epoch === this.#epoch)
          this.#cache.set(key, token, { subject, provider: req.provider, freshUntil: fresh });
        return token;
      })
      .finally(() => {
        if (this.#inflight.get(key) === flight) this.#inflight.delete(key);
      });
    // Every waiter may have given up; the outcome then has no one to go to.
    promise.catch(() => undefined);
    const flight: Flight = { key, promise, controller, waiters: 0 };
    this.#inflight.set(key, flight);
    return flight;
  }

  /** Waits for a shared request; when the last waiter aborts, the request is aborted too. */
  #join(flight: Flight, signal: AbortSignal | undefined): Promise<AccessToken> {
    flight.waiters++;
    return new Promise<AccessToken>((resolve, reject) => {
      const onAbort = () => {
        flight.waiters--;
        if (flight.waiters === 0) {
          // Abandoned: later callers start afresh instead of joining a request that is being aborted.
          if (this.#inflight.get(flight.key) === flight) this.#inflight.delete(flight.key);
          flight.controller.abort(signal!.reason);
        }
        reject(signal!.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      flight.promise.then(
        (token) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(token);
        },
        (err: Error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      );
    });
  }

  async #tokenRequest(req: NormalisedRequest) {
    const auth = await this.#credentials.forTokenEndpoint(this.#audience);
    const form = new URLSearchParams({ grant_type: TOKEN_EXCHANGE });
    if ('subjectToken' in req.subject) {
      form.set('subject_token', req.subject.subjectToken);
      form.set('subject_token_type', JWT_TOKEN_TYPE);
    } else {
      form.set('subject_token', req.subject.userId);
      form.set('subject_token_type', USER_ID_TOKEN_TYPE);
    }
    form.set('audience', req.provider);
    if (req.scopes.length > 0) form.set('scope', req.scopes.join(' '));
    for (const [k, v] of Object.entries(auth.params)) form.set(k, v);
    return {
      url: this.#tokenEndpoint,
      init: {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
          ...auth.headers,
        },
        body: form.toString(),
      },
    };
  }

  #readToken(answer: Answer, req: NormalisedRequest): { token: AccessToken; fresh: number } {
    const { status, body, sentAt } = answer;
    if (status === 200) {
      const accessToken = field(body, 'access_token');
      const tokenType = field(body, 'token_type');
      const issuedTokenType = field(body, 'issued_token_type') ?? ACCESS_TOKEN_TYPE;
      const expiresIn = field(body, 'expires_in');
      const scope = field(body, 'scope');
      if (
        typeof accessToken !== 'string' ||
        accessToken.length === 0 ||
        typeof tokenType !== 'string' ||
        typeof issuedTokenType !== 'string' ||
        (expiresIn !== undefined &&
          (typeof expiresIn !== 'number' || !Number.isFinite(expiresIn) || expiresIn < 0)) ||
        (scope !== undefined && typeof scope !== 'string')
      ) {
        throw new CustosError(
          'invalid_response',
          'Custos answered 200 without a well-formed token response',
          { status },
        );
      }
      const token: AccessToken = {
        accessToken,
        tokenType,
        issuedTokenType,
        ...(expiresIn !== undefined && { expiresAt: new Date(sentAt + expiresIn * 1000) }),
        scopes: scope !== undefined ? scope.split(' ').filter((s) => s.length > 0) : [...req.scopes],
      };
      const fresh = freshUntil({
        sentAt,
        ...(expiresIn !== undefined && { expiresInSeconds: expiresIn }),
        ...('subjectToken' in req.subject && {
          subjectExpiresAt: unverifiedJwtExpiry(req.subject.subjectToken),
        }),
        maxAgeMs: this.#maxAgeMs,
        ttlWithoutExpiryMs: DEFAULT_TTL_WITHOUT_EXPIRY_MS,
      });
      return { token, fresh };
    }
    const error = field(body, 'error');
    if (typeof error !== 'string' || error.length === 0) {
      throw new CustosError('invalid_response', `Custos answered HTTP ${status} without an OAuth error`, {
        status,
        ...retryAfterOf(answer),
      });
    }
    const description = serverText(field(body, 'error_description'));
    if (error === 'consent_required') return this.#consentRequired(answer, req, description);
    throw new CustosError(
      safeCode(error),
      description ? `${safeCode(error)}: ${description}` : safeCode(error),
      {
        status,
        ...retryAfterOf(answer),
      },
    );
  }

  #consentRequired(answer: Answer, req: NormalisedRequest, description: string | undefined): never {
    const { body, sentAt, status } = answer;
    const connectUri = field(body, 'connect_uri');
    const expiresIn = field(body, 'expires_in');
    const sessionId = field(body, 'connect_session_id');
    const sessionUri = field(body, 'connect_session_uri');
    const reason = field(body, 'consent_reason');
    if (
      !isHttpUrl(connectUri) ||
      typeof expiresIn !== 'number' ||
      !Number.isFinite(expiresIn) ||
      (sessionId !== undefined && typeof sessionId !== 'string') ||
      (sessionUri !== undefined && !isHttpUrl(sessionUri))
    ) {
      throw new CustosError(
        'invalid_response',
        'Custos answered consent_required without a usable connect link',
        {
          status,
        },
      );
    }
    throw new ConsentRequiredError({
      message: description ?? `The user must connect ${req.provider}`,
      provider: req.provider,
      scopes: [...req.scopes],
      connectUri,
      expiresAt: new Date(sentAt + Math.max(0, expiresIn) * 1000),
      sessionId: sessionId ?? '',
      sessionUri: sessionUri ?? '',
      reason: CONSENT_REASONS.includes(reason as ConsentReason) ? (reason as ConsentReason) : 'not_connected',
    });
  }

  /**
   * The URL to read a connect session at: only a session path under this Custos (its `url` or `publicUrl`),
   * read through `url`. Anything else is refused before credentials are sent anywhere.
   */
  #sessionUrl(sessionUri: unknown): string {
    if (typeof sessionUri !== 'string' || sessionUri.length === 0 || sessionUri.length > 2048) {
      throw invalid('sessionUri must be a connect session URI from Custos');
    }
    let u: URL;
    try {
      u = new URL(sessionUri);
    } catch {
      throw invalid('sessionUri must be an absolute URL');
    }
    if (!u.username && !u.password && !u.search && !u.hash) {
      for (const { origin, path } of this.#origins) {
        if (u.origin !== origin || !u.pathname.startsWith(path + '/')) continue;
        const rest = u.pathname.slice(path.length);
        if (SESSION_PATH.test(rest)) return this.#base + rest;
      }
    }
    throw invalid(`sessionUri is not a connect session of the Custos at ${this.#origins[0].origin}`);
  }
}

function readSession(answer: Answer): ConnectSession {
  const { status, body } = answer;
  if (status !== 200) {
    const error = field(body, 'error');
    const message = serverText(field(body, 'message')) ?? serverText(field(body, 'error_description'));
    if (typeof error === 'string' && error.length > 0) {
      throw new CustosError(safeCode(error), message ? `${safeCode(error)}: ${message}` : safeCode(error), {
        status,
        ...retryAfterOf(answer),
      });
    }
    throw new CustosError('invalid_response', `Custos answered HTTP ${status} without an error code`, {
      status,
      ...retryAfterOf(answer),
    });
  }
  const id = field(body, 'id');
  const userId = field(body, 'userId');
  const provider = field(body, 'provider');
  const scopes = field(body, 'scopes');
  const sessionStatus = field(body, 'status');
  const createdAt = dateOf(field(body, 'createdAt'));
  const expiresAt = dateOf(field(body, 'expiresAt'));
  if (
    typeof id !== 'string' ||
    typeof userId !== 'string' ||
    typeof provider !== 'string' ||
    !Array.isArray(scopes) ||
    !scopes.every((s) => typeof s === 'string') ||
    !SESSION_STATUSES.includes(sessionStatus as ConnectSessionStatus) ||
    !createdAt ||
    !expiresAt
  ) {
    throw new CustosError('invalid_response', 'Custos answered 200 without a well-formed connect session', {
      status,
    });
  }
  return {
    id,
    userId,
    provider,
    scopes,
    status: sessionStatus as ConnectSessionStatus,
    createdAt,
    expiresAt,
  };
}

function dateOf(value: unknown): Date | undefined {
  if (typeof value !== 'string') return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : new Date(ms);
}

function isHttpUrl(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  try {
    const u = new URL(value);
    return u.protocol === 'https:' || u.protocol === 'http:';
  } catch {
    return false;
  }
}

/** An error code as Custos sends it (RFC 6749: printable ASCII), else a stand-in. */
function safeCode(code: string): string {
  return /^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$/.test(code) ? code : 'invalid_response';
}

function retryAfterOf(answer: Answer): { retryAfterSeconds?: number } {
  const seconds = parseRetryAfter(answer.headers.get('retry-after'));
  return seconds === undefined ? {} : { retryAfterSeconds: seconds };
}

/**
 * One token, without keeping a client: each call makes a new client, so nothing is cached between calls.
 * A long-running connector keeps one `CustosClient` instead.
 */
export async function getAccessToken(options: CustosClientOptions & TokenRequest): Promise<AccessToken> {
  if (typeof options !== 'object' || options === null) throw invalid('options must be an object');
  const { provider, scope, subjectToken, userId, signal, ...clientOptions } = options;
  const client = new CustosClient({ ...clientOptions, cache: false });
  return client.getAccessToken({ provider, scope, subjectToken, userId, signal });
}
