/**
 * `npm run demo`: Custos on its embedded default, a local OAuth provider and a trusted identity provider,
 * all on 127.0.0.1 and offline, set up through the admin API (a tenant, the provider and the tenant's OAuth
 * app there, the identity provider, a connector, a connect link for the user alice). It prints the link to
 * open and the exact `curl` a connector runs to get alice's token; Ctrl-C stops everything.
 *
 * Settings (all optional): CUSTOS_DEMO_DIR (data folder, emptied on every run; default .custos-demo),
 * CUSTOS_DEMO_PORT, CUSTOS_DEMO_PROVIDER_PORT, CUSTOS_DEMO_IDP_PORT (default: free ports), and
 * CUSTOS_DEMO_FROM_SOURCE=1 to run Custos from src/ under tsx instead of the build.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CustosFailedError, prepareDataFolder, startCustos, type CustosChild } from './custos.js';
import { startIdentityProvider, type DemoIdentityProvider } from './identity-provider.js';
import { reservePort } from './loopback.js';
import { startOAuthProvider, type DemoProvider } from './oauth-provider.js';
import {
  api,
  IDP_NAME,
  PROVIDER_KEY,
  PROVIDER_NAME,
  setUpTenant,
  USER_TOKEN_AUDIENCE,
  type DemoTenant,
} from './setup.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const USER = 'alice';
/** The agent application alice uses, as her identity token names it (`azp`); the audit trail records it. */
const AGENT_APP = 'demo-agent-app';
const USER_TOKEN_HOURS = 8;
const PROVIDER_TOKEN_MINUTES = 10;

class UsageError extends Error {}

interface Settings {
  dataDir: string;
  custosPort: number;
  providerPort: number;
  idpPort: number;
  fromSource: boolean;
}

function settings(env: NodeJS.ProcessEnv): Settings {
  const port = (name: string): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return 0;
    if (!/^\d{1,5}$/.test(raw) || Number(raw) > 65535)
      throw new UsageError(`${name} must be a port (0 to 65535)`);
    return Number(raw);
  };
  return {
    dataDir: path.resolve(env.CUSTOS_DEMO_DIR || path.join(REPO_ROOT, '.custos-demo')),
    custosPort: port('CUSTOS_DEMO_PORT'),
    providerPort: port('CUSTOS_DEMO_PROVIDER_PORT'),
    idpPort: port('CUSTOS_DEMO_IDP_PORT'),
    fromSource: env.CUSTOS_DEMO_FROM_SOURCE === '1',
  };
}

const tty = process.stdout.isTTY === true;
const bold = (s: string) => (tty ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string) => (tty ? `\x1b[2m${s}\x1b[0m` : s);
const say = (s = '') => void process.stdout.write(s + '\n');
/** A word for the shell, in single quotes unless it needs none. */
const shellWord = (s: string) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/** Everything started so far, stopped in reverse order. */
const running: { name: string; stop: () => Promise<void> }[] = [];
let stopping = false;

async function stopAll(): Promise<void> {
  for (const r of running.reverse()) {
    await r.stop().catch((err: unknown) => say(`could not stop ${r.name}: ${(err as Error).message}`));
  }
  running.length = 0;
}

async function main(): Promise<void> {
  const s = settings(process.env);
  const startedAt = Date.now();
  const relDir = path.relative(process.cwd(), s.dataDir) || '.';
  say(bold('Custos demo') + dim(' (everything runs on 127.0.0.1; nothing leaves this machine)'));
  say(`Starting Custos on its embedded PostgreSQL in ${relDir}/ (emptied on every run)...`);

  await prepareDataFolder(s.dataDir);
  const custosPort = await reservePort(s.custosPort);
  const custosUrl = `http://127.0.0.1:${custosPort}`;
  const providerApp = { clientId: 'acme-demo-app', clientSecret: randomBytes(24).toString('base64url') };
  const tenantName = 'Acme (demo)';

  const provider: DemoProvider = await startOAuthProvider({
    port: s.providerPort,
    client: {
      ...providerApp,
      redirectUri: `${custosUrl}/connect/callback/${PROVIDER_KEY}`,
      displayName: tenantName,
    },
    suggestedAccount: USER,
    accessTokenTtlSeconds: PROVIDER_TOKEN_MINUTES * 60,
  });
  running.push({ name: PROVIDER_NAME, stop: () => provider.close() });
  const idp: DemoIdentityProvider = await startIdentityProvider(s.idpPort);
  running.push({ name: 'the identity provider', stop: () => idp.close() });

  // The first platform admin key, for this run only: it creates the tenant, and it is never shown.
  const platformKey = randomBytes(32).toString('base64url');
  const custos: CustosChild = startCustos({
    repoRoot: REPO_ROOT,
    dataDir: s.dataDir,
    port: custosPort,
    fromSource: s.fromSource,
    env: {
      CUSTOS_BOOTSTRAP_ADMIN_KEY: platformKey,
      // Custos refuses loopback and plain-http addresses for what a tenant configures (its SSRF guard),
      // except for hosts listed here: the two local providers.
      CUSTOS_OUTBOUND_ALLOW_HOSTS: `${provider.hostPort},${idp.hostPort}`,
      // An hour to try the link (the default is 15 minutes).
      CUSTOS_CONNECT_SESSION_TTL_SECONDS: '3600',
    },
  });
  running.push({ name: 'Custos', stop: () => custos.stop() });
  await custos.ready();
  void custos.exited.then((how) => {
    if (stopping) return;
    say(`\nCustos exited unexpectedly (${how}); its log is ${custos.logFile}`);
    void shutdown(1);
  });

  const tenant = await setUpTenant({
    baseUrl: custosUrl,
    platformKey,
    provider,
    providerApp,
    idp,
    userId: USER,
  });
  const adminKeyFile = path.join(s.dataDir, 'tenant-admin-key');
  fs.writeFileSync(adminKeyFile, tenant.adminKey + '\n', { mode: 0o600 });
  const userToken = await idp.userToken(USER, {
    audience: USER_TOKEN_AUDIENCE,
    azp: AGENT_APP,
    ttlSeconds: USER_TOKEN_HOURS * 3600,
  });
  const seconds = ((Date.now() - startedAt) / 1000).toFixed(1);
  printGuide({
    custosUrl,
    provider,
    idp,
    tenant,
    userToken,
    adminKeyFile: path.relative(process.cwd(), adminKeyFile),
    seconds,
    logFile: path.relative(process.cwd(), custos.logFile),
  });
  void watchSession(custosUrl, tenant);
}

function printGuide(g: {
  custosUrl: string;
  provider: DemoProvider;
  idp: DemoIdentityProvider;
  tenant: DemoTenant;
  userToken: string;
  adminKeyFile: string;
  logFile: string;
  seconds: string;
}): void {
  const { custosUrl, provider, tenant } = g;
  const c = tenant.connector;
  // client_secret_basic: id and secret are form-encoded before Basic (RFC 6749 §2.3.1). curl's -u does not
  // encode them, which is right only while neither needs it.
  const plain = [c.clientId, c.clientSecret].every((v) => encodeURIComponent(v) === v);
  const basic = plain
    ? `-u ${shellWord(`${c.clientId}:${c.clientSecret}`)}`
    : `-H ${shellWord(`Authorization: Basic ${Buffer.from(`${encodeURIComponent(c.clientId)}:${encodeURIComponent(c.clientSecret)}`).toString('base64')}`)}`;
  const P = PROVIDER_NAME;
  const lines = [
    `Ready in ${g.seconds} s.`,
    '',
    `${bold('Custos')}            ${custosUrl}  (API docs: ${custosUrl}/docs)`,
    `${bold(P)}     ${provider.issuer}  (a local OAuth provider standing in for GitHub, Google...)`,
    `${bold('Identity provider')} ${g.idp.issuer}  (the company sign-in whose tokens name the user)`,
    '',
    `Set up through the admin API: the tenant "${tenant.tenantName}" with its OAuth app at ${P}, the trusted`,
    `identity provider "${IDP_NAME}", and the connector "${c.name}" (an agent backend, say an MCP server),`,
    `which may use ${P} for a user who shows her own identity token.`,
    '',
    `${bold(`1. Connect ${USER}'s ${P} account.`)} Open this link in your browser, sign in as "${USER}"`,
    `   (no password) and allow access. The link works once, for an hour:`,
    '',
    `   ${tenant.session.url}`,
    '',
    `${bold(`2. Get ${USER}'s ${P} token, as the connector does.`)} It presents ${USER}'s identity token`,
    `   (a JWT signed by the identity provider, valid ${USER_TOKEN_HOURS} hours) and its own client credentials.`,
    `   Before step 1 the answer is consent_required, with a fresh connect link; after it, her token.`,
    '',
    `curl -sS ${custosUrl}/oauth/token \\`,
    `  ${basic} \\`,
    `  -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \\`,
    `  -d subject_token_type=urn:ietf:params:oauth:token-type:jwt \\`,
    `  -d subject_token=${g.userToken} \\`,
    `  -d audience=${PROVIDER_KEY}`,
    '',
    `${bold(`3. The token is ${USER}'s own at ${P}.`)} It lives ${PROVIDER_TOKEN_MINUTES} minutes; Custos refreshes it.`,
    '',
    `curl -sS ${provider.endpoints.userinfo} -H 'Authorization: Bearer PASTE_ACCESS_TOKEN_HERE'`,
    '',
    `${bold('4. Read the audit trail,')} where every step above is, with the tenant's auditor key (it reads only that):`,
    '',
    `curl -sS '${custosUrl}/v1/tenants/${tenant.tenantId}/audit/events?limit=20' \\`,
    `  -H 'Authorization: Bearer ${tenant.auditorKey}'`,
    '',
    dim(`The tenant admin key (it manages the whole tenant) is in ${g.adminKeyFile}; Custos's log is in`),
    dim(`${g.logFile}. Press Ctrl-C to stop everything.`),
  ];
  say(lines.join('\n'));
}

/** Tells the user when the link has been used, by reading the session's status (not an audited read). */
async function watchSession(custosUrl: string, tenant: DemoTenant): Promise<void> {
  const sessionPath = `/v1/tenants/${tenant.tenantId}/connect/sessions/${tenant.session.id}`;
  while (!stopping) {
    await new Promise((r) => setTimeout(r, 1000));
    if (stopping) return;
    const status = await api<{ status: string }>(custosUrl, tenant.adminKey, 'GET', sessionPath).then(
      (s) => s.status,
      () => 'unknown',
    );
    if (status === 'completed') {
      say();
      say(
        bold(`✔ ${USER} connected her ${PROVIDER_NAME} account.`) +
          ' Run the curl of step 2 to get her token.',
      );
      return;
    }
    if (status === 'expired') {
      say();
      say(`The connect link expired. The curl of step 2 answers consent_required with a fresh one.`);
      return;
    }
  }
}

async function shutdown(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  if (running.length > 0) say('\nStopping Custos (and its PostgreSQL) and the demo providers...');
  await stopAll();
  if (code === 0) say('Stopped.');
  process.exit(code);
}

// A Ctrl-C reaches this process once from the terminal and once more through npm, which forwards it: both
// mean the same stop. Custos and PostgreSQL are in a process group of their own and get exactly one signal.
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));

main().catch(async (err: unknown) => {
  const e = err instanceof Error ? err : new Error(String(err));
  process.stderr.write(`custos demo: ${e.message}\n`);
  if (e instanceof CustosFailedError) {
    const tail = fs.readFileSync(e.logFile, 'utf8').trimEnd().split('\n').slice(-10).join('\n');
    process.stderr.write(`${tail}\n`);
  }
  await shutdown(e instanceof UsageError ? 2 : 1);
});
