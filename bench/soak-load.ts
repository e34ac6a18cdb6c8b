/**
 * The soak's load generator, forked by bench/soak.ts so that the load never shares an event loop with Custos
 * or with the sampler. Reads a SoakJob as JSON on stdin and sends, open loop (at a fixed rate whatever the
 * answers, as real traffic does), a mix of token exchanges: good ones over HTTP Basic and private_key_jwt,
 * reads of connections that the background refresh keeps cycling, consent_required for users who never
 * connected, scope refusals, and wrong client secrets or unknown client ids from a few attacker addresses.
 * Alongside, periodic admin writes: credential imports and connector creations (each deleted a period later).
 *
 * Behind a trusted proxy (Custos runs with CUSTOS_TRUST_PROXY=127.0.0.1), every request names its client in
 * X-Forwarded-For: a user's own address for the good traffic, one of a few addresses for the attacks.
 *
 * Answers `stats` messages (IPC) with the counts and latencies since the previous one, and `stop` by
 * stopping, waiting for open requests, answering with the final counts and exiting.
 */
import http from 'node:http';
import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import { importJWK, SignJWT, type CryptoKey, type JWK } from 'jose';

export type Kind = 'basic' | 'jwt' | 'refreshRead' | 'consent' | 'scope' | 'attack';
export type AdminKind = 'import' | 'connectorCreate' | 'connectorDelete';

export interface SoakJob {
  url: string;
  rate: number;
  /** Shares of the exchange rate by kind (normalised). */
  mix: Record<Kind, number>;
  tenantId: string;
  adminKey: string;
  idp: { issuer: string; audience: string; privateJwk: JWK; kid: string; tokenSeconds: number };
  basicConnector: { clientId: string; clientSecret: string };
  jwtConnector: { clientId: string; privateJwk: JWK; kid: string; assertionSeconds: number };
  users: { github: number; refresh: number; unconnected: number };
  attackAddresses: number;
  importsPerSecond: number;
  connectorEverySeconds: number;
}

export interface KindStats {
  sent: number;
  answered: number;
  /** Answers by HTTP status ('timeout' and 'error' for requests that got none). */
  byStatus: Record<string, number>;
  /** Answers other than the expected ones (e.g. a 503, or a 401 for a good request). */
  unexpected: number;
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
}

export interface LoadStats {
  /** Milliseconds covered by these counts. */
  intervalMs: number;
  inFlight: number;
  /** Requests not sent because too many were already open (the generator's own cap). */
  skipped: number;
  exchanges: Record<Kind, KindStats>;
  admin: Record<AdminKind, KindStats>;
  /** A few unexpected answers, for diagnosis (status and error code only). */
  samples: string[];
}

const KINDS: Kind[] = ['basic', 'jwt', 'refreshRead', 'consent', 'scope', 'attack'];
const ADMIN_KINDS: AdminKind[] = ['import', 'connectorCreate', 'connectorDelete'];
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const MAX_IN_FLIGHT = 4000;
const TIMEOUT_MS = 30_000;
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

class Recorder {
  sent = 0;
  answered = 0;
  byStatus: Record<string, number> = {};
  unexpected = 0;
  latencies: number[] = [];

  take(): KindStats {
    const sorted = this.latencies.sort((a, b) => a - b);
    const pick = (p: number) =>
      sorted.length === 0 ? null : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
    const out: KindStats = {
      sent: this.sent,
      answered: this.answered,
      byStatus: this.byStatus,
      unexpected: this.unexpected,
      p50Ms: pick(0.5),
      p99Ms: pick(0.99),
      maxMs: sorted.length === 0 ? null : sorted[sorted.length - 1],
    };
    this.sent = 0;
    this.answered = 0;
    this.byStatus = {};
    this.unexpected = 0;
    this.latencies = [];
    return out;
  }
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

function send(
  url: URL,
  method: string,
  headers: Record<string, string>,
  body: string | undefined,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method,
        agent,
        headers: body === undefined ? headers : { ...headers, 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let parsed: Record<string, unknown> = {};
          try {
            const text = Buffer.concat(chunks).toString('utf8');
            if (text) parsed = JSON.parse(text) as Record<string, unknown>;
          } catch {
            // Not JSON: judged by status alone.
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(TIMEOUT_MS, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

/** What a kind of request must get back; anything else counts as unexpected. */
function expected(kind: Kind | AdminKind, a: Answer): boolean {
  switch (kind) {
    case 'basic':
    case 'jwt':
    case 'refreshRead':
      return a.status === 200 && typeof a.body.access_token === 'string';
    case 'consent':
      return a.status === 400 && a.body.error === 'consent_required';
    case 'scope':
      return a.status === 400 && a.body.error === 'invalid_scope';
    case 'attack':
      return (a.status === 401 && a.body.error === 'invalid_client') || a.status === 429;
    case 'import':
      return a.status === 200 || a.status === 201;
    case 'connectorCreate':
      return a.status === 201;
    case 'connectorDelete':
      return a.status === 200 || a.status === 204;
  }
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const job = JSON.parse(Buffer.concat(chunks).toString('utf8')) as SoakJob;
  const base = new URL(job.url);
  const tokenUrl = new URL('/oauth/token', base);
  const idpKey = (await importJWK(job.idp.privateJwk, 'ES256')) as CryptoKey;
  const jwtKey = (await importJWK(job.jwtConnector.privateJwk, 'ES256')) as CryptoKey;
  const basicAuth =
    'Basic ' +
    Buffer.from(
      `${encodeURIComponent(job.basicConnector.clientId)}:${encodeURIComponent(job.basicConnector.clientSecret)}`,
    ).toString('base64');

  const recorders = Object.fromEntries([...KINDS, ...ADMIN_KINDS].map((k) => [k, new Recorder()])) as Record<
    Kind | AdminKind,
    Recorder
  >;
  const unexpectedSamples: string[] = [];
  let inFlight = 0;
  let skipped = 0;
  let lastStats = Date.now();

  // A user's token lives tokenSeconds and the agent replaces it at half-life, as an SDK refreshing ahead does.
  const userTokens = new Map<string, { token: string; replaceAt: number }>();
  async function userToken(user: string): Promise<string> {
    const now = Date.now();
    const have = userTokens.get(user);
    if (have && have.replaceAt > now) return have.token;
    const iat = Math.floor(now / 1000);
    const token = await new SignJWT({ azp: 'soak-agent' })
      .setProtectedHeader({ alg: 'ES256', kid: job.idp.kid })
      .setIssuer(job.idp.issuer)
      .setAudience(job.idp.audience)
      .setSubject(user)
      .setIssuedAt(iat)
      .setExpirationTime(iat + job.idp.tokenSeconds)
      .sign(idpKey);
    userTokens.set(user, { token, replaceAt: now + (job.idp.tokenSeconds * 1000) / 2 });
    return token;
  }

  async function clientAssertion(): Promise<string> {
    const iat = Math.floor(Date.now() / 1000);
    return new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: job.jwtConnector.kid })
      .setIssuer(job.jwtConnector.clientId)
      .setSubject(job.jwtConnector.clientId)
      .setAudience(tokenUrl.href)
      .setJti(randomUUID())
      .setIssuedAt(iat)
      .setExpirationTime(iat + job.jwtConnector.assertionSeconds)
      .sign(jwtKey);
  }

  /** A user's own address: 10.x.y.z from the user's number, so each user keeps one. */
  const userAddress = (n: number) => `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;

  async function exchangeRequest(
    kind: Kind,
  ): Promise<{ headers: Record<string, string>; form: Record<string, string> }> {
    const common = { 'content-type': 'application/x-www-form-urlencoded' };
    const form = (user: string, audience: string, scope: string) =>
      userToken(user).then((t) => ({
        grant_type: EXCHANGE,
        subject_token: t,
        subject_token_type: JWT_TYPE,
        audience,
        scope,
      }));
    switch (kind) {
      case 'basic': {
        const n = randomInt(job.users.github);
        return {
          headers: { ...common, authorization: basicAuth, 'x-forwarded-for': userAddress(n) },
          form: await form(`user-${n}`, 'github', 'repo'),
        };
      }
      case 'jwt': {
        const n = randomInt(job.users.github);
        return {
          headers: { ...common, 'x-forwarded-for': userAddress(n) },
          form: {
            ...(await form(`user-${n}`, 'github', 'repo')),
            client_assertion_type: ASSERTION_TYPE,
            client_assertion: await clientAssertion(),
          },
        };
      }
      case 'refreshRead': {
        const n = randomInt(job.users.refresh);
        return {
          headers: { ...common, authorization: basicAuth, 'x-forwarded-for': userAddress(100_000 + n) },
          form: await form(`rf-${n}`, 'inhouse', 'repo'),
        };
      }
      case 'consent': {
        const n = randomInt(job.users.unconnected);
        return {
          headers: { ...common, authorization: basicAuth, 'x-forwarded-for': userAddress(200_000 + n) },
          form: await form(`nc-${n}`, 'github', 'repo'),
        };
      }
      case 'scope': {
        const n = randomInt(job.users.github);
        return {
          headers: { ...common, authorization: basicAuth, 'x-forwarded-for': userAddress(n) },
          form: await form(`user-${n}`, 'github', 'admin:org'),
        };
      }
      case 'attack': {
        // Half guess the real connector's secret, half make up client ids; all from a few addresses.
        const clientId =
          randomInt(2) === 0 ? job.basicConnector.clientId : `soak-unknown-${randomBytes(6).toString('hex')}`;
        const wrong =
          'Basic ' + Buffer.from(`${clientId}:${randomBytes(18).toString('base64url')}`).toString('base64');
        return {
          headers: {
            ...common,
            authorization: wrong,
            'x-forwarded-for': `203.0.113.${1 + randomInt(job.attackAddresses)}`,
          },
          form: await form(`user-${randomInt(job.users.github)}`, 'github', 'repo'),
        };
      }
    }
  }

  function record(kind: Kind | AdminKind, started: number, a: Answer | Error): void {
    const r = recorders[kind];
    inFlight--;
    if (a instanceof Error) {
      const key = a.message === 'timeout' ? 'timeout' : 'error';
      r.byStatus[key] = (r.byStatus[key] ?? 0) + 1;
      r.unexpected++;
      if (unexpectedSamples.length < 10) unexpectedSamples.push(`${kind}: ${key} ${a.message}`);
      return;
    }
    r.answered++;
    r.latencies.push(Date.now() - started);
    r.byStatus[a.status] = (r.byStatus[a.status] ?? 0) + 1;
    if (!expected(kind, a)) {
      r.unexpected++;
      if (unexpectedSamples.length < 10) {
        unexpectedSamples.push(`${kind}: ${a.status} ${JSON.stringify(a.body.error ?? a.body.code ?? '')}`);
      }
    }
  }

  function fire(
    kind: Kind | AdminKind,
    build: () => Promise<{ method: string; url: URL; headers: Record<string, string>; body?: string }>,
  ): void {
    if (inFlight >= MAX_IN_FLIGHT) {
      skipped++;
      return;
    }
    inFlight++;
    recorders[kind].sent++;
    const started = Date.now();
    build()
      .then((r) => send(r.url, r.method, r.headers, r.body))
      .then(
        (a) => record(kind, started, a),
        (err: unknown) => record(kind, started, err instanceof Error ? err : new Error(String(err))),
      );
  }

  // Cumulative weights for picking a kind.
  const total = KINDS.reduce((s, k) => s + job.mix[k], 0);
  const cumulative = KINDS.map(
    (
      (acc) => (k: Kind) =>
        (acc += job.mix[k] / total)
    )(0),
  );
  const pick = (): Kind => {
    const x = Math.random();
    const i = cumulative.findIndex((c) => x < c);
    return KINDS[i < 0 ? KINDS.length - 1 : i];
  };

  const t0 = Date.now();
  let sentExchanges = 0;
  const exchangeTimer = setInterval(() => {
    const due = Math.floor(((Date.now() - t0) / 1000) * job.rate);
    while (sentExchanges < due) {
      sentExchanges++;
      const kind = pick();
      fire(kind, async () => {
        const { headers, form } = await exchangeRequest(kind);
        return { method: 'POST', url: tokenUrl, headers, body: new URLSearchParams(form).toString() };
      });
    }
  }, 5);

  const adminHeaders = {
    authorization: `Bearer ${job.adminKey}`,
    'content-type': 'application/json',
    'x-forwarded-for': '192.0.2.10',
  };
  const t = `/v1/tenants/${job.tenantId}`;
  let imported = 0;
  const importTimer = setInterval(
    () => {
      // Mostly a user's credential replaced (a re-import or a reconnect), sometimes a new user's.
      const user = randomInt(5) === 0 ? `imp-${imported++}` : `user-${randomInt(job.users.github)}`;
      fire('import', async () => ({
        method: 'PUT',
        url: new URL(`${t}/users/${user}/connections/github`, base),
        headers: adminHeaders,
        body: JSON.stringify({
          type: 'oauth2',
          accessToken: `gho_soak_${randomBytes(16).toString('hex')}`,
          refreshToken: `ghr_soak_${randomBytes(16).toString('hex')}`,
          scopes: ['repo', 'read:user'],
          // GitHub App user tokens live 8 hours.
          expiresAt: new Date(Date.now() + 8 * 3600_000).toISOString(),
        }),
      }));
    },
    Math.max(10, 1000 / job.importsPerSecond),
  );
  let previousConnector: string | undefined;
  let connectorsMade = 0;
  const connectorTimer = setInterval(() => {
    const old = previousConnector;
    previousConnector = undefined;
    if (old) {
      fire('connectorDelete', async () => ({
        method: 'DELETE',
        url: new URL(`${t}/connectors/${old}`, base),
        headers: { authorization: adminHeaders.authorization, 'x-forwarded-for': '192.0.2.10' },
      }));
    }
    inFlight++;
    recorders.connectorCreate.sent++;
    const started = Date.now();
    send(
      new URL(`${t}/connectors`, base),
      'POST',
      adminHeaders,
      JSON.stringify({
        name: `soak connector ${connectorsMade++}`,
        allowedProviders: ['github'],
        allowedScopes: { github: ['repo'] },
        delegation: 'user_token',
        auth: { method: 'client_secret_basic' },
      }),
    ).then(
      (a) => {
        if (typeof a.body.id === 'string') previousConnector = a.body.id;
        record('connectorCreate', started, a);
      },
      (err: unknown) => record('connectorCreate', started, err as Error),
    );
  }, job.connectorEverySeconds * 1000);

  const stats = (): LoadStats => {
    const now = Date.now();
    const out: LoadStats = {
      intervalMs: now - lastStats,
      inFlight,
      skipped,
      exchanges: Object.fromEntries(KINDS.map((k) => [k, recorders[k].take()])) as Record<Kind, KindStats>,
      admin: Object.fromEntries(ADMIN_KINDS.map((k) => [k, recorders[k].take()])) as Record<
        AdminKind,
        KindStats
      >,
      samples: unexpectedSamples.splice(0),
    };
    lastStats = now;
    skipped = 0;
    return out;
  };

  process.on('message', (m) => {
    if (m === 'stats') {
      process.send!({ type: 'stats', stats: stats() });
      return;
    }
    if (m !== 'stop') return;
    clearInterval(exchangeTimer);
    clearInterval(importTimer);
    clearInterval(connectorTimer);
    void (async () => {
      const until = Date.now() + TIMEOUT_MS + 1000;
      while (inFlight > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      process.send!({ type: 'stopped', stats: stats() }, () => process.exit(0));
    })();
  });
  process.send!({ type: 'ready' });
}

await main();
