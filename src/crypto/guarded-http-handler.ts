/**
 * The transports of the key-backend clients (the AWS SDK's Smithy request handler and node-vault's
 * request-promise hook), both sending through the one SSRF-guarded OutboundHttpClient: checked addresses on the
 * socket actually connected, a deadline, a bounded response, and no redirect ever followed. A 3xx is a failure
 * and nothing is sent to its Location: a tenant's Vault token or an AWS signature must not travel to wherever a
 * key backend (or whoever answers in its place) points.
 */
import type { HttpHandlerOptions, HttpRequest, HttpResponse } from '@smithy/types';
import { CustosException } from '../common/errors.js';
import type { OutboundHttpClient, OutboundResponse } from '../common/outbound-http.js';

export type TransportFailureReason =
  /** A 3xx answer: never followed. */
  | 'redirect'
  /** The SSRF guard refused the address (or the URL). */
  | 'refused'
  /** No answer within the deadline. */
  | 'timeout'
  /** No connection, a reset, or DNS that does not resolve. */
  | 'unreachable'
  /** An answer too large, or a request that could not be sent as given. */
  | 'invalid';

/** What exactly went wrong below the protocol, so that a message can say what to check. */
export type ConnectionFailure =
  /** The host name does not resolve (or the resolver failed). */
  | 'dns'
  /** Nothing listens there (connection refused). */
  | 'refused'
  /** The connection was reset or closed before an answer. */
  | 'reset'
  /** No route to the host or network. */
  | 'no_route'
  /** No answer within the deadline (a silent network, a firewall dropping packets, a hung server). */
  | 'timeout';

/** A failure below the key-backend protocol; messages name at most scheme://host:port. */
export class KeyBackendTransportError extends Error {
  override readonly name = 'KeyBackendTransportError';
  /** Read by the AWS SDK's retry strategy: only a failed connection is worth a second attempt. */
  readonly $retryable?: { throttling: boolean };

  constructor(
    readonly reason: TransportFailureReason,
    message: string,
    /** scheme://host[:port] of the request that failed (never a path, query or credentials). */
    readonly origin?: string,
    readonly connection?: ConnectionFailure,
  ) {
    super(message);
    if (reason === 'unreachable') this.$retryable = { throttling: false };
  }
}

/** Node's socket error codes, by what they mean for someone checking a network path. */
const CONNECTION_FAILURES: Record<string, ConnectionFailure> = {
  ECONNREFUSED: 'refused',
  ECONNRESET: 'reset',
  EPIPE: 'reset',
  ECONNABORTED: 'reset',
  EHOSTUNREACH: 'no_route',
  ENETUNREACH: 'no_route',
  EHOSTDOWN: 'no_route',
  ENETDOWN: 'no_route',
  ETIMEDOUT: 'timeout',
  ENOTFOUND: 'dns',
  EAI_AGAIN: 'dns',
};

/** The Node error code of a failure, also when it is the cause of the error given. */
function socketErrorCode(error: unknown): string | undefined {
  for (let current = error, depth = 0; depth < 4 && typeof current === 'object' && current; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && code in CONNECTION_FAILURES) return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

const REDIRECT = (status: number) => status >= 300 && status < 400;

function abortError(): Error {
  const error = new Error('The request was aborted');
  error.name = 'AbortError';
  return error;
}

/** Rejects as soon as `signal` aborts (the request underneath still ends at its own deadline). */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  // Smithy's own (deprecated) signal type has no listeners: the request's deadline still bounds it.
  if (!signal || typeof signal.addEventListener !== 'function') return promise;
  if (signal.aborted) return Promise.reject(abortError());
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError());
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

function translate(error: unknown, origin: string): unknown {
  if (!(error instanceof CustosException)) return error;
  if (error.code === 'outbound_url_refused') {
    return new KeyBackendTransportError('refused', error.message, origin);
  }
  if (error.code === 'outbound_request_failed') {
    const reason = error.details?.reason;
    if (reason === 'timeout')
      return new KeyBackendTransportError('timeout', error.message, origin, 'timeout');
    if (reason === 'dns_resolution_failed') {
      return new KeyBackendTransportError('unreachable', error.message, origin, 'dns');
    }
    if (reason === 'connection_failed') {
      const code = socketErrorCode(error.cause);
      const connection = code === undefined ? undefined : CONNECTION_FAILURES[code];
      return new KeyBackendTransportError(
        connection === 'timeout' ? 'timeout' : 'unreachable',
        error.message,
        origin,
        connection,
      );
    }
    return new KeyBackendTransportError('invalid', error.message, origin);
  }
  return error;
}

/** scheme://host[:port] of a URL, the only part of it a message may carry. */
export function originOf(url: string): string | undefined {
  try {
    const origin = new URL(url).origin;
    return origin === 'null' ? undefined : origin;
  } catch {
    return undefined;
  }
}

/**
 * One exchange through the guarded client, redirects refused. Failures are KeyBackendTransportError (or an
 * AbortError when `signal` fires first).
 */
export async function sendGuarded(
  http: OutboundHttpClient,
  url: string,
  request: { method: string; headers: Record<string, string>; body?: string | Buffer; timeoutMs: number },
  signal?: AbortSignal,
): Promise<OutboundResponse> {
  let response: OutboundResponse;
  const origin = originOf(url) ?? 'the key backend';
  try {
    response = await raceAbort(
      http.request(url, {
        method: request.method,
        headers: request.headers,
        ...(request.body === undefined ? {} : { body: request.body }),
        timeoutMs: request.timeoutMs,
        followRedirects: false,
      }),
      signal,
    );
  } catch (error) {
    throw translate(error, origin);
  }
  if (REDIRECT(response.status)) {
    throw new KeyBackendTransportError(
      'redirect',
      `${origin} answered with a redirect (HTTP ${response.status}), which is not followed`,
      origin,
    );
  }
  return response;
}

function toBody(body: unknown): string | Buffer | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string' || Buffer.isBuffer(body)) return body;
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  // Streaming uploads are never used by KMS or STS calls.
  throw new KeyBackendTransportError('invalid', 'A streaming request body is not supported');
}

function queryString(query: HttpRequest['query']): string {
  const parts: string[] = [];
  for (const [name, value] of Object.entries(query ?? {})) {
    const key = encodeRfc3986(name);
    if (value === null) parts.push(key);
    else for (const v of Array.isArray(value) ? value : [value]) parts.push(`${key}=${encodeRfc3986(v)}`);
  }
  return parts.length === 0 ? '' : `?${parts.join('&')}`;
}

function encodeRfc3986(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function flatHeaders(headers: OutboundResponse['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) out[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

/**
 * A Smithy HttpHandler (the AWS SDK's `requestHandler`) sending through the guarded client. Honours the SDK's
 * abort signal and request timeout, bounded by `timeoutMs`.
 */
export class GuardedHttpHandler {
  readonly metadata = { handlerProtocol: 'http/1.1' };

  constructor(
    private readonly http: OutboundHttpClient,
    private readonly timeoutMs: number,
  ) {}

  async handle(request: HttpRequest, options: HttpHandlerOptions = {}): Promise<{ response: HttpResponse }> {
    const host = request.hostname.includes(':') ? `[${request.hostname}]` : request.hostname;
    const url = `${request.protocol}//${host}${request.port ? `:${request.port}` : ''}${request.path}${queryString(request.query)}`;
    const timeoutMs = Math.min(this.timeoutMs, options.requestTimeout || this.timeoutMs);
    const response = await sendGuarded(
      this.http,
      url,
      { method: request.method, headers: { ...request.headers }, body: toBody(request.body), timeoutMs },
      options.abortSignal as AbortSignal | undefined,
    );
    return {
      response: { statusCode: response.status, headers: flatHeaders(response.headers), body: response.body },
    };
  }

  updateHttpClientConfig(): void {
    // Nothing to configure: the guarded client's settings are the operator's.
  }

  httpHandlerConfigs(): Record<string, never> {
    return {};
  }

  destroy(): void {
    // The guarded client is shared; its sockets outlive any one key backend.
  }
}

/** What node-vault hands its `request-promise` hook for each call. */
interface VaultRequestOptions {
  method?: string;
  uri: string;
  headers?: Record<string, string>;
  json?: unknown;
}

/** What node-vault expects back from it. */
export interface VaultTransportResponse {
  statusCode: number;
  body: unknown;
  request: { path: string };
}

export interface RequestPromiseLike {
  defaults(
    rpDefaults: Record<string, unknown>,
  ): (options: VaultRequestOptions) => Promise<VaultTransportResponse>;
}

/**
 * node-vault's `config['request-promise']` hook: each Vault call goes through the guarded client instead of
 * node-vault's own axios, which would follow redirects (and re-send X-Vault-Token to the new host).
 */
export function guardedRequestPromise(http: OutboundHttpClient, timeoutMs: number): RequestPromiseLike {
  return {
    defaults: () => async (options) => {
      const headers: Record<string, string> = { accept: 'application/json', ...(options.headers ?? {}) };
      let body: string | undefined;
      if (options.json !== undefined && options.json !== null && typeof options.json === 'object') {
        body = JSON.stringify(options.json);
        headers['content-type'] = 'application/json';
      }
      const response = await sendGuarded(http, options.uri, {
        method: (options.method ?? 'GET').toUpperCase(),
        headers,
        ...(body === undefined ? {} : { body }),
        timeoutMs,
      });
      const text = response.text();
      let parsed: unknown = text;
      if (text !== '') {
        try {
          parsed = JSON.parse(text);
        } catch {
          // Vault answers JSON; anything else (a proxy's page) is handed on as text for the status to speak.
        }
      }
      return { statusCode: response.status, body: parsed, request: { path: new URL(options.uri).pathname } };
    },
  };
}
