/**
 * Bring your own key: a tenant chooses the managed keyring, its AWS KMS key or its Vault Transit key.
 *
 * - Configure: the backend is proven with a real round trip before it is accepted; its credentials are
 *   sealed under the managed root keyring. New secrets go under a new data-key epoch on the new backend at
 *   once (so writes never wait on the backend being left), and existing data keys are moved to it by a
 *   background migration (unwrap with the old backend, wrap with the new), one key at a time, each move
 *   committed on its own and guarded by the old wrapped value, so a crash anywhere leaves every key readable
 *   and the next run picks up what is left. No credential is ever decrypted: only data keys move.
 * - A migration that fails (a backend unreachable, a key gone) is recorded: the view says `migration_failed`
 *   with the reason, which side failed and how often; the backstop job retries it with backoff; an admin can
 *   resume it at once or cancel it (back to the configuration the unmoved keys are wrapped by). The first
 *   failure of an episode, each resume and each cancel are audited.
 * - Rotate: a new data-key epoch, and every data key rewrapped under the backend's newest key version.
 * - Flush: every process drops the tenant's cached data keys, so a revoked customer key acts at once.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { Gauge } from 'prom-client';
import { DataSource, type EntityManager } from 'typeorm';
import { AuditService, systemActor, type Actor } from '../audit/audit.service.js';
import { CustosException } from '../common/errors.js';
import { failpoint } from '../common/failpoint.js';
import { LOGGER } from '../common/logger.js';
import { Metrics } from '../common/metrics.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { CONFIG, type Config } from '../config/config.js';
import { returned } from '../database/sql.js';
import { awsExternalIdFor } from './aws-identity.js';
import { DataKeyService } from './data-key.service.js';
import type { DataKeyContext, KeyBackend, KeyBackendType } from './key-backend.js';
import type { KeyBackendInput } from './key-backend.dto.js';
import {
  assertAwsIdentityAllowed,
  KeyBackends,
  splitConfig,
  verificationFailure,
  type KeyBackendSettings,
} from './key-backends.js';
import { KeyCacheBus } from './key-cache-bus.js';

export type KeyBackendStatus = 'active' | 'migrating' | 'migration_failed';

/** Why the last migration attempt stopped: the backend that failed (the one keys leave, or the one they go to). */
export interface MigrationFailure {
  code: string;
  reason: string;
  side: 'source' | 'target';
  message: string;
}

export interface KeyMigrationView {
  startedAt: string | null;
  /** Failed attempts in the current failure episode. */
  attempts: number;
  failingSince: string | null;
  lastAttemptAt: string | null;
  /** When the background job tries again (an admin may resume sooner). */
  nextAttemptAt: string | null;
  lastError: MigrationFailure | null;
}

export interface KeyBackendView {
  type: KeyBackendType;
  settings: KeyBackendSettings;
  status: KeyBackendStatus;
  dataKeys: { total: number; onCurrentBackend: number };
  configuredAt: string | null;
  /** Present while data keys remain on another configuration. */
  migration: KeyMigrationView | null;
  /** The external id Custos presents when it assumes this tenant's AWS role (for the role's trust policy). */
  awsExternalId: string;
}

interface KeyRow {
  id: string;
  tenant_id: string;
  epoch: number;
  backend_id: string | null;
  wrapped: Buffer;
}

export interface MigrationOptions {
  /** Stop after this many keys (tests: a crash between two keys). */
  limit?: number;
  /** Called after the new wrap, before it is written (tests: a crash at the worst moment). */
  beforeWrite?: (dataKeyId: string) => void | Promise<void>;
}

const ctxOf = (k: { tenant_id: string; id: string }): DataKeyContext => ({
  tenantId: k.tenant_id,
  dataKeyId: k.id,
});

/** Backoff of the background retries of a failing migration: 30 s, doubling, at most 30 min. */
const RETRY_BASE_SECONDS = 30;
const RETRY_MAX_SECONDS = 1800;

interface MigrationRow {
  started_at: Date | null;
  attempts: number | null;
  failing_since: Date | null;
  last_attempt_at: Date | null;
  next_attempt_at: Date | null;
  last_error_code: string | null;
  last_error_reason: string | null;
  last_error_side: 'source' | 'target' | null;
  last_error_message: string | null;
}

/** A backend's verdict that stops a migration (recorded, retried); anything else is a crash and propagates. */
function asMigrationFailure(err: unknown, side: MigrationFailure['side']): MigrationFailure | null {
  if (!(err instanceof CustosException)) return null;
  if (err.code !== 'key_unavailable' && err.code !== 'key_invalid' && err.code !== 'decryption_failed')
    return null;
  const reason = err.details?.reason;
  return {
    code: err.code,
    reason: typeof reason === 'string' ? reason : 'unknown',
    side,
    message: err.message.slice(0, 500),
  };
}

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null);

@Injectable()
export class KeyBackendService {
  private readonly running = new Map<string, Promise<unknown>>();

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(KeyBackends) private readonly backends: KeyBackends,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(KeyCacheBus) private readonly bus: KeyCacheBus,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(OutboundHttpClient) private readonly outbound: OutboundHttpClient,
    @Inject(LOGGER) private readonly log: Logger,
    @Inject(CONFIG) private readonly config: Config,
    @Inject(Metrics) metrics: Metrics,
  ) {
    // Per deployment, not per tenant: which tenants is for the admin API, not for a label.
    const failing: Gauge = new Gauge({
      name: 'custos_key_migrations_failing',
      help: 'Tenants whose data-key migration to a new key backend is failing (see GET /v1/tenants/{id}/key-backend).',
      registers: [metrics.registry],
      collect: async () => {
        try {
          const rows: { n: number }[] = await this.db.query(
            'SELECT count(*)::int AS n FROM tenant_key_migrations WHERE failing_since IS NOT NULL',
          );
          failing.set(rows[0]?.n ?? 0);
        } catch {
          // The database is down: keep the last value; /readyz says the rest.
        }
      },
    });
  }

  async view(tenantId: string): Promise<KeyBackendView> {
    const rows: (MigrationRow & {
      key_backend_type: KeyBackendType;
      settings: KeyBackendSettings | null;
      created_at: Date | null;
      total: number;
      current: number;
    })[] = await this.db.query(
      `SELECT t.key_backend_type, b.settings, b.created_at,
              (SELECT count(*)::int FROM data_keys d WHERE d.tenant_id = t.id) AS total,
              (SELECT count(*)::int FROM data_keys d WHERE d.tenant_id = t.id
                  AND d.backend_id IS NOT DISTINCT FROM t.key_backend_id) AS current,
              m.started_at, m.attempts, m.failing_since, m.last_attempt_at, m.next_attempt_at,
              m.last_error_code, m.last_error_reason, m.last_error_side, m.last_error_message
         FROM tenants t LEFT JOIN tenant_key_backends b ON b.id = t.key_backend_id
              LEFT JOIN tenant_key_migrations m ON m.tenant_id = t.id
        WHERE t.id = $1`,
      [tenantId],
    );
    const r = rows[0];
    if (!r) throw new CustosException('not_found', 'Tenant not found');
    const pending = r.current !== r.total;
    const failing = pending && r.failing_since !== null;
    return {
      type: r.key_backend_type,
      settings: r.settings ?? {},
      status: !pending ? 'active' : failing ? 'migration_failed' : 'migrating',
      dataKeys: { total: r.total, onCurrentBackend: r.current },
      configuredAt: r.created_at ? r.created_at.toISOString() : null,
      migration: pending
        ? {
            startedAt: iso(r.started_at),
            attempts: r.attempts ?? 0,
            failingSince: iso(r.failing_since),
            lastAttemptAt: iso(r.last_attempt_at),
            nextAttemptAt: iso(r.next_attempt_at),
            lastError:
              failing && r.last_error_code && r.last_error_side
                ? {
                    code: r.last_error_code,
                    reason: r.last_error_reason ?? 'unknown',
                    side: r.last_error_side,
                    message: r.last_error_message ?? '',
                  }
                : null,
          }
        : null,
      awsExternalId: awsExternalIdFor(tenantId),
    };
  }

  /** Verifies and saves a configuration, then starts moving the tenant's data keys to it. */
  async configure(actor: Actor, tenantId: string, input: KeyBackendInput): Promise<KeyBackendView> {
    let backendId: string | null = null;
    let split: ReturnType<typeof splitConfig> | null = null;
    if (input.type !== 'managed') {
      split = splitConfig(tenantId, input);
      // Before anything is sent: whose identity may sign, and where.
      if (split.type === 'aws-kms') assertAwsIdentityAllowed(split.settings, this.backends.awsOperator);
      const url = input.type === 'aws-kms' ? input.endpoint : input.address;
      if (url !== undefined) await this.outbound.assertUrlAllowed(url);
      let candidate: KeyBackend | undefined;
      try {
        candidate = await this.backends.buildCandidate(tenantId, split);
        await candidate.check();
      } catch (err) {
        throw await verificationFailure(split.type, err);
      } finally {
        candidate?.close?.();
      }
      backendId = this.backends.newConfigId();
    }
    const sealed =
      split?.secrets && backendId
        ? await this.backends.sealSecrets(tenantId, backendId, split.secrets)
        : null;
    await this.db.transaction(async (m) => {
      const before: { key_backend_type: KeyBackendType }[] = await m.query(
        'SELECT key_backend_type FROM tenants WHERE id = $1 FOR UPDATE',
        [tenantId],
      );
      if (before.length === 0) throw new CustosException('not_found', 'Tenant not found');
      if (split && backendId) {
        await m.query(
          `INSERT INTO tenant_key_backends (id, tenant_id, type, settings, secret_wrapped_key, secret)
           VALUES ($1, $2, $3, $4, $5, $6)`,
          [
            backendId,
            tenantId,
            split.type,
            JSON.stringify(split.settings),
            sealed?.wrappedKey ?? null,
            sealed?.envelope ?? null,
          ],
        );
      }
      await m.query('UPDATE tenants SET key_backend_type = $2, key_backend_id = $3 WHERE id = $1', [
        tenantId,
        input.type,
        backendId,
      ]);
      await this.resetMigration(m, tenantId, backendId);
      await this.audit.record(
        {
          tenantId,
          action: 'key_backend.configured',
          outcome: 'allowed',
          actor,
          details: {
            type: input.type,
            previousType: before[0].key_backend_type,
            settings: split?.settings ?? {},
            ...(backendId ? { configurationId: backendId } : {}),
          },
        },
        m,
      );
    });
    await this.sealUnder(tenantId, backendId);
    this.startMigration(tenantId);
    return this.view(tenantId);
  }

  /**
   * New secrets go under a data key of `backendId` from now on, in every process: a new epoch there unless the
   * newest one already is. Best effort: if the backend fails now, the newest epoch (readable until its
   * migration) keeps serving writes.
   */
  private async sealUnder(tenantId: string, backendId: string | null): Promise<void> {
    const latest: { backend_id: string | null }[] = await this.db.query(
      `SELECT backend_id FROM data_keys WHERE tenant_id = $1 AND retired_at IS NULL ORDER BY epoch DESC LIMIT 1`,
      [tenantId],
    );
    if (latest.length > 0 && latest[0].backend_id !== backendId) {
      try {
        await this.dataKeys.startEpoch(tenantId);
      } catch (err) {
        const e = err as { name?: string; code?: unknown };
        this.log.warn({ tenantId, err: { name: e.name, code: e.code } }, 'new data-key epoch deferred');
      }
    }
    await this.bus.publish(tenantId, 'epoch').catch(() => undefined);
  }

  /** Moves the tenant's data keys to its current backend in the background (one run per tenant at a time). */
  startMigration(tenantId: string): void {
    void this.runMigration(tenantId);
  }

  /** Waits for this process's background migration of a tenant, if one is running (tests, shutdown). */
  async settled(tenantId: string): Promise<void> {
    await this.running.get(tenantId);
  }

  /** This process's run for the tenant: the one under way, or a new one. Never rejects. */
  private runMigration(tenantId: string): Promise<unknown> {
    const under = this.running.get(tenantId);
    if (under) return under;
    const run = this.migrate(tenantId)
      .catch((err: unknown) => {
        const e = err as { name?: string; code?: unknown };
        this.log.warn({ tenantId, err: { name: e.name, code: e.code } }, 'key migration paused; will resume');
      })
      .finally(() => this.running.delete(tenantId));
    this.running.set(tenantId, run);
    return run;
  }

  /**
   * Moves every data key not on the tenant's current backend. Idempotent and resumable: each key is
   * unwrapped with the backend that wrapped it, wrapped with the current one, and written only if its stored
   * wrap is still the one that was read. A backend that fails stops the run and is recorded (`failure`); the
   * background job tries again after a backoff.
   */
  async migrate(
    tenantId: string,
    opts: MigrationOptions = {},
  ): Promise<{ migrated: number; remaining: number; failure?: MigrationFailure }> {
    let migrated = 0;
    let failure: MigrationFailure | null = null;
    /** The configuration that failed (null: the managed keyring), for the audit event. */
    let failedConfiguration: string | null = null;
    const skip = new Set<string>();
    for (;;) {
      if (opts.limit !== undefined && migrated >= opts.limit) break;
      const pending: (KeyRow & { target: string | null })[] = await this.db.query(
        `SELECT d.id, d.tenant_id, d.epoch, d.backend_id, d.wrapped, t.key_backend_id AS target
           FROM data_keys d JOIN tenants t ON t.id = d.tenant_id
          WHERE d.tenant_id = $1 AND d.backend_id IS DISTINCT FROM t.key_backend_id AND NOT (d.id = ANY($2::uuid[]))
          ORDER BY d.epoch LIMIT 1`,
        [tenantId, [...skip]],
      );
      const key = pending[0];
      if (!key) break;
      let plaintext: Buffer;
      try {
        const from = await this.backends.byId(tenantId, key.backend_id);
        plaintext = await from.unwrapDataKey(key.wrapped, ctxOf(key));
      } catch (err) {
        failure = asMigrationFailure(err, 'source');
        if (!failure) throw err;
        failedConfiguration = key.backend_id;
        break;
      }
      let to: KeyBackend;
      let rewrapped;
      try {
        to = await this.backends.byId(tenantId, key.target);
        rewrapped = await to.wrapDataKey(plaintext, ctxOf(key));
      } catch (err) {
        failure = asMigrationFailure(err, 'target');
        if (!failure) throw err;
        failedConfiguration = key.target;
        break;
      } finally {
        plaintext.fill(0);
      }
      await opts.beforeWrite?.(key.id);
      await failpoint(this.config.failpoints, this.log, 'key-migration.before-write', {
        tenantId,
        dataKeyId: key.id,
      });
      const done = returned<{ id: string }>(
        await this.db.query(
          `UPDATE data_keys SET wrapped = $3, key_ref = $4, backend_type = $5, backend_id = $6
            WHERE id = $1 AND tenant_id = $2 AND wrapped = $7 RETURNING id`,
          [key.id, tenantId, rewrapped.wrapped, rewrapped.keyRef, to.type, key.target, key.wrapped],
        ),
      );
      // Someone else moved (or rotated) it meanwhile: look at it again next round.
      if (done.length === 0) {
        skip.add(key.id);
        continue;
      }
      migrated++;
    }
    const remaining = await this.pendingCount(tenantId);
    if (failure) {
      await this.recordFailure(tenantId, failure, failedConfiguration, { migrated, remaining });
      return { migrated, remaining, failure };
    }
    if (remaining === 0) {
      if (migrated > 0) await this.finishMigration(tenantId, migrated);
      await this.db.query('DELETE FROM tenant_key_migrations WHERE tenant_id = $1', [tenantId]);
    } else if (migrated > 0) {
      await this.recordProgress(tenantId);
    }
    return { migrated, remaining };
  }

  /** Tenants with data keys still on a previous backend and not waiting out a backoff (for the background job). */
  async tenantsMigrating(limit = 100): Promise<string[]> {
    const rows: { tenant_id: string }[] = await this.db.query(
      `SELECT DISTINCT d.tenant_id FROM data_keys d JOIN tenants t ON t.id = d.tenant_id
              LEFT JOIN tenant_key_migrations m ON m.tenant_id = d.tenant_id
        WHERE d.backend_id IS DISTINCT FROM t.key_backend_id
          AND (m.next_attempt_at IS NULL OR m.next_attempt_at <= now())
        LIMIT $1`,
      [limit],
    );
    return rows.map((r) => r.tenant_id);
  }

  /** An admin retries a migration now (a new failure episode begins: its failure is audited again). */
  async resumeMigration(actor: Actor, tenantId: string): Promise<KeyBackendView> {
    const before = await this.view(tenantId);
    if (before.status === 'active') throw new CustosException('conflict', 'No key migration to resume');
    const sources = await this.pendingSources(tenantId);
    await this.db.transaction(async (m) => {
      await m.query(
        `INSERT INTO tenant_key_migrations (tenant_id, target_backend_id)
         VALUES ($1, (SELECT key_backend_id FROM tenants WHERE id = $1))
         ON CONFLICT (tenant_id) DO UPDATE SET attempts = 0, failing_since = NULL, next_attempt_at = NULL`,
        [tenantId],
      );
      await this.audit.record(
        {
          tenantId,
          action: 'key_backend.migration_resumed',
          outcome: 'allowed',
          actor,
          details: {
            remaining: before.dataKeys.total - before.dataKeys.onCurrentBackend,
            ...(before.migration?.lastError
              ? {
                  previousError: {
                    reason: before.migration.lastError.reason,
                    side: before.migration.lastError.side,
                  },
                }
              : {}),
          },
        },
        m,
      );
    });
    // Fresh clients: an admin resumes because something was fixed (credentials, a key restored), and a
    // breaker opened by the last failure must not answer for it.
    for (const id of [...sources.map((r) => r.backend_id), await this.currentBackendId(tenantId)]) {
      if (id !== null) this.backends.evict(id);
    }
    await this.running.get(tenantId);
    await this.runMigration(tenantId);
    return this.view(tenantId);
  }

  /**
   * An admin gives up on a migration: the tenant goes back to the configuration its unmoved keys are wrapped
   * by (the one of the newest such key), after a round trip proves it works; new secrets go under it at once.
   * Keys already moved to the abandoned configuration are moved back by the background migration.
   */
  async cancelMigration(actor: Actor, tenantId: string): Promise<KeyBackendView> {
    const sources = await this.pendingSources(tenantId);
    if (sources.length === 0) throw new CustosException('conflict', 'No key migration to cancel');
    const back = sources[0].backend_id;
    let backType: KeyBackendType = 'managed';
    if (back !== null) {
      const rows: { type: KeyBackendType; retired_at: Date | null }[] = await this.db.query(
        'SELECT type, retired_at FROM tenant_key_backends WHERE id = $1 AND tenant_id = $2',
        [back, tenantId],
      );
      if (!rows[0] || rows[0].retired_at !== null) {
        throw new CustosException('conflict', 'The previous key-backend configuration is retired', {
          reason: 'previous_configuration_retired',
        });
      }
      backType = rows[0].type;
      this.backends.evict(back);
    }
    const backend = await this.backends.byId(tenantId, back);
    try {
      await backend.check();
    } catch (err) {
      if (back === null) throw err;
      throw await verificationFailure(backType as Exclude<KeyBackendType, 'managed'>, err);
    }
    const abandoned = await this.db.transaction(async (m) => {
      const rows: { key_backend_id: string | null; key_backend_type: KeyBackendType }[] = await m.query(
        'SELECT key_backend_id, key_backend_type FROM tenants WHERE id = $1 FOR UPDATE',
        [tenantId],
      );
      const current = rows[0];
      if (!current) throw new CustosException('not_found', 'Tenant not found');
      const still: { n: number }[] = await m.query(
        `SELECT count(*)::int AS n FROM data_keys
          WHERE tenant_id = $1 AND backend_id IS NOT DISTINCT FROM $2 AND backend_id IS DISTINCT FROM $3`,
        [tenantId, back, current.key_backend_id],
      );
      if (still[0].n === 0)
        throw new CustosException('conflict', 'The key migration changed meanwhile; look again');
      await m.query('UPDATE tenants SET key_backend_type = $2, key_backend_id = $3 WHERE id = $1', [
        tenantId,
        backType,
        back,
      ]);
      await this.resetMigration(m, tenantId, back);
      const moved: { n: number }[] = await m.query(
        'SELECT count(*)::int AS n FROM data_keys WHERE tenant_id = $1 AND backend_id IS NOT DISTINCT FROM $2',
        [tenantId, current.key_backend_id],
      );
      await this.audit.record(
        {
          tenantId,
          action: 'key_backend.migration_cancelled',
          outcome: 'allowed',
          actor,
          details: {
            type: backType,
            previousType: current.key_backend_type,
            ...(back ? { configurationId: back } : {}),
            ...(current.key_backend_id ? { cancelledConfigurationId: current.key_backend_id } : {}),
            // Keys that had already moved: they follow back once the abandoned configuration answers.
            keysOnCancelledConfiguration: moved[0].n,
          },
        },
        m,
      );
      return current.key_backend_id;
    });
    await this.sealUnder(tenantId, back);
    await this.retireUnused(tenantId);
    if (abandoned !== null) this.backends.evict(abandoned);
    this.startMigration(tenantId);
    return this.view(tenantId);
  }

  /**
   * Key rotation: a new data-key epoch for new secrets, and every data key already on the current backend
   * rewrapped under its newest key version (Vault: the transit key is rotated first; KMS: ReEncrypt under the
   * key's current material; managed: the newest root key version). No credential is decrypted.
   */
  async rotateTenantKey(
    actor: Actor,
    tenantId: string,
  ): Promise<{ epoch: number; rewrapped: number; keyVersion?: number }> {
    const { backend, backendId } = await this.backends.current(tenantId);
    let keyVersion: number | undefined;
    // Vault: rotate the transit key first, so the rewrap lands on the new version. KMS keys rotate on the
    // customer's schedule (on-demand rotation is theirs to spend); ReEncrypt picks up the newest material.
    if (backend.type === 'vault-transit') {
      const version = await backend.rotateKey?.();
      if (typeof version === 'number') keyVersion = version;
    }
    const keys: KeyRow[] = await this.db.query(
      `SELECT id, tenant_id, epoch, backend_id, wrapped FROM data_keys
        WHERE tenant_id = $1 AND backend_id IS NOT DISTINCT FROM $2 ORDER BY epoch`,
      [tenantId, backendId],
    );
    let rewrapped = 0;
    for (const key of keys) {
      const next = await backend.rewrapDataKey(key.wrapped, ctxOf(key));
      const done = returned<{ id: string }>(
        await this.db.query(
          `UPDATE data_keys SET wrapped = $3, key_ref = $4 WHERE id = $1 AND tenant_id = $2 AND wrapped = $5
           RETURNING id`,
          [key.id, tenantId, next.wrapped, next.keyRef, key.wrapped],
        ),
      );
      rewrapped += done.length;
    }
    const { epoch } = await this.dataKeys.startEpoch(tenantId);
    await this.bus.publish(tenantId, 'epoch').catch(() => undefined);
    await this.audit.record({
      tenantId,
      action: 'key_backend.rotated',
      outcome: 'allowed',
      actor,
      details: { type: backend.type, epoch, rewrapped, ...(keyVersion ? { keyVersion } : {}) },
    });
    return { epoch, rewrapped, ...(keyVersion ? { keyVersion } : {}) };
  }

  /** Drops the tenant's cached data keys in every process. */
  async flush(actor: Actor, tenantId: string): Promise<{ flushed: true; replicasNotified: boolean }> {
    const { replicasNotified } = await this.bus.publish(tenantId, 'keys');
    await this.audit.record({
      tenantId,
      action: 'key_backend.flushed',
      outcome: 'allowed',
      actor,
      details: { replicasNotified },
    });
    return { flushed: true, replicasNotified };
  }

  private async pendingCount(tenantId: string): Promise<number> {
    const rows: { n: number }[] = await this.db.query(
      `SELECT count(*)::int AS n FROM data_keys d JOIN tenants t ON t.id = d.tenant_id
        WHERE d.tenant_id = $1 AND d.backend_id IS DISTINCT FROM t.key_backend_id`,
      [tenantId],
    );
    return rows[0].n;
  }

  private async currentBackendId(tenantId: string): Promise<string | null> {
    const rows: { key_backend_id: string | null }[] = await this.db.query(
      'SELECT key_backend_id FROM tenants WHERE id = $1',
      [tenantId],
    );
    return rows[0]?.key_backend_id ?? null;
  }

  /** The configurations still wrapping keys to move, the one with the newest such key first. */
  private async pendingSources(tenantId: string): Promise<{ backend_id: string | null; n: number }[]> {
    return this.db.query(
      `SELECT d.backend_id, count(*)::int AS n FROM data_keys d JOIN tenants t ON t.id = d.tenant_id
        WHERE d.tenant_id = $1 AND d.backend_id IS DISTINCT FROM t.key_backend_id
        GROUP BY d.backend_id ORDER BY max(d.epoch) DESC`,
      [tenantId],
    );
  }

  /** A fresh migration state toward `target` (a new configuration, or back after a cancel). */
  private async resetMigration(m: EntityManager, tenantId: string, target: string | null): Promise<void> {
    await m.query(
      `INSERT INTO tenant_key_migrations AS k (tenant_id, target_backend_id) VALUES ($1, $2)
       ON CONFLICT (tenant_id) DO UPDATE SET target_backend_id = $2, started_at = now(), attempts = 0,
         failing_since = NULL, last_attempt_at = NULL, next_attempt_at = NULL, last_error_code = NULL,
         last_error_reason = NULL, last_error_side = NULL, last_error_message = NULL`,
      [tenantId, target],
    );
  }

  /**
   * Records a failed attempt and when to try again; the first failure of an episode is audited with it, in
   * the same transaction, so a retry never repeats the event.
   */
  private async recordFailure(
    tenantId: string,
    failure: MigrationFailure,
    configurationId: string | null,
    progress: { migrated: number; remaining: number },
  ): Promise<void> {
    await this.db.transaction(async (m) => {
      const rows: { attempts: number; new_episode: boolean }[] = await m.query(
        `INSERT INTO tenant_key_migrations AS k
           (tenant_id, target_backend_id, attempts, failing_since, last_attempt_at, next_attempt_at,
            last_error_code, last_error_reason, last_error_side, last_error_message)
         VALUES ($1, (SELECT key_backend_id FROM tenants WHERE id = $1), 1, now(), now(),
                 now() + make_interval(secs => $6), $2, $3, $4, $5)
         ON CONFLICT (tenant_id) DO UPDATE SET
           attempts = k.attempts + 1,
           failing_since = COALESCE(k.failing_since, now()),
           last_attempt_at = now(),
           next_attempt_at = now() + make_interval(secs => LEAST($7::float8, $6 * power(2, LEAST(k.attempts, 16)))),
           last_error_code = $2, last_error_reason = $3, last_error_side = $4, last_error_message = $5
         RETURNING k.attempts, k.failing_since = now() AS new_episode`,
        [
          tenantId,
          failure.code,
          failure.reason,
          failure.side,
          failure.message,
          RETRY_BASE_SECONDS,
          RETRY_MAX_SECONDS,
        ],
      );
      const row = rows[0];
      if (!row?.new_episode) return;
      await this.audit.record(
        {
          tenantId,
          action: 'key_backend.migration_failed',
          outcome: 'failed',
          actor: systemActor,
          details: {
            code: failure.code,
            reason: failure.reason,
            side: failure.side,
            // The configuration that failed; none named: the managed keyring.
            ...(configurationId ? { configurationId } : {}),
            migrated: progress.migrated,
            remaining: progress.remaining,
          },
        },
        m,
      );
    });
    this.log.warn(
      { tenantId, reason: failure.reason, side: failure.side, remaining: progress.remaining },
      'key migration failed; will retry with backoff',
    );
  }

  /** A run moved keys: whatever failed before has passed. */
  private async recordProgress(tenantId: string): Promise<void> {
    await this.db.query(
      `UPDATE tenant_key_migrations SET attempts = 0, failing_since = NULL, next_attempt_at = NULL,
              last_attempt_at = now(), last_error_code = NULL, last_error_reason = NULL, last_error_side = NULL,
              last_error_message = NULL
        WHERE tenant_id = $1`,
      [tenantId],
    );
  }

  /** Retires configurations no data key uses any more, erasing their credentials. */
  private async retireUnused(tenantId: string): Promise<string[]> {
    const retired = returned<{ id: string }>(
      await this.db.query(
        `UPDATE tenant_key_backends b SET retired_at = now(), secret = NULL, secret_wrapped_key = NULL
          WHERE b.tenant_id = $1 AND b.retired_at IS NULL
            AND b.id IS DISTINCT FROM (SELECT key_backend_id FROM tenants WHERE id = $1)
            AND NOT EXISTS (SELECT 1 FROM data_keys d WHERE d.backend_id = b.id)
          RETURNING b.id`,
        [tenantId],
      ),
    );
    for (const r of retired) this.backends.evict(r.id);
    return retired.map((r) => r.id);
  }

  private async finishMigration(tenantId: string, migrated: number): Promise<void> {
    const retired = await this.retireUnused(tenantId);
    await this.audit.record({
      tenantId,
      action: 'key_backend.migrated',
      outcome: 'allowed',
      actor: { type: 'system', id: null },
      details: { migrated, retiredConfigurations: retired },
    });
  }
}

export type { KeyBackend };
