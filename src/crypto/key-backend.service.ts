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
import { DataSource } from 'typeorm';
import { AuditService, systemActor, type Actor } from '../audit/audit.service.js';
import { CommonException, CustosException } from '../common/errors.js';
import { failpoint } from '../common/failpoint.js';
import { LOGGER } from '../common/logger.js';
import { Metrics } from '../common/metrics.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { CONFIG, type Config } from '../config/config.js';
import { awsExternalIdFor } from './aws-identity.js';
import { CryptoException } from './crypto.errors.js';
import { DataKeyService } from './data-key.service.js';
import { originOf } from './guarded-http-handler.js';
import { DataKeysRepository } from './data-keys.repository.js';
import type { DataKeyContext, KeyBackend, KeyBackendType } from './key-backend.js';
import type { KeyBackendInput } from './key-backend.dto.js';
import {
  assertAwsIdentityAllowed,
  KeyBackends,
  splitConfig,
  verificationFailure,
  type KeyBackendSettings,
} from './key-backends.js';
import { KeyBackendsRepository, type MigrationSide } from './key-backends.repository.js';
import { KeyCacheBus } from './key-cache-bus.js';

export type KeyBackendStatus = 'active' | 'migrating' | 'migration_failed';

/** Why the last migration attempt stopped: the backend that failed (the one keys leave, or the one they go to). */
export interface MigrationFailure {
  code: string;
  reason: string;
  side: MigrationSide;
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
    @Inject(KeyBackendsRepository) private readonly configs: KeyBackendsRepository,
    @Inject(DataKeysRepository) private readonly keyRows: DataKeysRepository,
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
          failing.set(await this.configs.countFailingMigrations());
        } catch {
          // The database is down: keep the last value; /readyz says the rest.
        }
      },
    });
  }

  async view(tenantId: string): Promise<KeyBackendView> {
    const r = await this.configs.view(tenantId);
    if (!r) throw new CommonException('not_found', 'Tenant not found');
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
      if (url !== undefined) await this.assertEndpointAllowed(split, url);
      let candidate: KeyBackend | undefined;
      try {
        candidate = await this.backends.buildCandidate(tenantId, split);
        await candidate.check();
      } catch (err) {
        throw await verificationFailure(split.type, err, split.settings);
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
      const previousType = await this.configs.lockBackendType(m, tenantId);
      if (previousType === undefined) throw new CommonException('not_found', 'Tenant not found');
      if (split && backendId) {
        await this.configs.insertConfiguration(m, {
          id: backendId,
          tenantId,
          type: split.type,
          settings: split.settings,
          secretWrappedKey: sealed?.wrappedKey ?? null,
          secret: sealed?.envelope ?? null,
        });
      }
      await this.configs.setPointer(m, tenantId, input.type, backendId);
      await this.configs.resetMigration(m, tenantId, backendId);
      await this.audit.record(
        {
          tenantId,
          action: 'key_backend.configured',
          outcome: 'allowed',
          actor,
          details: {
            type: input.type,
            previousType,
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
   * The SSRF guard's save-time check of a tenant's endpoint. A name that does not resolve is the first way a key
   * backend can be unreachable, and is answered as such (key_backend_unreachable, naming the host).
   */
  private async assertEndpointAllowed(split: ReturnType<typeof splitConfig>, url: string): Promise<void> {
    try {
      await this.outbound.assertUrlAllowed(url);
    } catch (err) {
      const dns =
        err instanceof CustosException &&
        (err.code === 'outbound_url_unresolvable' ||
          (err.code === 'outbound_request_failed' && err.details?.reason === 'dns_resolution_failed'));
      if (!dns) throw err;
      const unresolved = new CryptoException('key_unavailable', err.message, {
        reason: 'unreachable',
        connection: 'dns',
        ...(originOf(url) ? { endpoint: originOf(url) } : {}),
      });
      throw await verificationFailure(split.type, unresolved, split.settings);
    }
  }

  /**
   * New secrets go under a data key of `backendId` from now on, in every process: a new epoch there unless the
   * newest one already is. Best effort: if the backend fails now, the newest epoch (readable until its
   * migration) keeps serving writes.
   */
  private async sealUnder(tenantId: string, backendId: string | null): Promise<void> {
    const latest = await this.keyRows.latestBackend(tenantId);
    if (latest && latest.backend_id !== backendId) {
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
      const key = await this.keyRows.nextToMigrate(tenantId, [...skip]);
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
      const done = await this.keyRows.moveWrap(tenantId, key, rewrapped, to.type, key.target);
      // Someone else moved (or rotated) it meanwhile: look at it again next round.
      if (!done) {
        skip.add(key.id);
        continue;
      }
      migrated++;
    }
    const remaining = await this.keyRows.pendingCount(tenantId);
    if (failure) {
      await this.recordFailure(tenantId, failure, failedConfiguration, { migrated, remaining });
      return { migrated, remaining, failure };
    }
    if (remaining === 0) {
      if (migrated > 0) await this.finishMigration(tenantId, migrated);
      await this.configs.deleteMigration(tenantId);
    } else if (migrated > 0) {
      await this.configs.recordProgress(tenantId);
    }
    return { migrated, remaining };
  }

  /** Tenants with data keys still on a previous backend and not waiting out a backoff (for the background job). */
  tenantsMigrating(limit = 100): Promise<string[]> {
    return this.keyRows.tenantsMigrating(limit);
  }

  /** An admin retries a migration now (a new failure episode begins: its failure is audited again). */
  async resumeMigration(actor: Actor, tenantId: string): Promise<KeyBackendView> {
    const before = await this.view(tenantId);
    if (before.status === 'active') throw new CommonException('conflict', 'No key migration to resume');
    const sources = await this.keyRows.pendingSources(tenantId);
    await this.db.transaction(async (m) => {
      await this.configs.restartMigration(m, tenantId);
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
    for (const id of [...sources.map((r) => r.backend_id), await this.configs.currentBackendId(tenantId)]) {
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
    const sources = await this.keyRows.pendingSources(tenantId);
    if (sources.length === 0) throw new CommonException('conflict', 'No key migration to cancel');
    const back = sources[0].backend_id;
    let backType: KeyBackendType = 'managed';
    if (back !== null) {
      const config = await this.configs.configurationState(tenantId, back);
      if (!config || config.retired_at !== null) {
        throw new CommonException('conflict', 'The previous key-backend configuration is retired', {
          reason: 'previous_configuration_retired',
        });
      }
      backType = config.type;
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
      const current = await this.configs.lockPointer(m, tenantId);
      if (!current) throw new CommonException('not_found', 'Tenant not found');
      const still = await this.keyRows.countOnBackendUnless(m, tenantId, back, current.key_backend_id);
      if (still === 0)
        throw new CommonException('conflict', 'The key migration changed meanwhile; look again');
      await this.configs.setPointer(m, tenantId, backType, back);
      await this.configs.resetMigration(m, tenantId, back);
      const moved = await this.keyRows.countOnBackend(m, tenantId, current.key_backend_id);
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
            keysOnCancelledConfiguration: moved,
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
    const keys = await this.keyRows.onBackend(tenantId, backendId);
    let rewrapped = 0;
    for (const key of keys) {
      const next = await backend.rewrapDataKey(key.wrapped, ctxOf(key));
      if (await this.keyRows.rewrap(tenantId, key, next)) rewrapped++;
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
      const row = await this.configs.recordFailure(
        m,
        tenantId,
        failure,
        RETRY_BASE_SECONDS,
        RETRY_MAX_SECONDS,
      );
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

  /** Retires configurations no data key uses any more, erasing their credentials. */
  private async retireUnused(tenantId: string): Promise<string[]> {
    const retired = await this.configs.retireUnused(tenantId);
    for (const id of retired) this.backends.evict(id);
    return retired;
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
