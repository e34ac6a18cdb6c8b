/**
 * Batches the token endpoint's decision reads. Concurrent requests' lookups (connector state, identity
 * provider version, connection) go to PostgreSQL together as one statement over unnest() arrays, so under
 * load a round trip serves many requests: fewer statements, fewer socket writes and fewer wake-ups of
 * database backends than one query per request. At most two batches are in flight; requests that arrive
 * meanwhile form the next one. A batch the database cannot serve fails each of its requests (the endpoint
 * answers 503); a lookup not answered within CUSTOS_DB_BATCH_TIMEOUT_MS fails the same way and frees its slot.
 * One request's key never fails its neighbours (see StatementBatcher): a key PostgreSQL cannot hold (NUL, a
 * lone surrogate, which the driver would silently turn into U+FFFD and so look up someone else) is refused
 * before the statement, and a key the database refuses as data is isolated by splitting the batch.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { CommonException } from '../common/errors.js';
import { CONFIG, type Config } from '../config/config.js';
import { Metrics } from '../common/metrics.js';
import { preparedQuery } from '../database/sql.js';
import { StatementBatcher, unstorableText } from '../database/statement-batcher.js';
import { BATCH_DECISION_SQL, type DecisionRow } from '../connections/decision-query.js';

export type { DecisionRow };

export interface DecisionKey {
  connectorId: string;
  userId: string;
  provider: string;
  /** The subject token's issuer (null for trusted user ids). */
  issuer: string | null;
}

const MAX_BATCH = 200;
const MAX_IN_FLIGHT = 2;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Names no connector: the readiness probe's lookup, answered by an empty row set. */
const PROBE: DecisionKey = {
  connectorId: '00000000-0000-0000-0000-000000000000',
  userId: '',
  provider: '',
  issuer: null,
};

@Injectable()
export class DecisionBatcher {
  private readonly batcher: StatementBatcher<DecisionKey, DecisionRow | undefined>;
  /** Statements issued and lookups served (for tests and benchmarks). */
  readonly stats = { batches: 0, lookups: 0 };

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(CONFIG) config: Config,
    @Inject(Metrics) metrics: Metrics,
  ) {
    this.batcher = new StatementBatcher({
      maxBatch: MAX_BATCH,
      maxInFlight: MAX_IN_FLIGHT,
      timeoutMs: config.dbBatchTimeoutMs,
      run: (keys, signal) => this.read(keys, signal),
      onFailure: (reason) => metrics.batchFailures.inc({ batcher: 'decisions', reason }),
    });
  }

  /** The decision row for one request; undefined when the connector no longer exists. */
  lookup(key: DecisionKey): Promise<DecisionRow | undefined> {
    const { connectorId, userId, provider, issuer } = key;
    if (
      !UUID.test(connectorId) ||
      unstorableText(userId) ||
      unstorableText(provider) ||
      (issuer !== null && unstorableText(issuer))
    ) {
      return Promise.reject(
        new CommonException('invalid_request', 'The lookup holds characters that cannot be stored'),
      );
    }
    return this.batcher.submit(key);
  }

  /** The token endpoint's decision read, through the same queue and statement (for readiness). */
  async check(): Promise<void> {
    await this.lookup(PROBE);
  }

  private async read(batch: DecisionKey[], signal: AbortSignal): Promise<(DecisionRow | undefined)[]> {
    const rows = await preparedQuery<DecisionRow & { ord: string }>(
      this.db,
      'custos_decisions_v4',
      BATCH_DECISION_SQL,
      [
        batch.map((k) => k.connectorId),
        batch.map((k) => k.userId),
        batch.map((k) => k.provider),
        batch.map((k) => k.issuer),
      ],
      signal,
    );
    this.stats.batches++;
    this.stats.lookups += batch.length;
    const byOrd = new Map<number, DecisionRow>();
    for (const r of rows) byOrd.set(Number(r.ord), r);
    return batch.map((_, i) => byOrd.get(i + 1));
  }
}
