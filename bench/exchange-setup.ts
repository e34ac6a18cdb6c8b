/**
 * Custos set up for the token endpoint, shared by bench/exchange.ts and the benchmarks that need the same load
 * (bench/audit.ts): a fresh database, an ES256 identity provider on loopback, Custos from dist/ in its own
 * process (external PostgreSQL, no Redis, the caller's pool size, production logging to /dev/null, the shipped
 * V8 flags), the tenant, connector and connections seeded over the admin API, the token requests, and autocannon
 * in a child process (bench/load.ts). Custos can be stopped and started again on the same database, with other
 * settings.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import {
  admin,
  adminUrl,
  call,
  createTenant,
  forEachConcurrently,
  freePort,
  log,
  shippedNodeFlags,
  waitForHealth,
} from './lib.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.dirname(here);
export const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

export interface LoadRequest {
  method: 'POST';
  path: string;
  headers: Record<string, string>;
  body: string;
}

export interface LoadResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number; average: number; max: number };
  non2xx: number;
  errors: number;
  timeouts: number;
  '2xx': number;
}

/** autocannon in its own process, so that it never shares an event loop with what it measures. */
export function runLoad(job: {
  url: string;
  connections: number;
  durationSeconds: number;
  requests: LoadRequest[];
}): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'load.ts')], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`load generator exited with ${code}`));
      else resolve(JSON.parse(out) as LoadResult);
    });
    child.stdin.end(JSON.stringify(job));
  });
}

/** A fresh database on the benchmark server; drop() removes it (BENCH_KEEP_DATABASE=1 keeps it). */
export async function createDatabase(
  name: string,
): Promise<{ name: string; url: string; drop: () => Promise<void> }> {
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.toString(),
    drop: async () => {
      // BENCH_KEEP_DATABASE=1 keeps the seeded database for EXPLAIN and the like.
      if (process.env.BENCH_KEEP_DATABASE === '1') log(`kept database ${name}`);
      else await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

/** An identity provider: an ES256 key and its JWKS on loopback. */
export async function startIdentityProvider(): Promise<{
  issuer: string;
  host: string;
  privateKey: CryptoKey;
  close: () => Promise<void>;
}> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'bench', alg: 'ES256', use: 'sig' };
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    issuer: `http://${host}/`,
    host,
    privateKey,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

export interface CustosProcess {
  url: string;
  process: ChildProcess;
  /** Statements sent to PostgreSQL so far and the RSS, from bench/count-queries.mjs inside the process. */
  stats: () => Promise<{ statements: number; rss: number }>;
  stop: () => Promise<void>;
}

/**
 * Custos as in production: the compiled build in its own process (`npm run build` first). The same root keys,
 * bootstrap key and data folder must be passed to every process started on one database.
 */
export async function startCustos(o: {
  databaseUrl: string;
  dataDir: string;
  rootKeys: string;
  bootstrapKey: string;
  outboundHosts: string;
  poolSize: number;
  env?: Record<string, string>;
}): Promise<CustosProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const server = fork(path.join(root, 'dist/src/main.js'), [], {
    cwd: root,
    execArgv: [
      ...shippedNodeFlags(root),
      '--import',
      path.join(here, 'count-queries.mjs'),
      // BENCH_PROFILE=<dir>: a CPU profile of the Custos process, written when it exits.
      ...(process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []),
    ],
    // Production logging (a line per request at info level) is kept and discarded.
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    env: {
      ...process.env,
      // BENCH_SERVER_NODE_OPTIONS: V8 flags for the Custos process (e.g. --max-semi-space-size=4).
      NODE_OPTIONS: process.env.BENCH_SERVER_NODE_OPTIONS ?? '',
      DATABASE_URL: o.databaseUrl,
      HOST: '127.0.0.1',
      PORT: String(port),
      CUSTOS_DATA_DIR: o.dataDir,
      CUSTOS_ROOT_KEYS: o.rootKeys,
      CUSTOS_BOOTSTRAP_ADMIN_KEY: o.bootstrapKey,
      CUSTOS_OUTBOUND_ALLOW_HOSTS: o.outboundHosts,
      CUSTOS_DB_POOL_SIZE: String(o.poolSize),
      CUSTOS_LOG_LEVEL: 'info',
      REDIS_URL: '',
      ...o.env,
    },
  });
  const exited = new Promise((r) => server.once('exit', r));
  const stop = async () => {
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGTERM');
    await exited;
  };
  try {
    await Promise.race([
      waitForHealth(url),
      exited.then(() => Promise.reject(new Error('Custos exited during start-up'))),
    ]);
  } catch (err) {
    // Not yet in the caller's clean-ups: a process that never became healthy must not outlive the benchmark.
    await stop();
    throw err;
  }
  return {
    url,
    process: server,
    stats: () =>
      new Promise((resolve) => {
        server.once('message', (m) => resolve(m as { statements: number; rss: number }));
        server.send('stats');
      }),
    stop,
  };
}

export interface ExchangeSeed {
  tenantId: string;
  adminKey: string;
  /** POST /oauth/token requests cycling through `users` users spread over the connections. */
  requests: LoadRequest[];
  /** The user of each request, in the same order. */
  userIds: string[];
}

/**
 * What exchange.ts seeds: a tenant with an admin key, the identity provider, a `client_secret_basic` connector
 * and `connections` GitHub connections (16 PUTs at a time); then one ES256 user token per user, `scope=repo`,
 * valid for `tokenLifetimeSeconds` (the default is long enough for every run of a long benchmark on one seed).
 */
export async function seedExchange(
  url: string,
  bootstrapKey: string,
  idp: { issuer: string; privateKey: CryptoKey },
  connections: number,
  users: number,
  tokenLifetimeSeconds = 6 * 3600,
): Promise<ExchangeSeed> {
  const tenant = await createTenant(url, bootstrapKey, 'bench', { name: 'bench admin', role: 'admin' });
  const adminKey = tenant.key;
  await call(url, 'PUT', `/v1/tenants/${tenant.id}/identity-providers/bench-idp`, adminKey, {
    issuer: idp.issuer,
    jwksUri: `${idp.issuer}jwks`,
    audiences: ['custos'],
    algorithms: ['ES256'],
  });
  const connector = await call<{ clientId: string; clientSecret: string }>(
    url,
    'POST',
    `/v1/tenants/${tenant.id}/connectors`,
    adminKey,
    {
      name: 'bench connector',
      allowedProviders: ['github'],
      allowedScopes: { github: ['repo', 'read:user'] },
      delegation: 'user_token',
      auth: { method: 'client_secret_basic' },
    },
  );
  const expiresAt = new Date(Date.now() + 6 * 3600_000).toISOString();
  await forEachConcurrently(connections, 16, (i) =>
    call(url, 'PUT', `/v1/tenants/${tenant.id}/users/user-${i}/connections/github`, adminKey, {
      type: 'oauth2',
      accessToken: `gho_bench_${i}_${randomUUID()}`,
      refreshToken: `ghr_bench_${i}_${randomUUID()}`,
      scopes: ['repo', 'read:user'],
      expiresAt,
    }),
  );
  const basic =
    'Basic ' +
    Buffer.from(
      `${encodeURIComponent(connector.clientId)}:${encodeURIComponent(connector.clientSecret)}`,
    ).toString('base64');
  const now = Math.floor(Date.now() / 1000);
  const requests: LoadRequest[] = [];
  const userIds: string[] = [];
  for (let i = 0; i < users; i++) {
    // Users spread over the whole table, not only its first rows.
    const user = `user-${Math.floor((i * connections) / users)}`;
    const token = await new SignJWT({ azp: 'bench-agent' })
      .setProtectedHeader({ alg: 'ES256', kid: 'bench' })
      .setIssuer(idp.issuer)
      .setAudience('custos')
      .setSubject(user)
      .setIssuedAt(now)
      .setExpirationTime(now + tokenLifetimeSeconds)
      .sign(idp.privateKey);
    requests.push({
      method: 'POST',
      path: '/oauth/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic },
      body: new URLSearchParams({
        grant_type: EXCHANGE,
        subject_token: token,
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        audience: 'github',
        scope: 'repo',
      }).toString(),
    });
    userIds.push(user);
  }
  return { tenantId: tenant.id, adminKey, requests, userIds };
}
