/**
 * `custos doctor`: checks what a deployment needs, the way Custos itself uses it, and says what is wrong: the
 * configuration, the database (reachable, migrated, the audit trail out of the application role's reach),
 * the platform key backend and every tenant's own (BYOK) backend, Redis, the outbound allow-list, the public
 * URL, and the sealer's backlog. Each check has a deadline; one failing does not stop the others. Exit 0 when
 * nothing failed (warnings allowed), 1 otherwise.
 */
import { Redis } from 'ioredis';
import { DataSource } from 'typeorm';
import { ConfigError, loadConfig, type Config } from '../config/config.js';
import { KeyBackendService } from '../crypto/key-backend.service.js';
import { diagnoseFailure, KeyBackends } from '../crypto/key-backends.js';
import { auditTrailProtection } from '../database/data-source.js';
import type { CliContext } from './context.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface Check {
  name: string;
  status: CheckStatus;
  detail: string;
}

const CHECK_MS = 5000;

function within<T>(p: Promise<T>, ms = CHECK_MS): Promise<T> {
  return Promise.race([
    p,
    new Promise<never>((_, rej) =>
      setTimeout(() => rej(new Error(`no answer within ${ms / 1000} s`)), ms).unref(),
    ),
  ]);
}

const reason = (err: unknown) => ((err as Error).message || String(err)).replace(/\s+/g, ' ').slice(0, 300);

export async function doctor(
  env: Record<string, string | undefined> | undefined,
  open: () => Promise<CliContext>,
): Promise<Check[]> {
  const checks: Check[] = [];
  const add = (name: string, status: CheckStatus, detail: string) => checks.push({ name, status, detail });
  let config: Config;
  try {
    config = loadConfig(env);
    add(
      'configuration',
      'ok',
      `role ${config.role}, ${config.databaseUrl ? 'external' : 'embedded'} PostgreSQL`,
    );
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    add('configuration', 'fail', err.message.replace(/[\r\n]+/g, ' '));
    return checks;
  }

  if (!config.rootKeys) {
    add(
      'root key',
      'warn',
      'a local root key file in the data folder: for development only; set CUSTOS_ROOT_KEYS or a BYOK backend',
    );
  } else {
    add('root key', 'ok', 'CUSTOS_ROOT_KEYS is set');
  }
  const publicUrl = new URL(config.publicUrl);
  const local = ['localhost', '127.0.0.1', '[::1]'].includes(publicUrl.hostname);
  add(
    'public URL',
    publicUrl.protocol === 'https:' || local ? 'ok' : 'warn',
    publicUrl.protocol === 'https:' || local
      ? config.publicUrl
      : `${config.publicUrl} is not https: hosted connect pages and OAuth redirects need TLS in production`,
  );
  add(
    'outbound allow-list',
    'ok',
    config.outboundAllowHosts.length
      ? `calls to addresses tenants choose may reach only ${config.outboundAllowHosts.join(', ')} (besides public addresses)`
      : 'tenant-chosen addresses must be public (no private, loopback or link-local address is reachable)',
  );

  if (config.redisUrl) {
    const redis = new Redis(config.redisUrl, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      connectTimeout: CHECK_MS,
      retryStrategy: () => null,
    });
    redis.on('error', () => undefined);
    try {
      await within(redis.connect().then(() => redis.ping()));
      add('redis', 'ok', 'answers PING (refresh queue and jobs across processes)');
    } catch (err) {
      add('redis', 'fail', `REDIS_URL does not answer: ${reason(err)}`);
    } finally {
      redis.disconnect();
    }
  } else {
    add('redis', 'ok', 'not configured: jobs run in-process (one worker process)');
  }

  let ctx: CliContext;
  try {
    ctx = await within(open(), 60_000);
  } catch (err) {
    add('database', 'fail', `cannot open: ${reason(err)}`);
    return checks;
  }
  try {
    const db = ctx.app.get(DataSource);
    try {
      await within(db.query('SELECT 1'));
      const pending = await within(db.showMigrations());
      if (pending) {
        add('database', 'fail', 'reachable, but migrations are pending: run `custos migrate`');
        return checks;
      }
      add('database', 'ok', 'reachable and migrated');
      const protection = await within(auditTrailProtection(db));
      add(
        'audit trail protection',
        protection === 'enforced' ? 'ok' : 'warn',
        protection === 'enforced'
          ? "the application's role cannot alter audit rows"
          : `the application's role ${protection === 'owner' ? 'owns' : 'is a superuser over'} the audit trail: use CUSTOS_MIGRATION_DATABASE_URL and a role of its own (docs/operations.md, Database roles)`,
      );
      const [lag] = await within(
        db.query<{ behind: number; oldest: number | null }[]>(
          `SELECT count(*)::int AS behind, extract(epoch FROM now() - min(e.occurred_at))::float AS oldest
             FROM audit_events e, audit_seal_state s
            WHERE s.id = 1 AND (e.tx_id, e.id) > (s.last_tx, s.last_id)`,
        ),
      );
      const oldest = lag.oldest ?? 0;
      add(
        'audit sealing',
        oldest > 60 ? 'warn' : 'ok',
        lag.behind === 0
          ? 'every audit event is sealed'
          : `${lag.behind} event(s) not sealed yet, the oldest ${Math.round(oldest)} s old${oldest > 60 ? ': is a worker (or role all) running?' : ''}`,
      );
    } catch (err) {
      add('database', 'fail', reason(err));
    }

    const backends = ctx.app.get(KeyBackends, { strict: false });
    try {
      await within(backends.platformBackend().check());
      add('key backend (platform)', 'ok', 'the managed root keyring wraps and unwraps');
    } catch (err) {
      add('key backend (platform)', 'fail', reason(err));
    }
    let tenants: { id: string; type: string }[] = [];
    try {
      tenants = await within(
        db.query(
          `SELECT t.id, t.key_backend_type AS type FROM tenants t WHERE t.key_backend_type <> 'managed' ORDER BY t.id`,
        ),
      );
    } catch (err) {
      add('key backends (tenants)', 'fail', reason(err));
    }
    const keyBackends = ctx.app.get(KeyBackendService, { strict: false });
    for (const t of tenants) {
      try {
        await within((await within(backends.forTenant(t.id))).check());
        add(`key backend (tenant ${t.id})`, 'ok', `${t.type} answers`);
      } catch (err) {
        add(`key backend (tenant ${t.id})`, 'fail', await tenantBackendFailure(keyBackends, t, err));
      }
    }
  } finally {
    await ctx.close().catch(() => undefined);
  }
  return checks;
}

/**
 * A tenant's key backend that failed its round trip, said by cause as the admin API says it when the backend is
 * set (unreachable, denied, not found), with where it failed and what to check.
 */
async function tenantBackendFailure(
  keyBackends: KeyBackendService,
  t: { id: string; type: string },
  err: unknown,
): Promise<string> {
  if (t.type !== 'aws-kms' && t.type !== 'vault-transit') return `${t.type}: ${reason(err)}`;
  // The settings name the key, region or address in the message; without them it still names the cause.
  const settings = await within(keyBackends.view(t.id)).then(
    (v) => v.settings,
    () => undefined,
  );
  const d = await diagnoseFailure(t.type, err, settings);
  const cause = d.code.replace(/^key_backend_/, '').replace('_', ' ');
  return `${t.type} ${cause} (${d.reason}): ${d.message}`;
}

export function formatChecks(checks: Check[]): string {
  const mark: Record<CheckStatus, string> = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL' };
  return checks.map((c) => `${mark[c.status]}  ${c.name}: ${c.detail}`).join('\n') + '\n';
}
