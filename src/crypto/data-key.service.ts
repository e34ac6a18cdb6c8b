/**
 * Tenant data keys: the current epoch for sealing, any epoch by id for opening. Unwrapped keys are cached
 * with a bounded age and count; concurrent misses for one key share one unwrap, so backend calls grow with
 * tenants x epochs, never with reads.
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { LRUCache } from 'lru-cache';
import { DataSource, type EntityManager } from 'typeorm';
import { CONFIG, type Config } from '../config/config.js';
import { CommonException } from '../common/errors.js';
import { Metrics } from '../common/metrics.js';
import { openField, readEnvelopeHeader, sealField, type FieldBinding } from './envelope.js';
import { DataKeysRepository, type DataKeyRow } from './data-keys.repository.js';
import { KeyBackends } from './key-backends.js';
import { CryptoException } from './crypto.errors.js';

/** Which record and field a sealed secret belongs to (the tenant and data key are added by the service). */
export type RecordField = Pick<FieldBinding, 'scope' | 'recordId' | 'field'>;

interface CachedKey {
  tenantId: string;
  key: Buffer;
}

interface CurrentKey {
  dataKeyId: string;
  createdAt: number;
  expiresAt: number;
}

const DAY_MS = 86_400_000;

@Injectable()
export class DataKeyService {
  /**
   * Unwrapped keys by data key id, the least recently used evicted first. An evicted or flushed key is
   * dropped, not zeroed: a request in flight may still hold its buffer.
   */
  private readonly keys: LRUCache<string, CachedKey>;
  /** Each tenant's current epoch, as many tenants as data keys are cached (a forgotten one is read again). */
  private readonly current: LRUCache<string, CurrentKey>;
  private readonly inflight = new Map<string, Promise<Buffer>>();
  /** Backend unwrap calls made by this process (for metrics and benchmarks). */
  unwrapCalls = 0;

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(DataKeysRepository) private readonly rows: DataKeysRepository,
    @Inject(CONFIG) private readonly config: Config,
    @Inject(KeyBackends) private readonly backends: KeyBackends,
    @Inject(Metrics) private readonly metrics: Metrics,
  ) {
    // `ttlResolution: 0`: the clock is read on each lookup rather than cached behind a timer armed per
    // millisecond of traffic. With a TTL of 0 nothing is stored (see `store`).
    this.keys = new LRUCache({ max: config.dataKeyCacheMaxEntries, ttl: this.ttlMs, ttlResolution: 0 });
    this.current = new LRUCache({ max: config.dataKeyCacheMaxEntries });
  }

  private get ttlMs(): number {
    return this.config.dataKeyCacheTtlSeconds * 1000;
  }

  /**
   * The data key new secrets of this tenant are sealed under (creating a new epoch when due). A tenant being
   * deleted, or unknown, gets none (404, as for an unknown tenant): nothing new is sealed under keys about to
   * be shredded. A process that remembers the current epoch checks that only when it reads the epoch again
   * (within a minute), or at once after the deletion request's flush of epochs (KeyCacheBus, scope `epoch`).
   */
  async sealingKey(tenantId: string): Promise<{ dataKeyId: string; key: Buffer }> {
    const now = Date.now();
    const maxAge = this.config.dataKeyMaxAgeDays * DAY_MS;
    const cur = this.current.get(tenantId);
    if (cur && cur.expiresAt > now && now - cur.createdAt < maxAge) {
      return { dataKeyId: cur.dataKeyId, key: await this.keyById(tenantId, cur.dataKeyId) };
    }
    const state = await this.rows.sealingState(tenantId);
    if (!state.accepting) throw new CommonException('not_found', 'Tenant not found');
    let row = state.latest;
    if (!row || now - row.created_at.getTime() >= maxAge)
      row = await this.createEpoch(tenantId, row?.epoch ?? 0);
    this.current.set(tenantId, {
      dataKeyId: row.id,
      createdAt: row.created_at.getTime(),
      expiresAt: now + Math.min(this.ttlMs, 60_000),
    });
    return { dataKeyId: row.id, key: await this.unwrapCached(row) };
  }

  /**
   * Seals a secret field of one of the tenant's records under the tenant's current data key. `binding` names
   * the record and field; the envelope opens only for that same tenant, record and field.
   */
  async seal(tenantId: string, binding: RecordField, plaintext: string): Promise<Buffer> {
    const { dataKeyId, key } = await this.sealingKey(tenantId);
    return sealField(key, { tenantId, dataKeyId, ...binding }, Buffer.from(plaintext, 'utf8'));
  }

  /** Opens an envelope sealed by `seal` (or by any writer using the same binding), whatever its epoch. */
  async open(tenantId: string, binding: RecordField, envelope: Buffer): Promise<string> {
    const { dataKeyId } = readEnvelopeHeader(envelope);
    const key = await this.keyById(tenantId, dataKeyId);
    return openField(key, { tenantId, dataKeyId, ...binding }, envelope).toString('utf8');
  }

  /** The unwrapped data key with this id, which must belong to the tenant. */
  async keyById(tenantId: string, dataKeyId: string): Promise<Buffer> {
    const hit = this.keys.get(dataKeyId);
    if (hit) {
      this.metrics.dataKeyCache.inc({ result: 'hit' });
      if (hit.tenantId !== tenantId)
        throw new CryptoException('decryption_failed', 'Data key does not belong to tenant');
      return hit.key;
    }
    const row = await this.rows.byId(tenantId, dataKeyId);
    if (!row) throw new CryptoException('decryption_failed', 'Unknown data key');
    return this.unwrapCached(row);
  }

  /** Whether the tenant takes new secrets: it exists and its deletion was not requested. */
  async acceptsNewSecrets(tenantId: string): Promise<boolean> {
    return (await this.rows.sealingState(tenantId)).accepting;
  }

  /** How many data keys the tenant has, in the caller's transaction (what shredding destroys). */
  countForTenant(m: EntityManager, tenantId: string): Promise<number> {
    return this.rows.countForTenant(m, tenantId);
  }

  /** Whether this tenant's data key is unwrapped in the cache right now (not expired, not flushed). */
  isCached(tenantId: string, dataKeyId: string): boolean {
    const hit = this.keys.get(dataKeyId);
    return hit !== undefined && hit.tenantId === tenantId;
  }

  /**
   * Drops every unwrapped key and current epoch this process holds: after it may have missed flushes from the
   * other processes (its key-cache bus was cut off from Redis).
   */
  flushAll(): void {
    this.keys.clear();
    this.current.clear();
  }

  /** Drops this tenant's unwrapped keys from this process's cache. */
  flushTenant(tenantId: string): void {
    // Listed first, deleted after: the cache's iterators do not promise to survive deletes.
    const ids: string[] = [];
    for (const [id, k] of this.keys.entries()) {
      if (k.tenantId === tenantId) ids.push(id);
    }
    for (const id of ids) this.keys.delete(id);
    this.current.delete(tenantId);
  }

  cacheSize(): number {
    return this.keys.size;
  }

  /** Tenants whose current epoch this process remembers. */
  epochsCached(): number {
    return this.current.size;
  }

  /** Starts a new epoch now (key rotation): new secrets are sealed under a fresh data key. */
  async startEpoch(tenantId: string): Promise<{ dataKeyId: string; epoch: number }> {
    const latest = await this.rows.latest(tenantId);
    const row = await this.createEpoch(tenantId, latest?.epoch ?? 0);
    this.current.set(tenantId, {
      dataKeyId: row.id,
      createdAt: row.created_at.getTime(),
      expiresAt: Date.now() + Math.min(this.ttlMs, 60_000),
    });
    return { dataKeyId: row.id, epoch: row.epoch };
  }

  /** Forgets which epoch is current for a tenant (another process started a new one). */
  forgetCurrent(tenantId: string): void {
    this.current.delete(tenantId);
  }

  private async createEpoch(tenantId: string, previousEpoch: number): Promise<DataKeyRow> {
    const { backend, backendId } = await this.backends.current(tenantId);
    const id = randomUUID();
    const generated = await backend.generateDataKey({ tenantId, dataKeyId: id });
    const epoch = previousEpoch + 1;
    // Replicas racing to create the same epoch: one insert wins, the others read the winner.
    const inserted = await this.db.transaction(async (m) => {
      const row = await this.rows.insertEpoch(m, {
        id,
        tenantId,
        epoch,
        backendType: backend.type,
        backendId,
        keyRef: generated.keyRef,
        wrapped: generated.wrapped,
      });
      if (row) await this.rows.retireBefore(m, tenantId, epoch);
      return row;
    });
    if (inserted) {
      this.store(tenantId, id, generated.plaintext);
      return inserted;
    }
    generated.plaintext.fill(0);
    const winner = await this.rows.latest(tenantId);
    if (!winner) throw new CommonException('internal_error', 'Data key epoch vanished');
    return winner;
  }

  private unwrapCached(row: DataKeyRow): Promise<Buffer> {
    const hit = this.keys.get(row.id);
    this.metrics.dataKeyCache.inc({ result: hit ? 'hit' : 'miss' });
    if (hit) return Promise.resolve(hit.key);
    const pending = this.inflight.get(row.id);
    if (pending) return pending;
    const p = (async () => {
      try {
        const backend = await this.backends.byId(row.tenant_id, row.backend_id);
        this.unwrapCalls++;
        this.metrics.dataKeyUnwraps.inc({ backend: backend.type });
        const key = await backend.unwrapDataKey(row.wrapped, { tenantId: row.tenant_id, dataKeyId: row.id });
        this.store(row.tenant_id, row.id, key);
        return key;
      } finally {
        this.inflight.delete(row.id);
      }
    })();
    this.inflight.set(row.id, p);
    return p;
  }

  private store(tenantId: string, dataKeyId: string, key: Buffer): void {
    if (this.ttlMs === 0) return;
    this.keys.set(dataKeyId, { tenantId, key });
  }
}
