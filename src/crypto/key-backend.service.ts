/**
 * Bring your own key: a tenant chooses the managed keyring, its AWS KMS key or its Vault Transit key.
 *
 * - Configure: the backend is proven with a real round trip before it is accepted; its credentials are
 *   sealed under the managed root keyring. Existing data keys are then moved to it by a background
 *   migration (unwrap with the old backend, wrap with the new), one key at a time, each move committed on its
 *   own and guarded by the old wrapped value, so a crash anywhere leaves every key readable and the next run
 *   picks up what is left. No credential is ever decrypted: only data keys move.
 * - Rotate: a new data-key epoch, and every data key rewrapped under the backend's newest key version.
 * - Flush: every process drops the tenant's cached data keys, so a revoked customer key acts at once.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { DataSource } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CustosException } from '../common/errors.js';
import { LOGGER } from '../common/logger.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { returned } from '../database/sql.js';
import { DataKeyService } from './data-key.service.js';
import type { DataKeyContext, KeyBackend, KeyBackendType } from './key-backend.js';
import type { KeyBackendInput } from './key-backend.dto.js';
import {
  buildBackend,
  KeyBackends,
  splitConfig,
  verificationFailure,
  type KeyBackendSettings,
} from './key-backends.js';
import { KeyCacheBus } from './key-cache-bus.js';

export interface KeyBackendView {
  type: KeyBackendType;
  settings: KeyBackendSettings;
  status: 'active' | 'migrating';
  dataKeys: { total: number; onCurrentBackend: number };
  configuredAt: string | null;
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
  ) {}

  async view(tenantId: string): Promise<KeyBackendView> {
    const rows: {
      key_backend_type: KeyBackendType;
      settings: KeyBackendSettings | null;
      created_at: Date | null;
      total: number;
      current: number;
    }[] = await this.db.query(
      `SELECT t.key_backend_type, b.settings, b.created_at,
              (SELECT count(*)::int FROM data_keys d WHERE d.tenant_id = t.id) AS total,
              (SELECT count(*)::int FROM data_keys d WHERE d.tenant_id = t.id
                  AND d.backend_id IS NOT DISTINCT FROM t.key_backend_id) AS current
         FROM tenants t LEFT JOIN tenant_key_backends b ON b.id = t.key_backend_id
        WHERE t.id = $1`,
      [tenantId],
    );
    const r = rows[0];
    if (!r) throw new CustosException('not_found', 'Tenant not found');
    return {
      type: r.key_backend_type,
      settings: r.settings ?? {},
      status: r.current === r.total ? 'active' : 'migrating',
      dataKeys: { total: r.total, onCurrentBackend: r.current },
      configuredAt: r.created_at ? r.created_at.toISOString() : null,
    };
  }

  /** Verifies and saves a configuration, then starts moving the tenant's data keys to it. */
  async configure(actor: Actor, tenantId: string, input: KeyBackendInput): Promise<KeyBackendView> {
    let backendId: string | null = null;
    let split: ReturnType<typeof splitConfig> | null = null;
    if (input.type !== 'managed') {
      split = splitConfig(input);
      const url = input.type === 'aws-kms' ? input.endpoint : input.address;
      if (url !== undefined) await this.outbound.assertUrlAllowed(url);
      const candidate = await buildBackend(
        split.type,
        split.settings,
        split.secrets,
        this.backends.timeoutMs,
      );
      try {
        await candidate.check();
      } catch (err) {
        throw await verificationFailure(split.type, err);
      } finally {
        (candidate as { close?: () => void }).close?.();
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
    // New epochs go to the new backend from now on, in every process.
    await this.bus.publish(tenantId, 'epoch').catch(() => undefined);
    this.startMigration(tenantId);
    return this.view(tenantId);
  }

  /** Moves the tenant's data keys to its current backend in the background (one run per tenant at a time). */
  startMigration(tenantId: string): void {
    if (this.running.has(tenantId)) return;
    const run = this.migrate(tenantId)
      .catch((err: unknown) => {
        const e = err as { name?: string; code?: unknown };
        this.log.warn({ tenantId, err: { name: e.name, code: e.code } }, 'key migration paused; will resume');
      })
      .finally(() => this.running.delete(tenantId));
    this.running.set(tenantId, run);
  }

  /** Waits for this process's background migration of a tenant, if one is running (tests, shutdown). */
  async settled(tenantId: string): Promise<void> {
    await this.running.get(tenantId);
  }

  /**
   * Moves every data key not on the tenant's current backend. Idempotent and resumable: each key is
   * unwrapped with the backend that wrapped it, wrapped with the current one, and written only if its stored
   * wrap is still the one that was read.
   */
  async migrate(
    tenantId: string,
    opts: MigrationOptions = {},
  ): Promise<{ migrated: number; remaining: number }> {
    let migrated = 0;
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
      const from = await this.backends.byId(tenantId, key.backend_id);
      const to = await this.backends.byId(tenantId, key.target);
      const plaintext = await from.unwrapDataKey(key.wrapped, ctxOf(key));
      let rewrapped;
      try {
        rewrapped = await to.wrapDataKey(plaintext, ctxOf(key));
      } finally {
        plaintext.fill(0);
      }
      await opts.beforeWrite?.(key.id);
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
    if (remaining === 0 && migrated > 0) await this.finishMigration(tenantId, migrated);
    return { migrated, remaining };
  }

  /** Tenants with data keys still on a previous backend (for the background job). */
  async tenantsMigrating(limit = 100): Promise<string[]> {
    const rows: { tenant_id: string }[] = await this.db.query(
      `SELECT DISTINCT d.tenant_id FROM data_keys d JOIN tenants t ON t.id = d.tenant_id
        WHERE d.backend_id IS DISTINCT FROM t.key_backend_id LIMIT $1`,
      [limit],
    );
    return rows.map((r) => r.tenant_id);
  }

  /**
   * Key rotation: a new data-key epoch for new secrets, and every data key already on the current backend
   * rewrapped under its newest key version (Vault: the transit key is rotated first; KMS: ReEncrypt under the
   * key's current material; managed: the newest root key version). No credential is decrypted.
   */
  async rotate(
    actor: Actor,
    tenantId: string,
  ): Promise<{ epoch: number; rewrapped: number; keyVersion?: number }> {
    const { backend, backendId } = await this.backends.current(tenantId);
    let keyVersion: number | undefined;
    // Vault: rotate the transit key first, so the rewrap lands on the new version. KMS keys rotate on the
    // customer's schedule (on-demand rotation is theirs to spend); ReEncrypt picks up the newest material.
    if (backend.type === 'vault-transit') {
      keyVersion = await (backend as unknown as { rotateKey(): Promise<number> }).rotateKey();
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

  /** Retires configurations no data key uses any more, erasing their credentials. */
  private async finishMigration(tenantId: string, migrated: number): Promise<void> {
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
    await this.audit.record({
      tenantId,
      action: 'key_backend.migrated',
      outcome: 'allowed',
      actor: { type: 'system', id: null },
      details: { migrated, retiredConfigurations: retired.map((r) => r.id) },
    });
  }
}

export type { KeyBackend };
