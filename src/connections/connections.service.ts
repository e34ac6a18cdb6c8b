/**
 * The credential store: import (create or replace), list, read for release, revoke. Each secret field is
 * sealed under the tenant's current data key and bound to its row; a write and its audit event commit
 * together, so a credential write is all or nothing.
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { DataSource, type EntityManager } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CommonException } from '../common/errors.js';
import { failpoint } from '../common/failpoint.js';
import { LOGGER } from '../common/logger.js';
import { CONFIG, type Config } from '../config/config.js';
import { refreshDueAt } from './refresh-schedule.js';
import { RefreshJobs, type DueRefresh } from '../jobs/refresh-jobs.js';
import { DataKeyService } from '../crypto/data-key.service.js';
import { openField, readEnvelopeHeader, sealField, type FieldBinding } from '../crypto/envelope.js';
import type { ProviderDefinition } from '../providers/provider-definition.js';
import { ProviderRegistry } from '../providers/provider-registry.js';
import type { ConnectionStatus, ConnectionType } from './connection.types.js';
import type { ImportCredentialInput } from './connections.dto.js';
import { ConnectionsRepository, type ConnectionRow } from './connections.repository.js';
import { PendingRevocationsRepository } from './pending-revocations.repository.js';
import { ProviderException } from '../providers/providers.errors.js';

export interface ConnectionView {
  id: string;
  tenantId: string;
  userId: string;
  provider: string;
  type: ConnectionType;
  status: ConnectionStatus;
  scopes: string[];
  expiresAt: string | null;
  createdAt: string;
  updatedAt: string;
}

/** Plaintext credential for release; callers must not log or persist it. */
export interface OpenedCredential {
  connection: ConnectionView;
  secret: string;
  refreshToken: string | null;
}

/** Status as a reader should see it: an access token past its expiry with no way to refresh is expired. */
function effectiveStatus(r: ConnectionRow, now = Date.now()): ConnectionStatus {
  if (
    r.status === 'active' &&
    r.type === 'oauth2' &&
    !r.has_refresh &&
    r.expires_at &&
    r.expires_at.getTime() <= now
  )
    return 'expired';
  return r.status;
}

export function connectionView(r: ConnectionRow): ConnectionView {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    userId: r.user_id,
    provider: r.provider,
    type: r.type,
    status: effectiveStatus(r),
    scopes: r.scopes,
    expiresAt: r.expires_at ? r.expires_at.toISOString() : null,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
  };
}

const binding = (tenantId: string, connectionId: string, field: string, dataKeyId: string): FieldBinding => ({
  tenantId,
  scope: 'connection',
  recordId: connectionId,
  field,
  dataKeyId,
});

/**
 * Opened secrets for the token endpoint, per connection. An entry is used only for the exact envelope it
 * came from (a replaced credential has a new envelope) and only while the data key that opened it is itself
 * still in the data-key cache, so it never outlives that cache's age, a flush or a key-backend revocation.
 * It holds nothing the data-key cache could not already open; it saves the per-read HKDF and AES-GCM.
 * The least recently used entry goes first when the cache is full.
 */
const OPENED_CACHE_MAX_MS = 5 * 60_000;
const OPENED_CACHE_MAX_ENTRIES = 10_000;

interface OpenedSecret {
  tenantId: string;
  dataKeyId: string;
  envelope: Buffer;
  secret: string;
}

@Injectable()
export class ConnectionsService {
  /** The data-key cache's age bounds this one's; 0 (data keys not cached) leaves it empty. */
  private readonly openedTtlMs: number;
  private readonly opened: LRUCache<string, OpenedSecret>;

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(ConnectionsRepository) private readonly rows: ConnectionsRepository,
    @Inject(PendingRevocationsRepository) private readonly pending: PendingRevocationsRepository,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(ProviderRegistry) private readonly providers: ProviderRegistry,
    @Inject(CONFIG) private readonly config: Config,
    @Inject(RefreshJobs) private readonly refreshJobs: RefreshJobs,
    @Inject(LOGGER) private readonly log: Logger,
  ) {
    this.openedTtlMs = Math.min(config.dataKeyCacheTtlSeconds * 1000, OPENED_CACHE_MAX_MS);
    // `ttlResolution: 0`: the clock is read on each lookup rather than cached behind a timer armed per
    // millisecond of traffic.
    this.opened = new LRUCache({ max: OPENED_CACHE_MAX_ENTRIES, ttl: this.openedTtlMs, ttlResolution: 0 });
  }

  /** Creates or replaces the user's credential for a provider. */
  async importCredential(
    actor: Actor,
    tenantId: string,
    userId: string,
    providerKey: string,
    input: ImportCredentialInput,
    /** How the credential came: imported through the API, or from the hosted connect flow. */
    source: 'import' | 'connect' = 'import',
  ): Promise<{ connection: ConnectionView; created: boolean }> {
    const checkProvider = (provider: ProviderDefinition | undefined): void => {
      if (!provider) throw new ProviderException('unknown_provider', `Unknown provider "${providerKey}"`);
      const expected: ConnectionType = provider.authMode === 'oauth2' ? 'oauth2' : 'api_key';
      if (input.type !== expected) {
        throw new ProviderException(
          'credential_type_mismatch',
          `Provider "${providerKey}" takes credentials of type "${expected}", not "${input.type}"`,
        );
      }
    };
    // Fresh: a custom provider saved a moment ago through another Custos process must count.
    checkProvider(await this.providers.get(tenantId, providerKey, { fresh: true }));
    const { dataKeyId, key } = await this.dataKeys.sealingKey(tenantId);
    const attempt = () =>
      this.db.transaction(async (m) => {
        if (!this.providers.isBuiltIn(providerKey)) {
          // A custom provider is locked until commit: it cannot be deleted, or change its auth mode, under
          // the connection being written.
          checkProvider(await this.providers.lockCustom(m, tenantId, providerKey));
        }
        const existing = await this.rows.lockLive(m, tenantId, userId, providerKey);
        const id = existing ?? randomUUID();
        const isOauth = input.type === 'oauth2';
        const secretPlain = isOauth ? input.accessToken : input.apiKey;
        const secret = sealField(
          key,
          binding(tenantId, id, isOauth ? 'access_token' : 'api_key', dataKeyId),
          Buffer.from(secretPlain, 'utf8'),
        );
        const refresh =
          isOauth && input.refreshToken
            ? sealField(
                key,
                binding(tenantId, id, 'refresh_token', dataKeyId),
                Buffer.from(input.refreshToken, 'utf8'),
              )
            : null;
        const scopes = isOauth ? [...new Set(input.scopes ?? [])] : [];
        const expiresAt = isOauth && input.expiresAt ? new Date(input.expiresAt) : null;
        const dueAt = refresh ? refreshDueAt(new Date(), expiresAt) : null;
        const row = await this.rows.writeImported(
          m,
          {
            id,
            tenantId,
            userId,
            provider: providerKey,
            type: input.type,
            scopes,
            expiresAt,
            dataKeyId,
            secret,
            refreshToken: refresh,
            refreshDueAt: dueAt,
          },
          existing !== undefined,
        );
        const created = existing === undefined;
        await this.audit.record(
          {
            tenantId,
            action: created ? 'connection.created' : 'connection.replaced',
            outcome: 'allowed',
            actor,
            subjectUserId: userId,
            connectionId: id,
            provider: providerKey,
            details: { type: input.type, scopes, hasRefreshToken: refresh !== null, source },
          },
          m,
        );
        const due: DueRefresh | undefined = dueAt
          ? {
              connectionId: id,
              tenantId,
              provider: providerKey,
              version: row.version,
              failures: 0,
              dueAt,
            }
          : undefined;
        return { connection: connectionView(row), created, due };
      });
    let out: Awaited<ReturnType<typeof attempt>>;
    try {
      out = await attempt();
    } catch (err) {
      // Two first imports raced on the live-connection index: the loser replaces the winner's row.
      if ((err as { driverError?: { code?: string }; code?: string }).driverError?.code !== '23505')
        throw err;
      out = await attempt();
    }
    await failpoint(this.config.failpoints, this.log, 'import.after-commit', {
      connectionId: out.connection.id,
    });
    if (out.due) this.refreshJobs.schedule([out.due]);
    return { connection: out.connection, created: out.created };
  }

  async listConnections(
    actor: Actor,
    tenantId: string,
    userId: string,
    includeRevoked: boolean,
  ): Promise<ConnectionView[]> {
    return this.db.transaction(async (m) => {
      const rows = await this.rows.listForUser(m, tenantId, userId, includeRevoked);
      await this.audit.record(
        {
          tenantId,
          action: 'connection.listed',
          outcome: 'allowed',
          actor,
          subjectUserId: userId,
          details: { count: rows.length },
        },
        m,
      );
      return rows.map((r) => connectionView(r));
    });
  }

  /** Destroys the secret material and keeps a tombstone row for the audit trail. */
  /**
   * Revokes a connection: its secrets are destroyed in this transaction and a tombstone stays for the audit
   * trail. When the provider has an RFC 7009 revocation endpoint, the stored tokens move (as the same sealed
   * envelopes) to `pending_revocations`, to be revoked at the provider, refresh token first; a provider outage
   * delays that, never the local destruction. Returns whether revocation at the provider is pending.
   */
  async revokeConnection(
    actor: Actor,
    tenantId: string,
    connectionId: string,
  ): Promise<{ providerRevocation: boolean }> {
    this.opened.delete(connectionId);
    return this.db.transaction(async (m) => {
      const before = await this.rows.lockLiveById(m, tenantId, connectionId);
      if (!before) throw new CommonException('not_found', 'Connection not found');
      const definition = await this.providers.get(tenantId, before.provider);
      const queue =
        before.type === 'oauth2' && definition?.oauth2?.revocationUrl
          ? [
              ['refresh_token', before.refresh_token],
              ['access_token', before.secret],
            ].filter((x): x is [string, Buffer] => x[1] !== null)
          : [];
      for (const [i, [tokenType, envelope]] of queue.entries()) {
        await this.pending.enqueue(m, {
          tenantId,
          connectionId,
          provider: before.provider,
          tokenType,
          token: envelope,
          position: i,
        });
      }
      const row = await this.rows.markRevoked(m, tenantId, connectionId);
      await this.audit.record(
        {
          tenantId,
          action: 'connection.revoked',
          outcome: 'allowed',
          actor,
          subjectUserId: row.user_id,
          connectionId,
          provider: row.provider,
          details: { providerRevocation: queue.length > 0 ? 'pending' : 'not_supported' },
        },
        m,
      );
      return { providerRevocation: queue.length > 0 };
    });
  }

  /** Decrypts a connection's secrets. Release paths must audit before handing the result out. */
  async openCredential(
    tenantId: string,
    connectionId: string,
    manager?: EntityManager,
  ): Promise<OpenedCredential> {
    const row = await this.rows.withSecrets(manager ?? this.db.manager, tenantId, connectionId);
    if (!row || !row.secret) throw new CommonException('not_found', 'Connection not found or revoked');
    const open = async (field: string, envelope: Buffer) => {
      const { dataKeyId } = readEnvelopeHeader(envelope);
      const key = await this.dataKeys.keyById(tenantId, dataKeyId);
      return openField(key, binding(tenantId, row.id, field, dataKeyId), envelope).toString('utf8');
    };
    return {
      connection: connectionView(row),
      secret: await open(row.type === 'oauth2' ? 'access_token' : 'api_key', row.secret),
      refreshToken: row.refresh_token ? await open('refresh_token', row.refresh_token) : null,
    };
  }

  /**
   * Opens the access token or API key of a connection row the caller has already read (the token endpoint
   * loads the row together with the connector's state in one query). Data keys come from the cache.
   */
  async openSecret(
    tenantId: string,
    connectionId: string,
    type: ConnectionType,
    envelope: Buffer,
  ): Promise<string> {
    const hit = this.opened.get(connectionId);
    if (
      hit &&
      hit.tenantId === tenantId &&
      hit.envelope.equals(envelope) &&
      this.dataKeys.isCached(tenantId, hit.dataKeyId)
    ) {
      return hit.secret;
    }
    const { dataKeyId } = readEnvelopeHeader(envelope);
    const key = await this.dataKeys.keyById(tenantId, dataKeyId);
    const field = type === 'oauth2' ? 'access_token' : 'api_key';
    const secret = openField(key, binding(tenantId, connectionId, field, dataKeyId), envelope).toString(
      'utf8',
    );
    if (this.openedTtlMs > 0) {
      // A copy with its own memory: the row's buffer is a slice of a shared 8 KiB pool slab, which the cache
      // would otherwise keep alive whole.
      const own = Buffer.allocUnsafeSlow(envelope.length);
      envelope.copy(own);
      this.opened.set(connectionId, { tenantId, dataKeyId, envelope: own, secret });
    }
    return secret;
  }

  /** Marks access tokens past expiry with no refresh token as expired; run by a background job. */
  async markExpired(limit = 1000): Promise<number> {
    return this.db.transaction(async (m) => {
      const rows = await this.rows.markExpired(m, limit);
      for (const r of rows) {
        await this.audit.record(
          {
            tenantId: r.tenant_id,
            action: 'connection.expired',
            outcome: 'allowed',
            actor: { type: 'system', id: null },
            subjectUserId: r.user_id,
            connectionId: r.id,
            provider: r.provider,
          },
          m,
        );
      }
      return rows.length;
    });
  }
}
