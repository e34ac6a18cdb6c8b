/**
 * The one HTTP client for URLs a tenant can influence (JWKS, custom OAuth providers, key backends, webhooks):
 * refuses non-public destinations on the address actually connected to, follows redirects by hand and
 * bounds time and response size.
 */
import { promises as dnsPromises, type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';
import { CommonException, CustosException } from './errors.js';

export interface OutboundHttpOptions {
  /** `host` or `host:port` (IPv6 as `[::1]` or `[::1]:8080`): exempt from the address checks, may use http. */
  allowHosts?: string[];
  timeoutMs?: number;
  maxResponseBytes?: number;
  maxRedirects?: number;
  userAgent?: string;
  /** Name resolution; defaults to the system resolver (`dns.lookup` with `all: true`). */
  resolve?: (host: string) => Promise<string[]>;
}

export interface OutboundRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  timeoutMs?: number;
  maxResponseBytes?: number;
  followRedirects?: boolean;
}

export interface OutboundResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** The URL that produced this response, after redirects (without fragment). */
  url: string;
  text(): string;
  json<T = unknown>(): T;
}

export type OutboundRefusalReason =
  'invalid_url' | 'scheme_not_allowed' | 'credentials_in_url' | 'address_refused' | 'too_many_redirects';

export type OutboundFailureReason =
  | 'timeout'
  | 'response_too_large'
  | 'connection_failed'
  | 'dns_resolution_failed'
  | 'invalid_request'
  | 'invalid_json';

const DEFAULT_TIMEOUT_MS = 5000;
const DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;
const DEFAULT_MAX_REDIRECTS = 5;
const DEFAULT_USER_AGENT = 'Custos';

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Credentials that belong to one origin and must not follow a redirect to another. */
const ORIGIN_BOUND_HEADERS = ['authorization', 'proxy-authorization', 'cookie', 'host'];
/** Headers describing a body, dropped when a redirect turns the request into a body-less GET. */
const BODY_HEADERS = [
  'content-type',
  'content-length',
  'content-encoding',
  'content-language',
  'content-location',
  'transfer-encoding',
];

const GLOBAL_UNICAST_V6 = ipaddr.IPv6.parseCIDR('2000::/3');
const NAT64_WELL_KNOWN_V6 = ipaddr.IPv6.parseCIDR('64:ff9b::/96');

type IPv4 = ReturnType<typeof ipaddr.IPv4.parse>;
type IPv6 = ReturnType<typeof ipaddr.IPv6.parse>;

/**
 * True when `ip` must not be connected to. Only canonical IPv4 / IPv6 literals (what DNS answers and WHATWG
 * URL produce) are judged; anything else (`0x7f000001`, `127.1`, garbage) is refused rather than interpreted.
 */
export function isRefusedAddress(ip: string): boolean {
  const literal = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
  const kind = isIP(literal);
  if (kind === 0) return true;
  if (kind === 4) return isRefusedIPv4(ipaddr.IPv4.parse(literal));
  // Zone ids only exist on link-scoped addresses.
  if (literal.includes('%')) return true;
  try {
    // ipaddr.js reads a dotted tail after '::' as IPv4-mapped ('::8.8.8.8' becomes '::ffff:8.8.8.8'), so
    // hand it WHATWG URL's canonical all-hex form instead.
    return isRefusedIPv6(ipaddr.IPv6.parse(new URL(`http://[${literal}]/`).hostname.slice(1, -1)));
  } catch {
    return true;
  }
}

function isRefusedIPv4(address: IPv4): boolean {
  // ipaddr.js names every special-purpose block (private, loopback, link-local incl. 169.254.169.254, CGNAT,
  // multicast, broadcast, 0/8, documentation, benchmarking, 240/4, ...); only 'unicast' is public.
  return address.range() !== 'unicast';
}

function isRefusedIPv6(address: IPv6): boolean {
  // Forms that a dual-stack socket or a NAT64 gateway turns into an IPv4 destination: judge that IPv4.
  if (address.isIPv4MappedAddress()) return isRefusedIPv4(address.toIPv4Address());
  if (address.match(NAT64_WELL_KNOWN_V6)) {
    const [hi, lo] = [address.parts[6], address.parts[7]];
    return isRefusedIPv4(new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]));
  }
  // Outside 2000::/3 nothing is publicly routed: this also covers ::, ::1, IPv4-compatible ::a.b.c.d,
  // IPv4-translated ::ffff:0:a.b.c.d, unique-local (incl. fd00:ec2::254), link-local and multicast.
  if (!address.match(GLOBAL_UNICAST_V6)) return true;
  // Inside it, 6to4, Teredo, documentation, ORCHID, benchmarking, ... are tunnels or reserved: refused outright.
  return address.range() !== 'unicast';
}

interface AllowEntry {
  /** In `URL.hostname` form: lower case, punycode, IPv6 in brackets. */
  host: string;
  port?: number;
}

function invalidAllowEntry(entry: string): Error {
  return new Error(`CUSTOS_OUTBOUND_ALLOW_HOSTS: "${entry}" is not a host or host:port`);
}

function parseAllowEntry(entry: string): AllowEntry {
  const raw = entry.trim().toLowerCase();
  let hostPart = raw;
  let portPart: string | undefined;
  if (raw.startsWith('[')) {
    const close = raw.indexOf(']');
    const rest = raw.slice(close + 1);
    if (close < 0 || (rest !== '' && !rest.startsWith(':'))) throw invalidAllowEntry(entry);
    hostPart = raw.slice(0, close + 1);
    if (rest !== '') portPart = rest.slice(1);
  } else if (raw.indexOf(':') !== raw.lastIndexOf(':')) {
    if (isIP(raw) !== 6) throw invalidAllowEntry(entry);
    hostPart = `[${raw}]`;
  } else if (raw.includes(':')) {
    [hostPart, portPart] = raw.split(':');
  }
  if (hostPart === '' || /[\s/\\@?#]/.test(hostPart)) throw invalidAllowEntry(entry);
  let port: number | undefined;
  if (portPart !== undefined) {
    port = /^\d{1,5}$/.test(portPart) ? Number(portPart) : NaN;
    if (!(port >= 1 && port <= 65535)) throw invalidAllowEntry(entry);
  }
  // Normalise the way WHATWG URL does, so an entry compares equal to the URL.hostname it is meant to match.
  let host: string;
  try {
    host = new URL(`http://${hostPart}/`).hostname;
  } catch {
    throw invalidAllowEntry(entry);
  }
  return port === undefined ? { host } : { host, port };
}

/**
 * Parses `CUSTOS_OUTBOUND_ALLOW_HOSTS` (comma-separated `host` / `host:port` / `[v6]:port`) into normalised
 * entries; throws, naming the variable, on an entry that is not a host.
 */
export function parseAllowHosts(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => {
      const { host, port } = parseAllowEntry(s);
      return port === undefined ? host : `${host}:${port}`;
    });
}

/** Resolver answers meaning "this name does not exist" (as opposed to "the resolver failed"). */
const NAME_NOT_FOUND = new Set(['ENOTFOUND', 'ENODATA', 'ENONAME', 'EAI_NONAME', 'EAI_NODATA']);

/** The dns_resolution_failed errors whose name does not exist (rather than whose resolver failed). */
const nameNotFound = new WeakSet<CustosException>();

function unresolved(target: Target, notFound: boolean, cause?: unknown): CustosException {
  const error = failed('dns_resolution_failed', `Could not resolve ${target.label}`, cause);
  if (notFound) nameNotFound.add(error);
  return error;
}

function refused(reason: OutboundRefusalReason, message: string): CustosException {
  return new CommonException('outbound_url_refused', message, { reason });
}

function failed(reason: OutboundFailureReason, message: string, cause?: unknown): CustosException {
  const error = new CommonException('outbound_request_failed', message, { reason });
  // Kept for server-side logs only; never part of the message or details.
  if (cause !== undefined) error.cause = cause;
  return error;
}

interface Target {
  url: URL;
  /** scheme://host[:port]: the only part of a URL that may appear in a message (no path, query, userinfo). */
  label: string;
  allowListed: boolean;
}

function effectivePort(url: URL): number {
  if (url.port !== '') return Number(url.port);
  return url.protocol === 'https:' ? 443 : 80;
}

function bareHost(hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
}

function lowerCaseKeys(headers: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) out[name.toLowerCase()] = value;
  return out;
}

function withoutHeaders(headers: Record<string, string>, names: string[]): Record<string, string> {
  const out = { ...headers };
  for (const name of names) delete out[name];
  return out;
}

function lookupFamily(family: number | 'IPv4' | 'IPv6' | undefined): number {
  if (family === 'IPv4') return 4;
  if (family === 'IPv6') return 6;
  return family ?? 0;
}

function defaultResolve(host: string): Promise<string[]> {
  return dnsPromises.lookup(host, { all: true }).then((entries) => entries.map((e) => e.address));
}

function untilAborted<T>(promise: Promise<T>, signal: AbortSignal, onAbort: () => Error): Promise<T> {
  if (signal.aborted) return Promise.reject(onAbort());
  return new Promise<T>((resolve, reject) => {
    const abort = (): void => reject(onAbort());
    signal.addEventListener('abort', abort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', abort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', abort);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

export class OutboundHttpClient {
  private readonly allowList: AllowEntry[];
  private readonly timeoutMs: number;
  private readonly maxResponseBytes: number;
  private readonly maxRedirects: number;
  private readonly userAgent: string;
  private readonly resolveHost: (host: string) => Promise<string[]>;
  private readonly httpAgent = new http.Agent({ keepAlive: true });
  private readonly httpsAgent = new https.Agent({ keepAlive: true });

  constructor(options: OutboundHttpOptions = {}) {
    this.allowList = (options.allowHosts ?? []).filter((e) => e.trim() !== '').map(parseAllowEntry);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.maxRedirects = options.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
    this.userAgent = options.userAgent ?? DEFAULT_USER_AGENT;
    this.resolveHost = options.resolve ?? defaultResolve;
  }

  /**
   * Save-time check: parses the URL, checks scheme/credentials and resolves DNS, refusing as `request` would.
   * A host that does not exist is the tenant's input, not an outage: `outbound_url_unresolvable` (400, reason
   * `dns_resolution_failed`). A resolver that fails or times out stays `outbound_request_failed`.
   */
  async assertUrlAllowed(url: string): Promise<void> {
    const target = this.checkUrl(url);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.timeoutMs);
    try {
      await this.checkAddresses(target, controller.signal);
    } catch (err) {
      if (err instanceof CustosException && nameNotFound.has(err)) {
        throw new CommonException(
          'outbound_url_unresolvable',
          `Could not resolve ${target.label}: no such host`,
          {
            reason: 'dns_resolution_failed',
          },
        );
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  async request(url: string, req: OutboundRequest = {}): Promise<OutboundResponse> {
    const maxBytes = req.maxResponseBytes ?? this.maxResponseBytes;
    const follow = req.followRedirects ?? true;
    let target = this.checkUrl(url);
    let method = (req.method ?? 'GET').toUpperCase();
    let body = req.body;
    let headers = lowerCaseKeys(req.headers);
    headers['user-agent'] ??= this.userAgent;

    // One deadline for the whole exchange (DNS, connect, every redirect hop, body).
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), req.timeoutMs ?? this.timeoutMs);
    try {
      for (let redirects = 0; ; redirects++) {
        await this.checkAddresses(target, controller.signal);
        const res = await this.send(target, method, headers, body, controller.signal);
        const location = res.headers.location;
        const status = res.statusCode ?? 0;
        if (!follow || !REDIRECT_STATUSES.has(status) || location === undefined) {
          // A HEAD, 204 or 304 response may announce a length it never sends.
          const bodyless = method === 'HEAD' || status === 204 || status === 304;
          const responseBody = await this.readBody(res, target, maxBytes, !bodyless, controller.signal);
          return toResponse(status, res.headers, responseBody, target);
        }
        // The redirect's own body is never read: a hostile server could stream it past the deadline.
        res.destroy();
        if (redirects >= this.maxRedirects) {
          throw refused(
            'too_many_redirects',
            `Outbound request to ${target.label} exceeded ${this.maxRedirects} redirects`,
          );
        }
        let next: URL;
        try {
          next = new URL(location, target.url);
        } catch {
          throw refused('invalid_url', `Outbound request to ${target.label} redirected to an invalid URL`);
        }
        const nextTarget = this.checkUrl(next.href);
        if (nextTarget.url.origin !== target.url.origin) {
          headers = withoutHeaders(headers, ORIGIN_BOUND_HEADERS);
        }
        if (status === 301 || status === 302 || status === 303) {
          if (method !== 'HEAD') method = 'GET';
          body = undefined;
          headers = withoutHeaders(headers, BODY_HEADERS);
        }
        target = nextTarget;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes pooled keep-alive connections (for shutdown). */
  destroy(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  private checkUrl(raw: string): Target {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw refused('invalid_url', 'Outbound URL is not a valid URL');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw refused('scheme_not_allowed', `Outbound URL scheme ${url.protocol} is not allowed`);
    }
    const label = `${url.protocol}//${url.host}`;
    if (url.hostname === '') throw refused('invalid_url', `Outbound URL ${label} has no host`);
    if (url.username !== '' || url.password !== '') {
      throw refused('credentials_in_url', `Outbound URL for ${label} must not carry credentials`);
    }
    url.hash = '';
    const port = effectivePort(url);
    const allowListed = this.allowList.some(
      (e) => e.host === url.hostname && (e.port === undefined || e.port === port),
    );
    if (url.protocol === 'http:' && !allowListed) {
      throw refused('scheme_not_allowed', `Outbound URL ${label} must use https`);
    }
    return { url, label, allowListed };
  }

  /**
   * Early refusal before any socket exists. Not sufficient on its own (DNS may answer differently at connect
   * time), which is why the lookup handed to node:http checks again on the address actually connected to.
   */
  private async checkAddresses(target: Target, signal: AbortSignal): Promise<void> {
    if (target.allowListed) return;
    const host = bareHost(target.url.hostname);
    if (isIP(host) !== 0) {
      if (isRefusedAddress(host)) throw this.addressRefused(target);
      return;
    }
    const addresses = await untilAborted(this.resolve(host, target), signal, () =>
      failed('timeout', `Outbound request to ${target.label} timed out`),
    );
    if (addresses.some(isRefusedAddress)) throw this.addressRefused(target);
  }

  private addressRefused(target: Target): CustosException {
    // The resolved address is not named: it would tell a tenant about internal DNS.
    return refused('address_refused', `Outbound URL ${target.label} points at a non-public address`);
  }

  private async resolve(host: string, target: Target): Promise<string[]> {
    let addresses: string[];
    try {
      addresses = await this.resolveHost(host);
    } catch (error) {
      const notFound = NAME_NOT_FOUND.has((error as { code?: unknown } | null)?.code as string);
      throw unresolved(target, notFound, error);
    }
    if (addresses.length === 0) throw unresolved(target, true);
    return addresses;
  }

  /** node:net's lookup hook: resolves and refuses before the socket connects, if ANY address is refused. */
  private guardedLookup(target: Target): LookupFunction {
    return (hostname, options, callback) => {
      this.resolve(hostname, target).then(
        (addresses) => {
          if (!target.allowListed && addresses.some(isRefusedAddress)) {
            callback(this.addressRefused(target), '');
            return;
          }
          const family = lookupFamily(options.family);
          const entries: LookupAddress[] = addresses
            .map((address) => ({ address, family: isIP(address) }))
            .filter((e) => e.family !== 0 && (family === 0 || e.family === family));
          const first = entries[0];
          if (first === undefined) {
            callback(failed('dns_resolution_failed', `Could not resolve ${target.label}`), '');
          } else if (options.all === true) {
            callback(null, entries);
          } else {
            callback(null, first.address, first.family);
          }
        },
        (error: unknown) => callback(error instanceof Error ? error : new Error(String(error)), ''),
      );
    };
  }

  private send(
    target: Target,
    method: string,
    headers: Record<string, string>,
    body: string | Buffer | undefined,
    signal: AbortSignal,
  ): Promise<http.IncomingMessage> {
    const outgoing = { ...headers };
    if (body !== undefined && outgoing['content-length'] === undefined) {
      outgoing['content-length'] = String(Buffer.byteLength(body));
    }
    const isHttps = target.url.protocol === 'https:';
    const options: https.RequestOptions = {
      method,
      hostname: bareHost(target.url.hostname),
      port: effectivePort(target.url),
      path: `${target.url.pathname}${target.url.search}`,
      headers: outgoing,
      agent: isHttps ? this.httpsAgent : this.httpAgent,
      lookup: this.guardedLookup(target),
      signal,
    };
    return new Promise((resolve, reject) => {
      let request: http.ClientRequest;
      try {
        request = isHttps ? https.request(options) : http.request(options);
      } catch (error) {
        // Invalid method or header characters; Node's message names the header, not its value.
        reject(failed('invalid_request', `Outbound request to ${target.label} is malformed`, error));
        return;
      }
      request.once('response', resolve);
      // `on`, not `once`: a late second error (e.g. after abort) must not become an unhandled 'error' event.
      request.on('error', (error) => reject(this.failure(error, target, signal)));
      request.end(body);
    });
  }

  private readBody(
    res: http.IncomingMessage,
    target: Target,
    maxBytes: number,
    checkDeclaredLength: boolean,
    signal: AbortSignal,
  ): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const tooLarge = (): void => {
        res.destroy();
        reject(failed('response_too_large', `Response from ${target.label} exceeds ${maxBytes} bytes`));
      };
      const declared = Number(res.headers['content-length']);
      if (checkDeclaredLength && Number.isFinite(declared) && declared > maxBytes) {
        tooLarge();
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBytes) tooLarge();
        else chunks.push(chunk);
      });
      res.on('end', () => resolve(Buffer.concat(chunks)));
      res.on('error', (error) => reject(this.failure(error, target, signal)));
      res.on('close', () => {
        if (!res.complete) reject(this.failure(new Error('response closed early'), target, signal));
      });
    });
  }

  private failure(error: unknown, target: Target, signal: AbortSignal): CustosException {
    if (error instanceof CustosException) return error;
    if (signal.aborted) return failed('timeout', `Outbound request to ${target.label} timed out`, error);
    return failed('connection_failed', `Outbound request to ${target.label} failed`, error);
  }
}

function toResponse(
  status: number,
  headers: http.IncomingHttpHeaders,
  body: Buffer,
  target: Target,
): OutboundResponse {
  return {
    status,
    headers,
    body,
    url: target.url.href,
    text: () => body.toString('utf8'),
    json: <T = unknown>(): T => {
      try {
        return JSON.parse(body.toString('utf8')) as T;
      } catch (error) {
        // JSON.parse's message quotes the body, which may hold secrets.
        throw failed('invalid_json', `Response from ${target.label} is not valid JSON`, error);
      }
    },
  };
}
