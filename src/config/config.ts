/**
 * The one validated configuration object, built once at start-up. Nothing else reads process.env.
 * Each variable is flagged sensitive or not; sensitive values are masked wherever config is printed.
 */
import path from 'node:path';
import { z } from 'zod';
import { parseAllowHosts } from '../common/outbound-http.js';

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

interface VariableSpec {
  schema: z.ZodType;
  sensitive: boolean;
  description: string;
}

/** Every variable Custos reads; README's configuration table mirrors this list. */
export const variables = {
  HOST: {
    schema: z.string().min(1).default('127.0.0.1'),
    sensitive: false,
    description: 'Address to listen on.',
  },
  PORT: { schema: int(0, 65535).default(8080), sensitive: false, description: 'Port to listen on.' },
  CUSTOS_PUBLIC_URL: {
    schema: z.url().optional(),
    sensitive: false,
    description: 'External base URL used in links (default http://HOST:PORT).',
  },
  CUSTOS_DATA_DIR: {
    schema: z.string().min(1).default('./.custos'),
    sensitive: false,
    description:
      'Data folder for the embedded default: embedded PostgreSQL, generated root key, bootstrap admin key.',
  },
  DATABASE_URL: {
    schema: z.string().min(1).optional(),
    sensitive: true,
    description: 'PostgreSQL connection URL. Unset: an embedded PostgreSQL runs in the data folder.',
  },
  CUSTOS_DB_POOL_SIZE: {
    schema: int(1, 500).default(10),
    sensitive: false,
    description: 'PostgreSQL pool size.',
  },
  CUSTOS_MIGRATIONS_RUN: {
    schema: bool.default(true),
    sensitive: false,
    description: 'Run pending migrations at start.',
  },
  REDIS_URL: {
    schema: z.string().min(1).optional(),
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
      .regex(/^[a-z.-]+(,[a-z.-]+)*$/)
      .optional(),
    sensitive: false,
    description:
      'Tests only: comma-separated failpoints where the process stops dead (e.g. `refresh.after-provider`, between a provider’s answer and the commit). Never set in production.',
  },
  CUSTOS_ROOT_KEYS: {
    schema: z.string().min(1).optional(),
    sensitive: true,
    description:
      'Managed root keyring, "v1:<base64 32 bytes>,v2:...": the newest version wraps, all unwrap. Unset: a local key is generated into the data folder (local use only).',
  },
  CUSTOS_BOOTSTRAP_ADMIN_KEY: {
    schema: z.string().min(32).optional(),
    sensitive: true,
    description:
      'The first platform admin key (at least 32 characters), stored hashed. Unset: one is generated into <data dir>/bootstrap-admin-key.',
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
  CUSTOS_LOG_LEVEL: {
    schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    sensitive: false,
    description: 'Log level.',
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
  dbPoolSize: number;
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
  connectSessionTtlSeconds: number;
  outboundAllowHosts: string[];
  bodyLimitBytes: number;
  logLevel: Env['CUSTOS_LOG_LEVEL'];
}

export class ConfigError extends Error {}

function allowHosts(value: string | undefined): string[] {
  try {
    return parseAllowHosts(value);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
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
    publicUrl: (
      e.CUSTOS_PUBLIC_URL ?? `http://${urlHost === '0.0.0.0' ? '127.0.0.1' : urlHost}:${e.PORT}`
    ).replace(/\/+$/, ''),
    dataDir: path.resolve(e.CUSTOS_DATA_DIR),
    databaseUrl: e.DATABASE_URL,
    dbPoolSize: e.CUSTOS_DB_POOL_SIZE,
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
    connectSessionTtlSeconds: e.CUSTOS_CONNECT_SESSION_TTL_SECONDS,
    outboundAllowHosts: allowHosts(e.CUSTOS_OUTBOUND_ALLOW_HOSTS),
    bodyLimitBytes: e.CUSTOS_BODY_LIMIT_BYTES,
    logLevel: e.CUSTOS_LOG_LEVEL,
  };
}

const sensitiveKeys: (keyof Config)[] = ['databaseUrl', 'redisUrl', 'rootKeys', 'bootstrapAdminKey'];

/** The configuration with every sensitive value masked, for printing. */
export function describeConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = { ...config };
  for (const k of sensitiveKeys) if (out[k] !== undefined) out[k] = '***';
  return out;
}

export const CONFIG = Symbol('CONFIG');
