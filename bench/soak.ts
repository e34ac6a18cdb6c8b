/**
 * Soak benchmark: `npm run bench:soak` (BENCH_SOAK_MINUTES, default 30).
 *
 * Starts Custos from the production build (dist/, in its own process, role `all`, the shipped V8 flags) on a
 * fresh database of the local PostgreSQL, with the local Redis (BullMQ and the shared failure counters, under
 * a key prefix of its own) and its rate limiter at the shipped defaults, behind a trusted proxy address (the
 * load names its clients in X-Forwarded-For). Seeds a tenant, an identity provider (ES256, JWKS on loopback),
 * a custom provider that is a real oidc-provider issuing short-lived access tokens with rotating refresh tokens
 * (so the background refresh cycles for the whole run), a client_secret_basic and a private_key_jwt connector,
 * BENCH_SOAK_USERS GitHub connections and BENCH_SOAK_REFRESH_USERS connections at the oidc-provider.
 *
 * Then a separate process (bench/soak-load.ts) drives a steady, open-loop mix of token exchanges at
 * BENCH_SOAK_RATE a second (default 300) with admin writes alongside, while this process samples every
 * BENCH_SOAK_SAMPLE_SECONDS (default 10): the server's RSS, V8 heap, external memory, event-loop lag (from its
 * /metrics), its PostgreSQL connections (pg_stat_activity, application_name 'custos'), the Redis keys under its
 * prefix (SCAN, grouped, with their memory and expiry) and Redis used_memory, the rows of tables that must stay
 * bounded, the audit trail's growth, and the request and error rates the load saw.
 *
 * At the end it compares the last third of the run with the middle third and prints, per series, whether it
 * levels off, with the numbers; it writes everything to bench/results/soak-*.json. Nothing is asserted.
 * `node --import tsx bench/soak.ts --judge <file>` judges a recorded run again.
 *
 * Environment: BENCH_DATABASE_URL, BENCH_REDIS_URL (default redis://127.0.0.1:6379), BENCH_SOAK_MINUTES,
 * BENCH_SOAK_RATE, BENCH_SOAK_SAMPLE_SECONDS, BENCH_SOAK_USERS (default 5,000), BENCH_SOAK_REFRESH_USERS
 * (default 300), BENCH_SOAK_PROVIDER_TOKEN_SECONDS (access-token lifetime at the oidc-provider, default 120),
 * BENCH_NODE_FLAGS (V8 flags for Custos instead of the shipped ones).
 */
import { fork, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import pg from 'pg';
import { RootKeyring } from '../src/common/root-keyring.js';
import { generateAdminKey } from '../src/identity/admin-keys.service.js';
import { startOAuthProvider, type TestOAuthProvider } from '../test/support/oauth-provider.js';
import {
  admin,
  adminUrl,
  call,
  createTenant,
  forEachConcurrently,
  freePort,
  log,
  machineInfo,
  parsePrometheus,
  rssOf,
  shippedNodeFlags,
  waitForHealth,
} from './lib.js';
import type { Kind, LoadStats, SoakJob } from './soak-load.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.dirname(here);
const MINUTES = Number(process.env.BENCH_SOAK_MINUTES ?? 30);
const RATE = Number(process.env.BENCH_SOAK_RATE ?? 300);
const SAMPLE_S = Number(process.env.BENCH_SOAK_SAMPLE_SECONDS ?? 10);
const USERS = Number(process.env.BENCH_SOAK_USERS ?? 5000);
const REFRESH_USERS = Number(process.env.BENCH_SOAK_REFRESH_USERS ?? 300);
const PROVIDER_TOKEN_S = Number(process.env.BENCH_SOAK_PROVIDER_TOKEN_SECONDS ?? 120);
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const UNCONNECTED_USERS = 1000;
/** Shares of the exchange rate. */
const MIX: Record<Kind, number> = {
  basic: 0.62,
  jwt: 0.15,
  refreshRead: 0.08,
  consent: 0.03,
  scope: 0.02,
  attack: 0.1,
};
const MiB = 2 ** 20;
/** CUSTOS_DB_POOL_SIZE's default, which the soak runs with. */
const POOL_SIZE = 10;

interface Sample {
  /** Seconds since the load started (negative: before). */
  t: number;
  phase: 'before' | 'load' | 'after';
  server: {
    rssMiB: number;
    heapUsedMiB: number | null;
    heapTotalMiB: number | null;
    externalMiB: number | null;
    loopLagP99Ms: number | null;
    loopLagMaxMs: number | null;
    activeHandles: number | null;
    openFds: number | null;
    /** CPU time of the Custos process over the interval, in % of one core. */
    cpuPercent: number | null;
  };
  /** The machine's 1-minute load average (other work on the machine shows here). */
  load1: number;
  pg: { total: number; byState: Record<string, number> } | null;
  redis: {
    keys: number;
    withoutExpiry: number;
    byGroup: Record<string, number>;
    prefixMemoryMiB: number;
    usedMemoryMiB: number;
    refreshDelayed: number;
    refreshDelayedBeyondOneHour: number;
    /** Delayed refresh jobs for a row version that a later write has superseded (they will find nothing to do). */
    refreshJobsSuperseded: number;
    refreshWaiting: number;
    eventStreams: Record<string, number>;
  } | null;
  rows: {
    clientAssertionsUsed: number;
    connectSessions: number;
    connectSessionsPending: number;
    connectSessionsPendingUnexpired: number;
    connections: number;
    connectionsNeedsReauth: number;
    connectors: number;
    auditEvents: number;
    auditMaxId: number;
    relationKiB: Record<string, number>;
    deadTuples: Record<string, number>;
  } | null;
  counters: {
    tokenRequests: Record<string, number>;
    refreshes: Record<string, number>;
    deniedFolded: number;
    throttled: number;
    providerRefreshCalls: number;
  };
  load: LoadStats | null;
  logs: { warn: number; error: number };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (n: number, d = 1) => Math.round(n * 10 ** d) / 10 ** d;

/**
 * `--judge <results file>`: judges a recorded run's samples again (after a change to the judging rules), prints
 * the table and writes the new verdicts into the file, with which code judged them.
 */
function judgeAgain(file: string): void {
  const report = JSON.parse(fs.readFileSync(file, 'utf8')) as {
    settings: { minutes: number };
    samples: Sample[];
    verdicts: Verdict[];
    totals: Record<string, unknown>;
  } & Record<string, unknown>;
  const verdicts = judge(report.samples, report.settings.minutes * 60);
  printReport(verdicts, report.totals);
  const { samples, ...rest } = report;
  const out = { ...rest, verdicts, judgedAgain: { date: new Date().toISOString(), code: codeVersion() } };
  const text = JSON.stringify({ ...out, samples: '<samples>' }, null, 2).replace(
    '"<samples>"',
    `[\n${samples.map((s) => `    ${JSON.stringify(s)}`).join(',\n')}\n  ]`,
  );
  fs.writeFileSync(file, text + '\n');
  log(`verdicts written to ${file}`);
}

async function main(): Promise<void> {
  if (process.argv[2] === '--judge' && process.argv[3]) return judgeAgain(process.argv[3]);
  // Before the build under test can change: which code ran.
  const code = codeVersion();
  const dbName = `custos_bench_soak_${process.pid}`;
  const prefix = `custos-soak-${process.pid}-${Date.now()}`;
  await admin((c) => c.query(`CREATE DATABASE ${dbName}`));
  const dbUrl = new URL(adminUrl);
  dbUrl.pathname = `/${dbName}`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-soak-'));
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 2 });
  await redis.connect();
  const cleanups: (() => Promise<unknown>)[] = [
    () => admin((c) => c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)),
    async () => fs.rmSync(dataDir, { recursive: true, force: true }),
    async () => {
      // Leaves the shared Redis as it found it.
      let removed = 0;
      for await (const keys of redis.scanStream({ match: `${prefix}:*`, count: 1000 }) as AsyncIterable<
        string[]
      >) {
        if (keys.length > 0) removed += await redis.unlink(...keys);
      }
      log(`removed ${removed} Redis keys under ${prefix}`);
      redis.disconnect();
    },
  ];
  try {
    // Identity provider of the users: an ES256 key, its JWKS on loopback.
    const idpKeys = await generateKeyPair('ES256', { extractable: true });
    const idpJwk = { ...(await exportJWK(idpKeys.publicKey)), kid: 'soak-idp', alg: 'ES256', use: 'sig' };
    const jwksServer = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [idpJwk] }));
    });
    await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
    cleanups.unshift(() => new Promise((r) => jwksServer.close(r)));
    const jwksPort = (jwksServer.address() as AddressInfo).port;
    const issuer = `http://127.0.0.1:${jwksPort}/`;

    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const redirectUri = `${url}/connect/callback/inhouse`;

    // The third party whose tokens the background refresh keeps fresh: oidc-provider, short-lived access
    // tokens, refresh tokens rotated on every use (a duplicate refresh shows up as invalid_grant).
    const appClient = { client_id: 'custos-soak', client_secret: randomBytes(24).toString('base64url') };
    const op = await startOAuthProvider({
      clients: [{ ...appClient, redirect_uris: [redirectUri] }],
      accessTokenTtlSeconds: PROVIDER_TOKEN_S,
    });
    cleanups.unshift(() => op.close());

    const bootstrapKey = generateAdminKey();
    const server = fork(path.join(root, 'dist/src/main.js'), [], {
      cwd: root,
      execArgv: shippedNodeFlags(root),
      // Production logging (a line per request at info); warnings and errors are counted below.
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
      env: {
        ...process.env,
        NODE_OPTIONS: '',
        DATABASE_URL: dbUrl.toString(),
        REDIS_URL,
        CUSTOS_QUEUE_PREFIX: prefix,
        CUSTOS_ROLE: 'all',
        HOST: '127.0.0.1',
        PORT: String(port),
        CUSTOS_DATA_DIR: dataDir,
        CUSTOS_ROOT_KEYS: RootKeyring.generateSpec(),
        CUSTOS_BOOTSTRAP_ADMIN_KEY: bootstrapKey,
        CUSTOS_OUTBOUND_ALLOW_HOSTS: `127.0.0.1:${jwksPort},${op.hostPort}`,
        // The load balancer in front: X-Forwarded-For names the client.
        CUSTOS_TRUST_PROXY: '127.0.0.1',
        CUSTOS_LOG_LEVEL: 'info',
      },
    });
    let serverExited = false;
    server.once('exit', () => (serverExited = true));
    cleanups.unshift(async () => {
      if (serverExited) return;
      server.kill('SIGTERM');
      await new Promise((r) => server.once('exit', r));
    });
    const logs = watchLogs(server);
    await waitForHealth(url);
    const pid = server.pid!;

    const seeded = await seed(url, bootstrapKey, issuer, op, appClient);

    const db = new pg.Client({ connectionString: dbUrl.toString(), application_name: 'custos-soak-monitor' });
    await db.connect();
    cleanups.unshift(() => db.end());
    const postgres = (
      await db.query<{ version: string; autovacuum: string }>(
        `SELECT current_setting('server_version') AS version, current_setting('autovacuum') AS autovacuum`,
      )
    ).rows[0];

    const job: SoakJob = {
      url,
      rate: RATE,
      mix: MIX,
      tenantId: seeded.tenantId,
      adminKey: seeded.adminKey,
      idp: {
        issuer,
        audience: 'custos',
        privateJwk: await exportJWK(idpKeys.privateKey),
        kid: 'soak-idp',
        tokenSeconds: 300,
      },
      basicConnector: seeded.basic,
      jwtConnector: {
        clientId: seeded.jwtClientId,
        privateJwk: await exportJWK(seeded.jwtKey),
        kid: 'soak-connector',
        assertionSeconds: 60,
      },
      users: { github: USERS, refresh: REFRESH_USERS, unconnected: UNCONNECTED_USERS },
      attackAddresses: 4,
      importsPerSecond: 0.5,
      connectorEverySeconds: 30,
    };

    const sampler = new Sampler(url, pid, db, redis, prefix, op, logs);
    const samples: Sample[] = [await sampler.sample(-1, 'before', null)];
    log(`load: ${RATE} exchanges/s for ${MINUTES} min, sampled every ${SAMPLE_S} s`);
    const load = startLoad(job);
    cleanups.unshift(async () => load.child.kill());
    await load.ready;
    const t0 = Date.now();
    const end = t0 + MINUTES * 60_000;
    for (let k = 1; ; k++) {
      const at = t0 + k * SAMPLE_S * 1000;
      if (at > end + 500) break;
      await sleep(Math.max(0, at - Date.now()));
      if (serverExited) throw new Error('Custos exited during the soak');
      const s = await sampler.sample((Date.now() - t0) / 1000, 'load', await load.stats());
      samples.push(s);
      if (k % Math.max(1, Math.round(60 / SAMPLE_S)) === 0) log(progressLine(s));
    }
    const final = await load.stop();
    samples.push(await sampler.sample((Date.now() - t0) / 1000, 'after', final));

    const durationS = MINUTES * 60;
    const verdicts = judge(samples, durationS);
    const thirdsAudit = await auditByThird(db, samples, durationS);
    const report = {
      date: new Date().toISOString(),
      machine: {
        ...machineInfo(),
        postgres,
      },
      code,
      settings: {
        minutes: MINUTES,
        exchangesPerSecond: RATE,
        mix: MIX,
        sampleSeconds: SAMPLE_S,
        users: { github: USERS, refresh: REFRESH_USERS, unconnected: UNCONNECTED_USERS },
        userTokenSeconds: job.idp.tokenSeconds,
        clientAssertionSeconds: job.jwtConnector.assertionSeconds,
        providerAccessTokenSeconds: PROVIDER_TOKEN_S,
        attackAddresses: job.attackAddresses,
        importsPerSecond: job.importsPerSecond,
        connectorEverySeconds: job.connectorEverySeconds,
        nodeFlags: shippedNodeFlags(root),
        custos: 'role all, pool 10, Redis (BullMQ + shared failure counters), rate limits at their defaults',
      },
      verdicts,
      auditByThird: thirdsAudit,
      totals: totals(samples),
      logMessages: logs.top(),
      samples,
    };
    printReport(verdicts, report.totals);
    fs.mkdirSync(path.join(here, 'results'), { recursive: true });
    const file = path.join(here, 'results', `soak-${report.date.replace(/[:.]/g, '-')}.json`);
    // One sample a line: the file stays readable and a third of the size.
    const text = JSON.stringify({ ...report, samples: '<samples>' }, null, 2).replace(
      '"<samples>"',
      `[\n${samples.map((s) => `    ${JSON.stringify(s)}`).join(',\n')}\n  ]`,
    );
    fs.writeFileSync(file, text + '\n');
    log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    for (const c of cleanups) await c().catch((err: unknown) => log(`cleanup: ${String(err)}`));
  }
}

interface Seeded {
  tenantId: string;
  adminKey: string;
  basic: { clientId: string; clientSecret: string };
  jwtClientId: string;
  jwtKey: CryptoKey;
}

async function seed(
  url: string,
  bootstrapKey: string,
  issuer: string,
  op: TestOAuthProvider,
  appClient: { client_id: string; client_secret: string },
): Promise<Seeded> {
  log(`seeding a tenant, ${USERS} GitHub connections and ${REFRESH_USERS} at the oidc-provider`);
  const tenant = await createTenant(url, bootstrapKey, 'soak', { name: 'soak admin', role: 'admin' });
  const t = `/v1/tenants/${tenant.id}`;
  const adminKey = tenant.key;
  await call(url, 'PUT', `${t}/identity-providers/soak-idp`, adminKey, {
    issuer,
    jwksUri: `${issuer}jwks`,
    audiences: ['custos'],
    algorithms: ['ES256'],
  });
  await call(url, 'PUT', `${t}/providers/inhouse`, adminKey, {
    key: 'inhouse',
    name: 'In-house OAuth server',
    authMode: 'oauth2',
    oauth2: {
      authorizationUrl: op.endpoints.authorization,
      tokenUrl: op.endpoints.token,
      issuer: op.issuer,
      scopes: ['openid', 'offline_access', 'repo'],
      rotatesRefreshToken: true,
    },
  });
  await call(url, 'PUT', `${t}/providers/inhouse/app`, adminKey, {
    clientId: appClient.client_id,
    clientSecret: appClient.client_secret,
  });
  const basic = await call<{ clientId: string; clientSecret: string }>(
    url,
    'POST',
    `${t}/connectors`,
    adminKey,
    {
      name: 'soak agent backend',
      allowedProviders: ['github', 'inhouse'],
      allowedScopes: { github: ['repo', 'read:user'], inhouse: ['repo'] },
      delegation: 'user_token',
      auth: { method: 'client_secret_basic' },
    },
  );
  const jwtKeys = await generateKeyPair('ES256', { extractable: true });
  const jwtJwk = { ...(await exportJWK(jwtKeys.publicKey)), kid: 'soak-connector', alg: 'ES256', use: 'sig' };
  const jwt = await call<{ clientId: string }>(url, 'POST', `${t}/connectors`, adminKey, {
    name: 'soak MCP server',
    allowedProviders: ['github'],
    allowedScopes: { github: ['repo'] },
    delegation: 'user_token',
    auth: { method: 'private_key_jwt', jwks: { keys: [jwtJwk] } },
  });

  const expiresAt = new Date(Date.now() + 8 * 3600_000).toISOString();
  await forEachConcurrently(USERS, 16, (i) =>
    call(url, 'PUT', `${t}/users/user-${i}/connections/github`, adminKey, {
      type: 'oauth2',
      accessToken: `gho_soak_${i}_${randomUUID()}`,
      refreshToken: `ghr_soak_${i}_${randomUUID()}`,
      scopes: ['repo', 'read:user'],
      expiresAt,
    }),
  );

  // Real token sets from the oidc-provider (code flow with PKCE), imported with expiries spread over the
  // provider's token lifetime so that the refreshes are spread too.
  await forEachConcurrently(REFRESH_USERS, 8, async (i) => {
    const tokens = await tokensFor(op, appClient, `rf-${i}`, `${url}/connect/callback/inhouse`);
    const lifetime = 10 + Math.random() * (PROVIDER_TOKEN_S - 10);
    await call(url, 'PUT', `${t}/users/rf-${i}/connections/inhouse`, adminKey, {
      type: 'oauth2',
      accessToken: tokens.access_token,
      refreshToken: tokens.refresh_token,
      scopes: ['repo'],
      expiresAt: new Date(Date.now() + lifetime * 1000).toISOString(),
    });
  });
  return { tenantId: tenant.id, adminKey, basic, jwtClientId: jwt.clientId, jwtKey: jwtKeys.privateKey };
}

async function tokensFor(
  op: TestOAuthProvider,
  client: { client_id: string; client_secret: string },
  account: string,
  redirectUri: string,
): Promise<{ access_token: string; refresh_token: string }> {
  const verifier = randomBytes(32).toString('base64url');
  const auth = new URL(op.endpoints.authorization);
  auth.search = new URLSearchParams({
    client_id: client.client_id,
    redirect_uri: redirectUri,
    response_type: 'code',
    scope: 'openid offline_access repo',
    state: randomBytes(8).toString('hex'),
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
  }).toString();
  const { redirectedTo } = await op.authorize(auth.href, { account });
  const code = new URL(redirectedTo).searchParams.get('code');
  if (!code) throw new Error(`no code from the oidc-provider: ${redirectedTo}`);
  const res = await op.exchangeCode(client.client_id, client.client_secret, code, redirectUri, verifier);
  if (res.status !== 200 || !res.body.refresh_token) throw new Error(`code exchange failed: ${res.status}`);
  return res.body as { access_token: string; refresh_token: string };
}

function startLoad(job: SoakJob): {
  child: ChildProcess;
  ready: Promise<void>;
  stats(): Promise<LoadStats>;
  stop(): Promise<LoadStats>;
} {
  const child = fork(path.join(here, 'soak-load.ts'), [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['pipe', 'inherit', 'inherit', 'ipc'],
  });
  child.stdin!.end(JSON.stringify(job));
  const next = (type: string) =>
    new Promise<LoadStats>((resolve, reject) => {
      const onMessage = (m: { type: string; stats: LoadStats }) => {
        if (m.type !== type) return;
        child.off('message', onMessage);
        child.off('exit', onExit);
        resolve(m.stats);
      };
      const onExit = (code: number | null) => reject(new Error(`load generator exited with ${code}`));
      child.on('message', onMessage);
      child.once('exit', onExit);
    });
  return {
    child,
    ready: next('ready').then(() => undefined),
    stats() {
      const p = next('stats');
      child.send('stats');
      return p;
    },
    stop() {
      const p = next('stopped');
      child.send('stop');
      return p;
    },
  };
}

/** Counts Custos's warning and error log lines (pino levels 40 and up), by message. */
function watchLogs(server: ChildProcess): { take(): { warn: number; error: number }; top(): unknown[] } {
  let warn = 0;
  let error = 0;
  const messages = new Map<string, { level: number; count: number; example: string }>();
  const lines = readline.createInterface({ input: server.stdout! });
  lines.on('line', (line) => {
    const level = Number(/"level":(\d+)/.exec(line)?.[1] ?? 0);
    if (level < 40) return;
    if (level >= 50) error++;
    else warn++;
    let msg = '?';
    try {
      const parsed = JSON.parse(line) as { msg?: string; err?: { name?: string; code?: string } };
      msg = `${parsed.msg ?? '?'}${parsed.err?.name ? ` (${parsed.err.name}${parsed.err.code ? ` ${parsed.err.code}` : ''})` : ''}`;
    } catch {
      // Not JSON: counted under '?'.
    }
    const m = messages.get(msg) ?? { level, count: 0, example: line.slice(0, 400) };
    m.count++;
    messages.set(msg, m);
  });
  return {
    take() {
      const out = { warn, error };
      warn = 0;
      error = 0;
      return out;
    },
    top: () =>
      [...messages.entries()]
        .sort((a, b) => b[1].count - a[1].count)
        .slice(0, 20)
        .map(([msg, m]) => ({ msg, level: m.level, count: m.count, example: m.example })),
  };
}

class Sampler {
  constructor(
    private readonly url: string,
    private readonly pid: number,
    private readonly db: pg.Client,
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly op: TestOAuthProvider,
    private readonly logs: ReturnType<typeof watchLogs>,
  ) {}

  async sample(t: number, phase: Sample['phase'], load: LoadStats | null): Promise<Sample> {
    const [metrics, pgState, redisState, rows] = await Promise.all([
      this.metrics(),
      this.pg().catch(() => null),
      this.redisState().catch((err: unknown) => {
        log(`redis sample failed: ${String(err)}`);
        return null;
      }),
      this.rows().catch((err: unknown) => {
        log(`row sample failed: ${String(err)}`);
        return null;
      }),
    ]);
    const m = (name: string) => metrics.get(name) ?? null;
    const labelled = (name: string) => {
      const out: Record<string, number> = {};
      for (const [k, v] of metrics) {
        const match = new RegExp(`^${name}\\{\\w+="([^"]*)"\\}$`).exec(k);
        if (match) out[match[1]] = v;
      }
      return out;
    };
    const mib = (v: number | null) => (v === null ? null : round(v / MiB));
    const ms = (v: number | null) => (v === null ? null : round(v * 1000, 2));
    return {
      t: round(t),
      phase,
      server: {
        rssMiB: round(rssOf(this.pid) / MiB),
        heapUsedMiB: mib(m('custos_nodejs_heap_size_used_bytes')),
        heapTotalMiB: mib(m('custos_nodejs_heap_size_total_bytes')),
        externalMiB: mib(m('custos_nodejs_external_memory_bytes')),
        loopLagP99Ms: ms(m('custos_nodejs_eventloop_lag_p99_seconds')),
        loopLagMaxMs: ms(m('custos_nodejs_eventloop_lag_max_seconds')),
        activeHandles: m('custos_nodejs_active_handles_total'),
        openFds: m('custos_process_open_fds'),
        cpuPercent: this.cpuPercent(),
      },
      load1: round(os.loadavg()[0], 2),
      pg: pgState,
      redis: redisState,
      rows,
      counters: {
        tokenRequests: labelled('custos_token_requests_total'),
        refreshes: labelled('custos_token_refreshes_total'),
        deniedFolded: Object.values(labelled('custos_denials_folded_total')).reduce((a, b) => a + b, 0),
        throttled: Object.values(labelled('custos_auth_throttled_total')).reduce((a, b) => a + b, 0),
        providerRefreshCalls: this.op.tokenRequests.refresh_token,
      },
      load,
      logs: this.logs.take(),
    };
  }

  private cpu: { ticks: number; at: number } | null = null;

  /** From /proc/<pid>/stat: user + system time in clock ticks (100 a second on Linux). */
  private cpuPercent(): number | null {
    try {
      const fields = fs.readFileSync(`/proc/${this.pid}/stat`, 'utf8').split(') ')[1].split(' ');
      const ticks = Number(fields[11]) + Number(fields[12]);
      const now = Date.now();
      const prev = this.cpu;
      this.cpu = { ticks, at: now };
      return prev ? round(((ticks - prev.ticks) / 100 / ((now - prev.at) / 1000)) * 100) : null;
    } catch {
      return null;
    }
  }

  private async metrics(): Promise<Map<string, number>> {
    try {
      const res = await fetch(`${this.url}/metrics`);
      return parsePrometheus(await res.text());
    } catch {
      return new Map();
    }
  }

  private async pg(): Promise<Sample['pg']> {
    const r = await this.db.query<{ state: string | null; n: number }>(
      `SELECT state, count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = 'custos' GROUP BY state`,
    );
    const byState: Record<string, number> = {};
    for (const row of r.rows) byState[row.state ?? 'none'] = row.n;
    return { total: r.rows.reduce((a, b) => a + b.n, 0), byState };
  }

  private async rows(): Promise<Sample['rows']> {
    const r = await this.db.query<Record<string, string | number>>(
      `SELECT (SELECT count(*) FROM client_assertions_used)::int AS assertions,
              (SELECT count(*) FROM connect_sessions)::int AS sessions,
              (SELECT count(*) FROM connect_sessions WHERE status = 'pending')::int AS pending,
              (SELECT count(*) FROM connect_sessions WHERE status = 'pending' AND expires_at > now())::int AS live,
              (SELECT count(*) FROM connections)::int AS connections,
              (SELECT count(*) FROM connections WHERE status = 'needs_reauth')::int AS reauth,
              (SELECT count(*) FROM connectors)::int AS connectors,
              (SELECT count(*) FROM audit_events)::int AS audit,
              (SELECT coalesce(max(id), 0) FROM audit_events)::bigint AS audit_max`,
    );
    const sizes = await this.db.query<{ relname: string; kib: number; dead: number }>(
      `SELECT c.relname, (pg_total_relation_size(c.oid) / 1024)::int AS kib, coalesce(s.n_dead_tup, 0)::int AS dead
         FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
        WHERE c.relkind = 'r' AND c.relname = ANY($1)`,
      [['audit_events', 'connect_sessions', 'client_assertions_used', 'connections', 'connectors']],
    );
    const row = r.rows[0];
    return {
      clientAssertionsUsed: Number(row.assertions),
      connectSessions: Number(row.sessions),
      connectSessionsPending: Number(row.pending),
      connectSessionsPendingUnexpired: Number(row.live),
      connections: Number(row.connections),
      connectionsNeedsReauth: Number(row.reauth),
      connectors: Number(row.connectors),
      auditEvents: Number(row.audit),
      auditMaxId: Number(row.audit_max),
      relationKiB: Object.fromEntries(sizes.rows.map((s) => [s.relname, s.kib])),
      deadTuples: Object.fromEntries(sizes.rows.map((s) => [s.relname, s.dead])),
    };
  }

  private async redisState(): Promise<Sample['redis']> {
    const keys: string[] = [];
    for await (const batch of this.redis.scanStream({
      match: `${this.prefix}:*`,
      count: 1000,
    }) as AsyncIterable<string[]>) {
      keys.push(...batch);
    }
    const unique = [...new Set(keys)];
    const byGroup: Record<string, number> = {};
    for (const k of unique) {
      const g = keyGroup(k.slice(this.prefix.length + 1));
      byGroup[g] = (byGroup[g] ?? 0) + 1;
    }
    let withoutExpiry = 0;
    let bytes = 0;
    for (let i = 0; i < unique.length; i += 1000) {
      const chunk = unique.slice(i, i + 1000);
      const pipe = this.redis.pipeline();
      for (const k of chunk) pipe.pttl(k).memory('USAGE', k);
      const out = (await pipe.exec()) ?? [];
      for (let j = 0; j < out.length; j += 2) {
        if (Number(out[j][1]) === -1) withoutExpiry++;
        bytes += Number(out[j + 1][1] ?? 0);
      }
    }
    const info = await this.redis.info('memory');
    const used = Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
    const q = `${this.prefix}:refresh`;
    const farScore = (Date.now() + 3600_000) * 0x1000;
    const [delayed, far, waiting, refreshEvents, maintenanceEvents, delayedIds] = await Promise.all([
      this.redis.zcard(`${q}:delayed`),
      this.redis.zcount(`${q}:delayed`, farScore, '+inf'),
      this.redis.llen(`${q}:wait`),
      this.redis.xlen(`${q}:events`).catch(() => 0),
      this.redis.xlen(`${this.prefix}:maintenance:events`).catch(() => 0),
      this.redis.zrange(`${q}:delayed`, 0, -1),
    ]);
    // Job ids are `<connection id>-v<row version>-f<failures>` (src/jobs/refresh-jobs.ts).
    const jobs = delayedIds.flatMap((id) => {
      const m = /^([0-9a-f-]{36})-v(\d+)-f\d+$/.exec(id);
      return m ? [{ id: m[1], version: Number(m[2]) }] : [];
    });
    const superseded = await this.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM unnest($1::uuid[], $2::int[]) AS j(id, v)
         LEFT JOIN connections c ON c.id = j.id WHERE c.id IS NULL OR c.version > j.v`,
      [jobs.map((j) => j.id), jobs.map((j) => j.version)],
    );
    return {
      keys: unique.length,
      withoutExpiry,
      byGroup,
      prefixMemoryMiB: round(bytes / MiB, 2),
      usedMemoryMiB: round(used / MiB, 2),
      refreshDelayed: delayed,
      refreshDelayedBeyondOneHour: far,
      refreshJobsSuperseded: superseded.rows[0].n,
      refreshWaiting: waiting,
      eventStreams: { refresh: refreshEvents, maintenance: maintenanceEvents },
    };
  }
}

/**
 * A Redis key's group, its ids taken out: `refresh:<job>` for a BullMQ job hash, `refresh:delayed` for the
 * queue's own structures, `fail:address` for the failure counters.
 */
function keyGroup(rest: string): string {
  const parts = rest.split(':');
  if (parts[0] === 'fail') return `fail:${parts[1] ?? '?'}`;
  if (parts.length === 1) return parts[0];
  const second = parts[1];
  const isId = /\d/.test(second) && !/^[a-z-]+$/.test(second);
  if (!isId) return `${parts[0]}:${second}`;
  return parts.length > 2 ? `${parts[0]}:<job>:${parts.slice(2).join(':')}` : `${parts[0]}:<job>`;
}

interface SeriesSpec {
  key: string;
  label: string;
  unit: string;
  /** `level`: a gauge that must level off; `rate`: a running total whose rate per minute must stay steady. */
  kind: 'level' | 'rate';
  get(s: Sample): number | null | undefined;
  /** What counts as no change: max(abs, rel × the middle third's mean). */
  abs: number;
  rel: number;
  /** A hard bound by configuration (a pool's size): staying within it is levelling off. */
  bound?: number;
}

const goodKinds: Kind[] = ['basic', 'jwt', 'refreshRead'];
const perSecond = (s: Sample, f: (l: LoadStats) => number) =>
  s.load && s.load.intervalMs > 0 ? f(s.load) / (s.load.intervalMs / 1000) : null;

const SERIES: SeriesSpec[] = [
  {
    key: 'rss',
    label: 'server RSS',
    unit: 'MiB',
    kind: 'level',
    get: (s) => s.server.rssMiB,
    abs: 10,
    rel: 0.03,
  },
  {
    key: 'heapUsed',
    label: 'V8 heap used',
    unit: 'MiB',
    kind: 'level',
    get: (s) => s.server.heapUsedMiB,
    abs: 6,
    rel: 0.05,
  },
  {
    key: 'heapTotal',
    label: 'V8 heap total',
    unit: 'MiB',
    kind: 'level',
    get: (s) => s.server.heapTotalMiB,
    abs: 6,
    rel: 0.05,
  },
  {
    key: 'external',
    label: 'external memory',
    unit: 'MiB',
    kind: 'level',
    get: (s) => s.server.externalMiB,
    abs: 6,
    rel: 0.05,
  },
  {
    key: 'loopLag',
    label: 'event-loop lag p99',
    unit: 'ms',
    kind: 'level',
    get: (s) => s.server.loopLagP99Ms,
    abs: 5,
    rel: 0.2,
  },
  {
    key: 'cpu',
    label: 'server CPU',
    unit: '% of a core',
    kind: 'level',
    get: (s) => s.server.cpuPercent,
    abs: 10,
    rel: 0.15,
  },
  {
    key: 'handles',
    label: 'active handles',
    unit: '',
    kind: 'level',
    get: (s) => s.server.activeHandles,
    abs: 20,
    rel: 0.1,
  },
  {
    key: 'pg',
    label: 'PostgreSQL connections',
    unit: '',
    kind: 'level',
    get: (s) => s.pg?.total,
    abs: 1,
    rel: 0,
    bound: POOL_SIZE,
  },
  {
    key: 'redisKeys',
    label: 'Redis keys under the prefix',
    unit: '',
    kind: 'level',
    get: (s) => s.redis?.keys,
    abs: 50,
    rel: 0.02,
  },
  {
    key: 'redisJobs',
    label: 'refresh jobs of superseded row versions',
    unit: '',
    kind: 'level',
    get: (s) => s.redis?.refreshJobsSuperseded,
    abs: 50,
    rel: 0.05,
  },
  {
    key: 'redisPrefixMemory',
    label: 'Redis memory of the prefix',
    unit: 'MiB',
    kind: 'level',
    get: (s) => s.redis?.prefixMemoryMiB,
    abs: 0.5,
    rel: 0.03,
  },
  {
    key: 'redisUsed',
    label: 'Redis used_memory (whole server)',
    unit: 'MiB',
    kind: 'level',
    get: (s) => s.redis?.usedMemoryMiB,
    abs: 2,
    rel: 0.03,
  },
  {
    key: 'assertions',
    label: 'client_assertions_used rows',
    unit: '',
    kind: 'level',
    get: (s) => s.rows?.clientAssertionsUsed,
    abs: 200,
    rel: 0.05,
  },
  {
    key: 'sessionsLive',
    label: 'connect_sessions pending, unexpired',
    unit: '',
    kind: 'level',
    get: (s) => s.rows?.connectSessionsPendingUnexpired,
    abs: 100,
    rel: 0.05,
  },
  {
    key: 'sessionsPending',
    label: 'connect_sessions pending (expired included)',
    unit: '',
    kind: 'level',
    get: (s) => s.rows?.connectSessionsPending,
    abs: 100,
    rel: 0.05,
  },
  {
    key: 'audit',
    label: 'audit_events rows',
    unit: '/min',
    kind: 'rate',
    get: (s) => s.rows?.auditEvents,
    abs: 100,
    rel: 0.15,
  },
  {
    key: 'connections',
    label: 'connections rows',
    unit: '/min',
    kind: 'rate',
    get: (s) => s.rows?.connections,
    abs: 5,
    rel: 0.25,
  },
  {
    key: 'refreshed',
    label: 'background refreshes',
    unit: '/min',
    kind: 'rate',
    get: (s) => s.counters.refreshes.refreshed,
    abs: 20,
    rel: 0.15,
  },
  {
    key: 'sent',
    label: 'exchanges sent',
    unit: '/s',
    kind: 'level',
    get: (s) => perSecond(s, (l) => sumKinds(l, 'sent')),
    abs: 5,
    rel: 0.03,
  },
  {
    key: 'ok',
    label: 'good exchanges answered 200',
    unit: '/s',
    kind: 'level',
    get: (s) => perSecond(s, (l) => goodKinds.reduce((a, k) => a + (l.exchanges[k].byStatus['200'] ?? 0), 0)),
    abs: 5,
    rel: 0.03,
  },
  {
    key: 'unexpected',
    label: 'unexpected answers',
    unit: '/s',
    kind: 'level',
    get: (s) =>
      perSecond(
        s,
        (l) => sumKinds(l, 'unexpected') + Object.values(l.admin).reduce((a, k) => a + k.unexpected, 0),
      ),
    abs: 0.1,
    rel: 0,
  },
  {
    key: 'p50',
    label: 'good exchanges p50 latency',
    unit: 'ms',
    kind: 'level',
    get: (s) => (s.load ? Math.max(...goodKinds.map((k) => s.load!.exchanges[k].p50Ms ?? 0)) : null),
    abs: 10,
    rel: 0.5,
  },
  {
    key: 'p99',
    label: 'good exchanges p99 latency',
    unit: 'ms',
    kind: 'level',
    get: (s) => (s.load ? Math.max(...goodKinds.map((k) => s.load!.exchanges[k].p99Ms ?? 0)) : null),
    abs: 50,
    rel: 0.5,
  },
];

function sumKinds(l: LoadStats, field: 'sent' | 'unexpected'): number {
  return Object.values(l.exchanges).reduce((a, k) => a + k[field], 0);
}

interface ThirdStats {
  n: number;
  /** Minutes between the first and the last point. */
  spanMin: number;
  first: number;
  last: number;
  min: number;
  max: number;
  mean: number;
  slopePerMin: number;
}

function stats(points: [number, number][]): ThirdStats | null {
  if (points.length === 0) return null;
  const ys = points.map((p) => p[1]);
  const n = points.length;
  const mx = points.reduce((a, p) => a + p[0], 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  const sxx = points.reduce((a, p) => a + (p[0] - mx) ** 2, 0);
  const sxy = points.reduce((a, p) => a + (p[0] - mx) * (p[1] - my), 0);
  return {
    n,
    spanMin: (points[n - 1][0] - points[0][0]) / 60,
    first: ys[0],
    last: ys[n - 1],
    min: Math.min(...ys),
    max: Math.max(...ys),
    mean: my,
    slopePerMin: sxx > 0 ? (sxy / sxx) * 60 : 0,
  };
}

export interface Verdict {
  series: string;
  unit: string;
  kind: 'level' | 'rate';
  start: number | null;
  middle: number | null;
  end: number | null;
  /** level: peak, floor and fitted drift of the last third against the middle third; rate: both rates. */
  numbers: Record<string, number>;
  verdict: string;
}

function judge(samples: Sample[], durationS: number): Verdict[] {
  const during = samples.filter((s) => s.phase === 'load');
  const third = durationS / 3;
  return SERIES.map((spec): Verdict => {
    const pts = (from: number, to: number) =>
      during
        .filter((s) => s.t > from && s.t <= to)
        .map((s) => [s.t, spec.get(s)] as [number, number | null | undefined])
        .filter((p): p is [number, number] => typeof p[1] === 'number' && Number.isFinite(p[1]));
    const first = stats(pts(0, third));
    const middle = stats(pts(third, 2 * third));
    const last = stats(pts(2 * third, durationS + 1));
    const base: Omit<Verdict, 'numbers' | 'verdict'> = {
      series: spec.label,
      unit: spec.unit,
      kind: spec.kind,
      start: first ? round(first.first, 2) : null,
      middle: null,
      end: last ? round(last.last, 2) : null,
    };
    if (!middle || !last) return { ...base, numbers: {}, verdict: 'no data' };
    if (spec.kind === 'rate') {
      const rate = (x: ThirdStats) => (x.spanMin > 0 ? (x.last - x.first) / x.spanMin : 0);
      const rateM = rate(middle);
      const rateL = rate(last);
      const tol = Math.max(spec.abs, spec.rel * Math.abs(rateM));
      const verdict =
        Math.abs(rateL - rateM) <= tol ? 'steady rate' : rateL > rateM ? 'rate rising' : 'rate falling';
      return {
        ...base,
        middle: round(rateM, 1),
        end: round(rateL, 1),
        start: first ? round(rate(first), 1) : null,
        numbers: {
          ratePerMinMiddle: round(rateM, 1),
          ratePerMinLast: round(rateL, 1),
          tolerance: round(tol, 1),
        },
        verdict,
      };
    }
    const tol = Math.max(spec.abs, spec.rel * Math.abs(middle.mean));
    const peakRise = last.max - middle.max;
    const floorRise = last.min - middle.min;
    const drift = last.slopePerMin * (third / 60);
    // Levels off: the last third neither climbs above the middle third's peak nor keeps climbing itself (the
    // fitted drift over its length); a series that reached its plateau during the middle third has a higher
    // floor afterwards without growing any more. Two shapes that also level off but fail that test: a
    // sawtooth (a table pruned every 10 minutes: the fitted drift depends on where the third cuts the
    // teeth, but peak and floor stay where they were), and a lone spike (a higher peak, with floor and drift
    // flat), which is named as such.
    const withinBound = spec.bound !== undefined && last.max <= spec.bound;
    const plateau = peakRise <= tol && drift <= tol;
    const sawtooth = peakRise <= tol && floorRise <= tol;
    const spike = floorRise <= tol && drift <= tol;
    return {
      ...base,
      middle: round(middle.mean, 2),
      numbers: {
        middleMin: round(middle.min, 2),
        middleMax: round(middle.max, 2),
        lastMin: round(last.min, 2),
        lastMax: round(last.max, 2),
        peakRise: round(peakRise, 2),
        floorRise: round(floorRise, 2),
        lastThirdSlopePerMin: round(last.slopePerMin, 3),
        lastThirdDrift: round(drift, 2),
        tolerance: round(tol, 2),
      },
      verdict: withinBound
        ? `levels off (within its bound, ${spec.bound})`
        : plateau
          ? 'levels off'
          : sawtooth
            ? 'levels off (sawtooth: same peak and floor)'
            : spike
              ? `levels off, one spike (peak +${round(peakRise, 2)}${spec.unit ? ` ${spec.unit}` : ''}; floor and drift flat)`
              : `grows (peak +${round(peakRise, 2)}, drift +${round(drift, 2)}${spec.unit ? ` ${spec.unit}` : ''} over the last third)`,
    };
  });
}

/** Audit events written in each third of the run, by action (from the ids sampled at the thirds' bounds). */
async function auditByThird(
  db: pg.Client,
  samples: Sample[],
  durationS: number,
): Promise<Record<string, Record<string, number>>> {
  const idAt = (t: number) => {
    const before = samples.filter((s) => s.t <= t && s.rows);
    return before.length > 0 ? before[before.length - 1].rows!.auditMaxId : 0;
  };
  const bounds = [0, durationS / 3, (2 * durationS) / 3, durationS + 1].map(idAt);
  const names = ['first', 'middle', 'last'];
  const out: Record<string, Record<string, number>> = {};
  for (let i = 0; i < 3; i++) {
    const r = await db.query<{ action: string; n: number }>(
      `SELECT action, count(*)::int AS n FROM audit_events WHERE id > $1 AND id <= $2 GROUP BY action ORDER BY n DESC`,
      [bounds[i], bounds[i + 1]],
    );
    out[names[i]] = Object.fromEntries(r.rows.map((row) => [row.action, row.n]));
  }
  return out;
}

function totals(samples: Sample[]): Record<string, unknown> {
  const exchanges: Record<string, { sent: number; byStatus: Record<string, number>; unexpected: number }> =
    {};
  const adminWrites: typeof exchanges = {};
  const unexpectedSamples: string[] = [];
  let skipped = 0;
  const add = (
    into: typeof exchanges,
    name: string,
    k: { sent: number; byStatus: Record<string, number>; unexpected: number },
  ) => {
    const e = (into[name] ??= { sent: 0, byStatus: {}, unexpected: 0 });
    e.sent += k.sent;
    e.unexpected += k.unexpected;
    for (const [st, n] of Object.entries(k.byStatus)) e.byStatus[st] = (e.byStatus[st] ?? 0) + n;
  };
  for (const s of samples) {
    if (!s.load) continue;
    skipped += s.load.skipped;
    for (const [name, k] of Object.entries(s.load.exchanges)) add(exchanges, name, k);
    for (const [name, k] of Object.entries(s.load.admin)) add(adminWrites, name, k);
    if (unexpectedSamples.length < 20)
      unexpectedSamples.push(...s.load.samples.slice(0, 20 - unexpectedSamples.length));
  }
  const lastSample = samples[samples.length - 1];
  const firstLoad = samples.find((s) => s.phase === 'load');
  return {
    exchanges,
    adminWrites,
    skippedByGenerator: skipped,
    unexpectedSamples,
    warnLines: samples.reduce((a, s) => a + s.logs.warn, 0),
    errorLines: samples.reduce((a, s) => a + s.logs.error, 0),
    tokenRequests: lastSample.counters.tokenRequests,
    refreshes: lastSample.counters.refreshes,
    providerRefreshCalls:
      lastSample.counters.providerRefreshCalls - (firstLoad?.counters.providerRefreshCalls ?? 0),
    deniedFolded: lastSample.counters.deniedFolded,
    throttled: lastSample.counters.throttled,
    connectionsNeedingReauth: lastSample.rows?.connectionsNeedsReauth ?? null,
    redisKeyGroupsAtEnd: lastSample.redis?.byGroup ?? null,
    relationKiBAtEnd: lastSample.rows?.relationKiB ?? null,
  };
}

function progressLine(s: Sample): string {
  const l = s.load;
  const sent = l ? sumKinds(l, 'sent') : 0;
  const unexpected = l ? sumKinds(l, 'unexpected') : 0;
  return (
    `t=${Math.round(s.t)}s rss=${s.server.rssMiB}MiB heap=${s.server.heapUsedMiB}MiB lag99=${s.server.loopLagP99Ms}ms ` +
    `pg=${s.pg?.total} redisKeys=${s.redis?.keys} assertions=${s.rows?.clientAssertionsUsed} ` +
    `sessionsPending=${s.rows?.connectSessionsPending} audit=${s.rows?.auditEvents} sent=${sent} unexpected=${unexpected} ` +
    `warn/error=${s.logs.warn}/${s.logs.error}`
  );
}

function printReport(verdicts: Verdict[], t: Record<string, unknown>): void {
  const fmt = (v: number | null) => (v === null ? '–' : String(v));
  const lines = [
    '| series | unit | start | middle third | end | verdict |',
    '| --- | --- | --- | --- | --- | --- |',
    ...verdicts.map(
      (v) =>
        `| ${v.series} | ${v.unit} | ${fmt(v.start)} | ${fmt(v.middle)} | ${fmt(v.end)} | ${v.verdict} |`,
    ),
  ];
  process.stdout.write(`\n${lines.join('\n')}\n\n`);
  for (const v of verdicts) process.stdout.write(`${v.series}: ${JSON.stringify(v.numbers)}\n`);
  process.stdout.write(`\ntotals: ${JSON.stringify(t, null, 1)}\n`);
}

/** Which code ran: the commit and whether the tree had changes (read-only git calls). */
function codeVersion(): { commit: string | null; changedFiles: string[] } {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root }).toString().trim();
    const changedFiles = execFileSync('git', ['status', '--porcelain'], { cwd: root })
      .toString()
      .split('\n')
      .filter(Boolean);
    return { commit, changedFiles };
  } catch {
    return { commit: null, changedFiles: [] };
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
