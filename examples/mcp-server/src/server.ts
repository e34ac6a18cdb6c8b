/**
 * The example MCP server: one Node HTTP server that serves RFC 9728 metadata and, at /mcp, both protocol
 * versions behind one bearer-token gate. `startExampleServer(env)` starts it in-process (tests do);
 * main.ts is the command-line entry (`npm run example:mcp`).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CustosClient } from '@custos/sdk';
import {
  isJsonContentType,
  isLegacyRequest,
  localhostAllowedHostnames,
  localhostAllowedOrigins,
  validateHostHeader,
  validateOriginHeader,
} from '@modelcontextprotocol/server';
import { AuthError, authInfoOf, ResourceServerAuth, type AuthenticatedUser } from './auth.js';
import { isLoopbackHost, loadConfig, type ExampleConfig } from './config.js';
import {
  BodyTooLargeError,
  readBody,
  sendJson,
  sendJsonRpcError,
  sendWebResponse,
  toWebRequest,
} from './http.js';
import { LegacySessions } from './legacy.js';
import { createModernHandler } from './modern.js';
import { createWhoami } from './whoami.js';

export { ConfigError } from './config.js';

export interface ExampleServer {
  /** Where it listens, e.g. http://127.0.0.1:3001 (MCP is at `${url}/mcp`). */
  url: string;
  config: ExampleConfig;
  close(): Promise<void>;
}

/** One structured log line; tokens, session ids and query strings are never in it. */
export type LogEntry = Record<string, unknown> & { msg: string };

export interface ExampleServerOptions {
  /** Where log lines go; by default one JSON line each on stdout. */
  log?: (entry: LogEntry) => void;
}

const METADATA_PATHS = new Set([
  '/.well-known/oauth-protected-resource',
  '/.well-known/oauth-protected-resource/mcp',
]);

function defaultLog(entry: LogEntry): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`);
}

/** Validates `env` (throws ConfigError naming the variable), then listens. */
export async function startExampleServer(
  env: Record<string, string | undefined>,
  options: ExampleServerOptions = {},
): Promise<ExampleServer> {
  const config = loadConfig(env);
  const log = options.log ?? defaultLog;
  const custos = new CustosClient({
    url: config.custosUrl,
    clientId: config.clientId,
    clientSecret: config.clientSecret,
  });
  const auth = new ResourceServerAuth(config);
  const whoami = createWhoami(custos, config);
  const onError = (where: string) => (err: Error) =>
    log({ msg: 'MCP error', level: 'warn', where, error: err.name, detail: err.message.slice(0, 200) });
  const legacy = new LegacySessions({
    whoami,
    custos,
    providerName: config.providerName,
    onError: onError('2025-11-25'),
  });
  const modern = createModernHandler({ whoami, custos, config, onError: onError('2026-07-28') });

  // DNS-rebinding protection: only this server's public host name, plus the loopback names when listening
  // on loopback. Browsers send Origin; MCP clients that are not browsers do not, and pass.
  const publicHost = new URL(config.publicUrl).hostname;
  const loopback = isLoopbackHost(config.host) || config.host === '::1';
  const allowedHosts = [publicHost, ...(loopback ? localhostAllowedHostnames() : [])];
  const allowedOrigins = [publicHost, ...(loopback ? localhostAllowedOrigins() : [])];

  async function serveMcp(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    note: Record<string, unknown>,
  ) {
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'POST' && method !== 'DELETE') {
      sendJsonRpcError(res, 405, -32000, 'Method not allowed', { allow: 'GET, POST, DELETE' });
      return;
    }
    const host = validateHostHeader(req.headers.host, allowedHosts);
    const origin = validateOriginHeader(req.headers.origin, allowedOrigins);
    if (!host.ok || !origin.ok) {
      note.refused = host.ok ? 'origin' : 'host';
      sendJsonRpcError(res, 403, -32000, 'Forbidden: host or origin not allowed');
      return;
    }
    let user: AuthenticatedUser;
    try {
      user = await auth.verify(req.headers.authorization);
    } catch (err) {
      const e =
        err instanceof AuthError ? err : new AuthError('invalid_token', 'The access token is invalid');
      note.refused = e.kind;
      if (e.kind !== 'missing') note.reason = e.message;
      if (e.kind === 'unavailable') {
        sendJson(
          res,
          503,
          { error: 'temporarily_unavailable', error_description: e.message },
          { 'retry-after': '5' },
        );
        return;
      }
      sendJson(
        res,
        401,
        e.kind === 'missing'
          ? { error: 'unauthorized' }
          : { error: 'invalid_token', error_description: e.message },
        { 'www-authenticate': auth.challenge(e) },
      );
      return;
    }
    note.user = user.subject;

    let body: string | undefined;
    let parsed: unknown;
    if (method === 'POST') {
      if (!isJsonContentType(req.headers['content-type'])) {
        sendJsonRpcError(res, 415, -32000, 'Unsupported Media Type: Content-Type must be application/json');
        return;
      }
      try {
        body = await readBody(req);
      } catch (err) {
        if (err instanceof BodyTooLargeError) sendJsonRpcError(res, 413, -32000, 'Request body too large');
        else res.destroy();
        return;
      }
      try {
        parsed = JSON.parse(body);
      } catch {
        sendJsonRpcError(res, 400, -32700, 'Parse error');
        return;
      }
    }

    const abort = new AbortController();
    res.once('close', () => abort.abort());
    const request = toWebRequest(req, `${config.publicUrl}${req.url ?? '/mcp'}`, body, abort.signal);
    if (await isLegacyRequest(request, parsed)) {
      note.protocol = '2025-11-25';
      await legacy.handle(req, res, user, parsed);
      return;
    }
    note.protocol = '2026-07-28';
    const response = await modern.fetch(request, { authInfo: authInfoOf(user), parsedBody: parsed });
    await sendWebResponse(res, response);
  }

  function serveMetadata(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        'access-control-allow-origin': '*',
        'access-control-allow-methods': 'GET',
        'access-control-allow-headers': 'mcp-protocol-version',
      });
      res.end();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendJson(res, 405, { error: 'method_not_allowed' }, { allow: 'GET, HEAD, OPTIONS' });
      return;
    }
    res.writeHead(200, {
      'content-type': 'application/json',
      'cache-control': 'max-age=3600',
      'access-control-allow-origin': '*',
    });
    res.end(req.method === 'HEAD' ? undefined : JSON.stringify(auth.metadata()));
  }

  const server = http.createServer((req, res) => {
    const started = performance.now();
    // The path only: a query string is the client's and may carry anything.
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const note: Record<string, unknown> = {};
    res.once('close', () => {
      log({
        msg: 'request',
        method: req.method,
        path,
        status: res.statusCode,
        ms: Math.round(performance.now() - started),
        ...note,
      });
    });
    const work = (async () => {
      if (path === '/mcp') await serveMcp(req, res, note);
      else if (METADATA_PATHS.has(path)) serveMetadata(req, res);
      else sendJson(res, 404, { error: 'not_found' });
    })();
    work.catch((err: unknown) => {
      const e = err instanceof Error ? err : new Error(String(err));
      note.error = e.name;
      log({ msg: 'request failed', level: 'error', path, error: e.name, detail: e.message.slice(0, 200) });
      if (!res.headersSent) sendJsonRpcError(res, 500, -32603, 'Internal error');
      else res.end();
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  log({
    msg: 'MCP server listening',
    url,
    mcp: config.resource,
    metadata: auth.metadataUrl,
    authIssuer: config.authIssuer,
    custos: config.custosUrl,
    provider: config.provider,
    whoamiScope: config.whoamiScopes.join(' '),
  });
  if (config.stateKeyGenerated) {
    log({
      msg: 'MCP_STATE_KEY is not set: using a random key for this process only; with more than one instance, set the same MCP_STATE_KEY on each',
      level: 'warn',
    });
  }
  // Discovery ahead of the first request; a failure here is retried by the first request that needs it.
  auth.warmUp().catch((err: unknown) =>
    log({
      msg: 'authorization server discovery failed; retrying on the next request',
      level: 'warn',
      issuer: config.authIssuer,
      detail: err instanceof Error ? err.message.slice(0, 200) : 'unknown',
    }),
  );

  let closing: Promise<void> | null = null;
  return {
    url,
    config,
    close() {
      closing ??= (async () => {
        await legacy.close();
        await modern.close();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      })();
      return closing;
    },
  };
}
