/**
 * The one validated configuration object, built once at start-up. Nothing else reads process.env.
 * Each variable is flagged sensitive or not; sensitive values are masked wherever config is printed.
 */
import path from 'node:path';
import { z } from 'zod';
import { parseAllowHosts } from '../common/outbound-http.js';
import { parseTrustProxy } from '../common/rate-limit.js';
import { textRule, trimChar } from '../common/validation.js';
import { RootKeyring } from '../common/root-keyring.js';

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
/** A URL with one of these schemes (messages never quote the value: some of these URLs carry passwords). */
const urlWith = (schemes: string[]) =>
  z.string().refine(
    (v) => {
      try {
        return schemes.includes(new URL(v).protocol.slice(0, -1));
      } catch {
        return false;
      }
    },
    `must be a ${schemes.map((s) => `${s}://`).join(' or ')} URL`,
  );
/** The keyring spec is parsed (and thrown away) here, so a bad one stops Custos before anything starts. */
const rootKeysSpec = z.string().superRefine((v, ctx) => {
  try {
    RootKeyring.validate(v);
  } catch (err) {
    // The parser names entries by position and version, never by content.
    ctx.addIssue({ code: 'custom', message: (err as Error).message.replace(/^CUSTOS_ROOT_KEYS:? ?/, '') });
  }
});
/** An http(s) URL, where `{region}` stands for the region of the key it serves. */
const awsEndpoint = z.string().refine((v) => {
  try {
    const u = new URL(v.replaceAll('{region}', 'us-east-1'));
    return (u.protocol === 'https:' || u.protocol === 'http:') && !u.username && !u.password;
  } catch {
    return false;
  }
}, 'must be an http(s) URL without credentials');

interface VariableSpec {
  schema: z.ZodType;
  sensitive: boolean;
  description: string;
}

/** Every variable Custos reads; the table of docs/configuration.md mirrors this list. */
export const variables = {
  HOST: {
    schema: z
      .string()
      .regex(/^(?:[A-Za-z0-9.-]{1,253}|[0-9A-Fa-f:.]{2,45})$/, 'must be a host name or an IP address')
      .default('127.0.0.1'),
    sensitive: false,
    description: 'Address to listen on.',
  },
  PORT: { schema: int(0, 65535).default(8080), sensitive: false, description: 'Port to listen on.' },
  CUSTOS_PUBLIC_URL: {
    schema: z.url({ protocol: /^https?$/ }).optional(),
    sensitive: false,
    description: 'External base URL used in links (default http://HOST:PORT).',
  },
  CUSTOS_DATA_DIR: {
    schema: z.string().min(1).superRefine(textRule()).default('./.custos'),
    sensitive: false,
    description:
      'Data folder for the embedded default: embedded PostgreSQL, generated root key, bootstrap admin key.',
  },
  DATABASE_URL: {
    schema: urlWith(['postgres', 'postgresql']).optional(),
    sensitive: true,
    description: 'PostgreSQL connection URL. Unset: an embedded PostgreSQL runs in the data folder.',
  },
  CUSTOS_MIGRATION_DATABASE_URL: {
    schema: urlWith(['postgres', 'postgresql']).optional(),
    sensitive: true,
    description:
      'PostgreSQL URL of the role that owns the schema, for migrations (with DATABASE_URL, the application’s role): after migrating, the application’s role is granted only what it needs (audit events: INSERT and SELECT). Unset: DATABASE_URL migrates.',
  },
  CUSTOS_DB_POOL_SIZE: {
    schema: int(1, 500).default(10),
    sensitive: false,
    description: 'PostgreSQL pool size.',
  },
  CUSTOS_DB_CONNECT_TIMEOUT_MS: {
    schema: int(100, 120_000).default(5000),
    sensitive: false,
    description: 'Deadline for opening a PostgreSQL connection, or for waiting for a free one in the pool.',
  },
  CUSTOS_DB_STATEMENT_TIMEOUT_MS: {
    schema: int(0, 3_600_000).default(15_000),
    sensitive: false,
    description:
      'PostgreSQL cancels a statement running longer (statement_timeout); a connection still silent 2 s later is taken for dead and closed. 0: no limit. Migrations run without it.',
  },
  CUSTOS_DB_BATCH_TIMEOUT_MS: {
    schema: int(100, 60_000).default(5000),
    sensitive: false,
    description:
      'Deadline for the token endpoint’s batched statements (decision read, audit write), queueing included: past it the request answers 503 and the statement’s connection is dropped.',
  },
  CUSTOS_MIGRATIONS_RUN: {
    schema: bool.default(true),
    sensitive: false,
    description: 'Run pending migrations at start.',
  },
  REDIS_URL: {
    schema: urlWith(['redis', 'rediss']).optional(),
    sensitive: true,
    description: 'Redis URL for BullMQ. Unset: background jobs run in-process.',
  },
  CUSTOS_ROLE: {
    schema: z.enum(['all', 'api', 'worker']).default('all'),
    sensitive: false,
    description:
      'What this process does: `api` serves HTTP, `worker` runs background jobs (and serves only /healthz, /readyz and /metrics), `all` both.',
  },
  CUSTOS_QUEUE_PREFIX: {
    schema: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}$/)
      .default('custos'),
    sensitive: false,
    description: 'Prefix of every BullMQ key in Redis: deployments sharing one Redis use different prefixes.',
  },
  CUSTOS_REFRESH_SWEEP_SECONDS: {
    schema: int(1, 3600).default(10),
    sensitive: false,
    description:
      'How often a worker reads due refreshes from PostgreSQL: with Redis it re-creates any missing refresh job, without Redis it refreshes them.',
  },
  CUSTOS_REFRESH_LEASE_SECONDS: {
    schema: int(5, 600).default(30),
    sensitive: false,
    description:
      'Lease a refresher holds on a connection; one left by a crashed process is taken over after this. The provider call is given this minus 3 seconds (at most 10 s).',
  },
  CUSTOS_REFRESH_CONCURRENCY: {
    schema: int(1, 1000).default(32),
    sensitive: false,
    description: 'Background refreshes in flight at once per worker process.',
  },
  CUSTOS_REFRESH_PER_PROVIDER: {
    schema: int(1, 1000).default(16),
    sensitive: false,
    description:
      'Background refreshes in flight at once per provider per worker process, so that one provider’s outage cannot take every slot.',
  },
  CUSTOS_TEST_FAILPOINTS: {
    schema: z
      .string()
      .regex(/^[a-z.-]+(@[1-9]\d{0,8})?(,[a-z.-]+(@[1-9]\d{0,8})?)*$/)
      .optional(),
    sensitive: false,
    description:
      'Tests only: comma-separated failpoints where the process stops dead, so that a test can kill it there; `name@N` stops from the Nth pass on. `refresh.after-provider`: between a provider’s answer and the commit; `token.after-audit`: a release’s audit event committed, the answer not sent; `import.after-commit`: a credential import committed, its refresh job not queued nor the answer sent; `key-migration.before-write`: a data key unwrapped and wrapped by the new backend, not yet written; `start.after-embedded-postgres`: the embedded PostgreSQL running, start-up not finished. Never set in production.',
  },
  CUSTOS_ROOT_KEYS: {
    schema: rootKeysSpec.optional(),
    sensitive: true,
    description:
      'Managed root keyring, "v1:<base64 32 bytes>,v2:...": the newest version wraps, all unwrap. Unset: a local key is generated into the data folder (local use only).',
  },
  CUSTOS_BOOTSTRAP_ADMIN_KEY: {
    // Presented as a Bearer token, so printable ASCII without spaces, or it could never be used.
    schema: z
      .string()
      .regex(/^[\x21-\x7e]{32,512}$/, 'must be 32 to 512 printable ASCII characters without spaces')
      .optional(),
    sensitive: true,
    description:
      'The first platform admin key (32 to 512 printable ASCII characters, no spaces), stored hashed. Unset: one is generated into <data dir>/bootstrap-admin-key.',
  },
  CUSTOS_DATA_KEY_CACHE_TTL_SECONDS: {
    schema: int(0, 86400).default(300),
    sensitive: false,
    description:
      'How long an unwrapped data key stays cached: the bound on how fast a disabled key takes effect.',
  },
  CUSTOS_DATA_KEY_CACHE_MAX_ENTRIES: {
    schema: int(1, 1_000_000).default(10000),
    sensitive: false,
    description: 'Most unwrapped data keys held in memory at once.',
  },
  CUSTOS_DATA_KEY_MAX_AGE_DAYS: {
    schema: int(1, 3650).default(90),
    sensitive: false,
    description: 'A tenant data key older than this is retired: new secrets are sealed under a fresh epoch.',
  },
  CUSTOS_KEY_BACKEND_TIMEOUT_MS: {
    schema: int(100, 60_000).default(5000),
    sensitive: false,
    description:
      'Deadline for one call to a tenant’s AWS KMS or Vault Transit key (retries included); past it, reads of that tenant answer 503.',
  },
  CUSTOS_KEY_BACKEND_BREAKER_SECONDS: {
    schema: int(0, 60).default(5),
    sensitive: false,
    description:
      'After a call to a tenant’s KMS or Vault key fails as unreachable (timeout, refused, 5xx), calls to that key configuration answer 503 at once for this long, then one call probes it. 0: off.',
  },
  CUSTOS_AWS_AMBIENT_KEY_ARNS: {
    schema: z.string().optional(),
    sensitive: false,
    description:
      'Comma-separated AWS KMS key ARNs that a tenant may use with Custos’s own AWS identity (the SDK’s default chain) instead of credentials or a role of its own. Unset: none.',
  },
  CUSTOS_AWS_KMS_ENDPOINT: {
    schema: awsEndpoint.optional(),
    sensitive: false,
    description:
      'KMS endpoint for tenants that name none (e.g. a VPC endpoint; `{region}` becomes the key’s region). Unset: AWS’s regional endpoint.',
  },
  CUSTOS_AWS_STS_ENDPOINT: {
    schema: awsEndpoint.optional(),
    sensitive: false,
    description:
      'STS endpoint where Custos assumes tenants’ roles (`{region}` becomes the key’s region). Unset: AWS’s regional STS endpoint.',
  },
  CUSTOS_AWS_STS_REGION: {
    schema: z
      .string()
      .regex(/^[a-z]{2}(-[a-z]+)+-\d{1,2}$/)
      .optional(),
    sensitive: false,
    description: 'Region STS calls are signed for. Unset: the region of the tenant’s key.',
  },
  CUSTOS_CONNECT_SESSION_TTL_SECONDS: {
    schema: int(60, 86400).default(900),
    sensitive: false,
    description: 'How long a connect link stays usable.',
  },
  CUSTOS_OUTBOUND_ALLOW_HOSTS: {
    schema: z.string().optional(),
    sensitive: false,
    description:
      'Comma-separated hosts (host or host:port) exempt from the SSRF guard, where http is allowed too. Local development and tests only.',
  },
  CUSTOS_BODY_LIMIT_BYTES: {
    schema: int(1024, 10 * 1024 * 1024).default(65536),
    sensitive: false,
    description: 'Largest accepted request body; larger bodies get 413.',
  },
  CUSTOS_TRUST_PROXY: {
    schema: z.string().optional(),
    sensitive: false,
    description:
      'Proxies whose X-Forwarded-For names the client (for rate limiting and audit): unset or `false` none, a hop count (1 to 32), or comma-separated proxy addresses/CIDR ranges.',
  },
  CUSTOS_RATE_LIMIT_WINDOW_SECONDS: {
    schema: int(1, 86400).default(60),
    sensitive: false,
    description: 'Window of the failed-authentication limits, opened by a key’s first failure.',
  },
  CUSTOS_RATE_LIMIT_CREDENTIAL_FAILURES: {
    schema: int(1, 1_000_000).default(10),
    sensitive: false,
    description:
      'Failed authentications per client id or admin key per window; past it, 429 with Retry-After until the window ends.',
  },
  CUSTOS_RATE_LIMIT_ADDRESS_FAILURES: {
    schema: int(1, 1_000_000).default(100),
    sensitive: false,
    description:
      'Failed authentications (or unauthenticated bad requests) per source address (IPv6: per /64) per window; past it, 429.',
  },
  CUSTOS_AUDIT_DENIALS_PER_WINDOW: {
    schema: int(0, 1_000_000).default(10),
    sensitive: false,
    description:
      'Denials of failed authentication audited one by one per key per window; the rest are counted in one folded event.',
  },
  CUSTOS_AUDIT_DENIALS_GLOBAL_PER_WINDOW: {
    schema: int(0, 10_000_000).default(1000),
    sensitive: false,
    description:
      'Denials of failed authentication audited one by one per window in all (per process), whatever their key: past it, the rest are counted in one folded event per tenant, so requests from ever new addresses or client ids cannot fill the audit table either.',
  },
  CUSTOS_AUDIT_SEAL_INTERVAL_MS: {
    schema: int(100, 60_000).default(1000),
    sensitive: false,
    description:
      'How often the sealer (worker role) links newly committed audit events into their chains and signs checkpoints.',
  },
  CUSTOS_AUDIT_SIGNING_KEY_ROTATION_DAYS: {
    schema: int(1, 3650).default(90),
    sensitive: false,
    description:
      "Age at which a chain's checkpoint signing key is replaced; the next key is published CUSTOS_AUDIT_SIGNING_KEY_OVERLAP_HOURS before it signs.",
  },
  CUSTOS_AUDIT_SIGNING_KEY_OVERLAP_HOURS: {
    schema: int(0, 24 * 90).default(24),
    sensitive: false,
    description:
      'How long the next checkpoint signing key is published in the JWKS before it is used, so that verifiers holding a copy of the JWKS can learn it in time.',
  },
  CUSTOS_AUDIT_RETENTION_MONTHS: {
    schema: int(1, 1200).optional(),
    sensitive: false,
    description:
      "Keep the audit trail's current month and this many before it; the worker drops older months (their partitions) each hour, leaving a signed truncation record per chain so that the rest still verifies. Needs the schema owner (CUSTOS_MIGRATION_DATABASE_URL, or the application's own role when it owns the schema). Unset: keep everything.",
  },
  CUSTOS_AUDIT_FORWARD: {
    schema: z.union([z.literal('stdout'), z.url({ protocol: /^https?$/ })]).optional(),
    sensitive: false,
    description:
      'Forward the sealed trail to a SIEM, at least once, as it is sealed: `stdout` (NDJSON lines among the logs) or an http(s) URL (signed POSTs of NDJSON). Unset: no forwarding.',
  },
  CUSTOS_AUDIT_FORWARD_SECRET: {
    schema: z.string().min(32).optional(),
    sensitive: true,
    description:
      'HMAC-SHA256 key that signs forwarded batches (Custos-Signature header); at least 32 characters. Required with an http(s) CUSTOS_AUDIT_FORWARD.',
  },
  CUSTOS_LOG_LEVEL: {
    schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    sensitive: false,
    description: 'Log level.',
  },
  CUSTOS_LOG_FORMAT: {
    schema: z.enum(['auto', 'json', 'pretty']).default('auto'),
    sensitive: false,
    description:
      'Log lines as `json`, or `pretty` (readable, pino-pretty); `auto`: pretty when stdout is a terminal, JSON otherwise.',
  },
} satisfies Record<string, VariableSpec>;

type Vars = typeof variables;
export type Env = { [K in keyof Vars]: z.output<Vars[K]['schema']> };

export interface Config {
  host: string;
  port: number;
  publicUrl: string;
  dataDir: string;
  databaseUrl: string | undefined;
  migrationDatabaseUrl: string | undefined;
  dbPoolSize: number;
  dbConnectTimeoutMs: number;
  dbStatementTimeoutMs: number;
  dbBatchTimeoutMs: number;
  migrationsRun: boolean;
  redisUrl: string | undefined;
  role: Env['CUSTOS_ROLE'];
  queuePrefix: string;
  refreshSweepSeconds: number;
  refreshLeaseSeconds: number;
  refreshConcurrency: number;
  refreshPerProvider: number;
  failpoints: string[];
  rootKeys: string | undefined;
  bootstrapAdminKey: string | undefined;
  dataKeyCacheTtlSeconds: number;
  dataKeyCacheMaxEntries: number;
  dataKeyMaxAgeDays: number;
  keyBackendTimeoutMs: number;
  keyBackendBreakerSeconds: number;
  awsAmbientKeyArns: string[];
  awsKmsEndpoint: string | undefined;
  awsStsEndpoint: string | undefined;
  awsStsRegion: string | undefined;
  connectSessionTtlSeconds: number;
  outboundAllowHosts: string[];
  bodyLimitBytes: number;
  trustProxy: false | number | string[];
  rateLimitWindowSeconds: number;
  rateLimitCredentialFailures: number;
  rateLimitAddressFailures: number;
  auditDenialsPerWindow: number;
  auditDenialsGlobalPerWindow: number;
  auditSealIntervalMs: number;
  auditSigningKeyRotationDays: number;
  auditRetentionMonths: number | undefined;
  auditSigningKeyOverlapHours: number;
  /** Where the sealed trail is forwarded: 'stdout', an http(s) URL, or nowhere. */
  auditForward: { to: 'stdout' } | { to: 'webhook'; url: string; secret: string } | null;
  logLevel: Env['CUSTOS_LOG_LEVEL'];
  logFormat: Env['CUSTOS_LOG_FORMAT'];
}

export class ConfigError extends Error {}

function allowHosts(value: string | undefined): string[] {
  try {
    return parseAllowHosts(value);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
}

function trustProxy(value: string | undefined): false | number | string[] {
  try {
    return parseTrustProxy(value);
  } catch (err) {
    throw new ConfigError(`CUSTOS_TRUST_PROXY is invalid: ${(err as Error).message}`);
  }
}

const KMS_KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[A-Za-z0-9-]{1,128}$/;

function keyArns(value: string | undefined): string[] {
  const arns = (value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const bad = arns.find((a) => !KMS_KEY_ARN.test(a));
  if (bad !== undefined) {
    throw new ConfigError(
      `CUSTOS_AWS_AMBIENT_KEY_ARNS: "${bad}" is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)`,
    );
  }
  return arns;
}

function auditForward(to: string | undefined, secret: string | undefined): Config['auditForward'] {
  if (to === undefined) return null;
  if (to === 'stdout') return { to: 'stdout' };
  if (secret === undefined) {
    throw new ConfigError(
      'CUSTOS_AUDIT_FORWARD to a URL needs CUSTOS_AUDIT_FORWARD_SECRET (the batches are signed)',
    );
  }
  return { to: 'webhook', url: to, secret };
}

function migrationUrl(value: string | undefined, databaseUrl: string | undefined): string | undefined {
  if (value !== undefined && databaseUrl === undefined) {
    throw new ConfigError(
      'CUSTOS_MIGRATION_DATABASE_URL needs DATABASE_URL (the embedded PostgreSQL has one role for both)',
    );
  }
  return value;
}

/** Validates the environment once; fails fast naming the variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(variables) as [string, VariableSpec][]) {
    const raw = env[name] === '' ? undefined : env[name];
    const parsed = spec.schema.safeParse(raw);
    if (!parsed.success) {
      const shown = spec.sensitive || raw === undefined ? '' : ` (got ${JSON.stringify(raw)})`;
      throw new ConfigError(`${name} is invalid${shown}: ${parsed.error.issues[0]?.message ?? 'bad value'}`);
    }
    out[name] = parsed.data;
  }
  const e = out as Env;
  const host = e.HOST;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return {
    host,
    port: e.PORT,
    // (Trailing slashes only: a URL never starts with one.)
    publicUrl: trimChar(
      e.CUSTOS_PUBLIC_URL ?? `http://${urlHost === '0.0.0.0' ? '127.0.0.1' : urlHost}:${e.PORT}`,
      '/',
    ),
    dataDir: path.resolve(e.CUSTOS_DATA_DIR),
    databaseUrl: e.DATABASE_URL,
    migrationDatabaseUrl: migrationUrl(e.CUSTOS_MIGRATION_DATABASE_URL, e.DATABASE_URL),
    dbPoolSize: e.CUSTOS_DB_POOL_SIZE,
    dbConnectTimeoutMs: e.CUSTOS_DB_CONNECT_TIMEOUT_MS,
    dbStatementTimeoutMs: e.CUSTOS_DB_STATEMENT_TIMEOUT_MS,
    dbBatchTimeoutMs: e.CUSTOS_DB_BATCH_TIMEOUT_MS,
    migrationsRun: e.CUSTOS_MIGRATIONS_RUN,
    redisUrl: e.REDIS_URL,
    role: e.CUSTOS_ROLE,
    queuePrefix: e.CUSTOS_QUEUE_PREFIX,
    refreshSweepSeconds: e.CUSTOS_REFRESH_SWEEP_SECONDS,
    refreshLeaseSeconds: e.CUSTOS_REFRESH_LEASE_SECONDS,
    refreshConcurrency: e.CUSTOS_REFRESH_CONCURRENCY,
    refreshPerProvider: e.CUSTOS_REFRESH_PER_PROVIDER,
    failpoints: e.CUSTOS_TEST_FAILPOINTS ? e.CUSTOS_TEST_FAILPOINTS.split(',') : [],
    rootKeys: e.CUSTOS_ROOT_KEYS,
    bootstrapAdminKey: e.CUSTOS_BOOTSTRAP_ADMIN_KEY,
    dataKeyCacheTtlSeconds: e.CUSTOS_DATA_KEY_CACHE_TTL_SECONDS,
    dataKeyCacheMaxEntries: e.CUSTOS_DATA_KEY_CACHE_MAX_ENTRIES,
    dataKeyMaxAgeDays: e.CUSTOS_DATA_KEY_MAX_AGE_DAYS,
    keyBackendTimeoutMs: e.CUSTOS_KEY_BACKEND_TIMEOUT_MS,
    keyBackendBreakerSeconds: e.CUSTOS_KEY_BACKEND_BREAKER_SECONDS,
    awsAmbientKeyArns: keyArns(e.CUSTOS_AWS_AMBIENT_KEY_ARNS),
    awsKmsEndpoint: e.CUSTOS_AWS_KMS_ENDPOINT,
    awsStsEndpoint: e.CUSTOS_AWS_STS_ENDPOINT,
    awsStsRegion: e.CUSTOS_AWS_STS_REGION,
    connectSessionTtlSeconds: e.CUSTOS_CONNECT_SESSION_TTL_SECONDS,
    outboundAllowHosts: allowHosts(e.CUSTOS_OUTBOUND_ALLOW_HOSTS),
    bodyLimitBytes: e.CUSTOS_BODY_LIMIT_BYTES,
    trustProxy: trustProxy(e.CUSTOS_TRUST_PROXY),
    rateLimitWindowSeconds: e.CUSTOS_RATE_LIMIT_WINDOW_SECONDS,
    rateLimitCredentialFailures: e.CUSTOS_RATE_LIMIT_CREDENTIAL_FAILURES,
    rateLimitAddressFailures: e.CUSTOS_RATE_LIMIT_ADDRESS_FAILURES,
    auditDenialsPerWindow: e.CUSTOS_AUDIT_DENIALS_PER_WINDOW,
    auditDenialsGlobalPerWindow: e.CUSTOS_AUDIT_DENIALS_GLOBAL_PER_WINDOW,
    auditSealIntervalMs: e.CUSTOS_AUDIT_SEAL_INTERVAL_MS,
    auditSigningKeyRotationDays: e.CUSTOS_AUDIT_SIGNING_KEY_ROTATION_DAYS,
    auditRetentionMonths: e.CUSTOS_AUDIT_RETENTION_MONTHS,
    auditSigningKeyOverlapHours: e.CUSTOS_AUDIT_SIGNING_KEY_OVERLAP_HOURS,
    auditForward: auditForward(e.CUSTOS_AUDIT_FORWARD, e.CUSTOS_AUDIT_FORWARD_SECRET),
    logLevel: e.CUSTOS_LOG_LEVEL,
    logFormat: e.CUSTOS_LOG_FORMAT,
  };
}

const sensitiveKeys: (keyof Config)[] = [
  'databaseUrl',
  'migrationDatabaseUrl',
  'redisUrl',
  'rootKeys',
  'bootstrapAdminKey',
];

/** The configuration with every sensitive value masked, for printing. */
export function describeConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = { ...config };
  for (const k of sensitiveKeys) if (out[k] !== undefined) out[k] = '***';
  if (config.auditForward?.to === 'webhook') out.auditForward = { ...config.auditForward, secret: '***' };
  return out;
}

export const CONFIG = Symbol('CONFIG');
