/**
 * Group-committed audit events for the hot path. Concurrent callers' events are written together in one
 * multi-row INSERT (its own implicit transaction), and each caller's promise settles only when that INSERT
 * has committed or failed: nothing is released before its event is durable, and a failed write fails its
 * caller (fail closed). While one batch is in flight the next one gathers, so under load the number of INSERTs
 * falls to about one per database round trip instead of one per request.
 *
 * One caller never fails its neighbours (see StatementBatcher): a write that does not commit within
 * CUSTOS_DB_BATCH_TIMEOUT_MS fails with temporarily_unavailable (it may still commit later: an event without a
 * release, never a release without an event), and an event the database cannot store fails alone:
 * - values PostgreSQL cannot hold (NUL, lone surrogates; malformed ids) are found before the INSERT;
 * - a row the database refuses as data anyway is isolated by splitting the batch.
 * The offending caller fails closed (AuditEventRejected), and its event is still recorded as a trace, with the
 * same action, outcome and actor: each bad value is replaced by `{"invalid": true}` inside details, or by NULL
 * in a column, and details gain `invalid: true` and `invalidValues` (the paths replaced); a row refused for a
 * reason that cannot be pinned to a value keeps its columns and gets details `{"invalid": true, "sqlstate"}`.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { CustosException } from '../common/errors.js';
import { LOGGER } from '../common/logger.js';
import { Metrics } from '../common/metrics.js';
import { CONFIG, type Config } from '../config/config.js';
import {
  isDataError,
  sqlState,
  StatementBatcher,
  storableText,
  unstorableText,
} from '../database/statement-batcher.js';
import { AuditRepository, type AuditRowValues } from './audit.repository.js';
import { auditRow, type AuditRecord } from './audit.service.js';

/** The event's columns, in the INSERT's order; details as JSON text. */
type Row = AuditRowValues;

const COLUMNS = [
  'tenant_id',
  'action',
  'outcome',
  'actor_type',
  'actor_id',
  'subject_user_id',
  'connection_id',
  'provider',
  'request_id',
] as const;
const UUID_COLUMNS = new Set([0, 6]);
const NOT_NULL_COLUMNS = new Set([1, 2, 3]);

/** The event could not be stored as given; the caller must fail closed (its trace was written where possible). */
export class AuditEventRejected extends CustosException {
  constructor(readonly sqlstate: string | undefined) {
    super('invalid_request', 'The audit event holds values that cannot be stored');
  }
}

const MAX_BATCH = 500;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const INVALID = { invalid: true };

/** A copy of `value` with every unstorable string replaced by the marker; `paths` collects where. */
function cleanJson(value: unknown, path: string, paths: string[]): unknown {
  if (typeof value === 'string') {
    if (!unstorableText(value)) return value;
    paths.push(path);
    return INVALID;
  }
  if (Array.isArray(value)) return value.map((v, i) => cleanJson(v, `${path}.${i}`, paths));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      // Keys come from Custos's own code; should one ever be unstorable, it is kept legible rather than lost.
      const key = storableText(k);
      out[key] = cleanJson(v, `${path}.${key}`, paths);
    }
    return out;
  }
  return value;
}

/** The row as it can be stored, and what had to be replaced; null when the row is fine as it is. */
function screen(row: Row): { row: Row; invalid: string[] } | null {
  const invalid: string[] = [];
  const out = [...row] as Row;
  for (let i = 0; i < COLUMNS.length; i++) {
    const v = row[i];
    if (v === null) continue;
    if (UUID_COLUMNS.has(i) ? !UUID.test(v) : unstorableText(v)) {
      invalid.push(COLUMNS[i]);
      out[i] = NOT_NULL_COLUMNS.has(i) ? storableText(v) : null;
    }
  }
  // JSON.stringify writes NUL and lone surrogates as \u escapes: text without any escape is fine as it is.
  let details = row[9];
  if (details.includes('\\u')) {
    const paths: string[] = [];
    const cleaned = cleanJson(JSON.parse(details), 'details', paths) as Record<string, unknown>;
    if (paths.length > 0) {
      invalid.push(...paths);
      details = JSON.stringify(cleaned);
    }
  }
  if (invalid.length === 0) return null;
  const marked = {
    ...(JSON.parse(details) as Record<string, unknown>),
    invalid: true,
    invalidValues: invalid,
  };
  out[9] = JSON.stringify(marked);
  return { row: out, invalid };
}

interface Item {
  /** null: a readiness probe, which runs the INSERT without adding a row. */
  row: Row | null;
}

@Injectable()
export class AuditBatcher {
  private readonly batcher: StatementBatcher<Item, void>;
  /** INSERT statements issued and events written (for metrics and benchmarks). */
  readonly stats = { batches: 0, events: 0, rejected: 0 };

  constructor(
    @Inject(AuditRepository) private readonly repository: AuditRepository,
    @Inject(Metrics) private readonly metrics: Metrics,
    @Inject(CONFIG) config: Config,
    @Inject(LOGGER) private readonly log: Logger,
  ) {
    this.batcher = new StatementBatcher<Item, void>({
      maxBatch: MAX_BATCH,
      // One INSERT at a time is what makes it a group commit; a stuck one gives its slot up at its deadline.
      maxInFlight: 1,
      timeoutMs: config.dbBatchTimeoutMs,
      run: (items, signal) => this.insert(items, signal),
      onFailure: (reason) => metrics.batchFailures.inc({ batcher: 'audit', reason }),
    });
  }

  /** Resolves once the event is committed; rejects if it could not be written. */
  async write(event: AuditRecord): Promise<void> {
    const row = auditRow(event);
    const screened = screen(row);
    if (screened) return this.reject(screened.row, screened.invalid, undefined);
    try {
      await this.batcher.submit({ row });
    } catch (err) {
      if (!isDataError(err)) throw err;
      const code = sqlState(err);
      const trace = [...row] as Row;
      trace[9] = JSON.stringify({ invalid: true, sqlstate: code });
      return this.reject(trace, [], code);
    }
  }

  /** The statement the token endpoint's audit writes use, through the same queue (for readiness). */
  async check(): Promise<void> {
    await this.batcher.submit({ row: null });
  }

  /** Records the trace of an event that cannot be stored as given, then fails its caller closed. */
  private async reject(trace: Row, invalid: string[], code: string | undefined): Promise<never> {
    this.stats.rejected++;
    this.metrics.auditEventsRejected.inc();
    const about = { tenantId: trace[0], action: trace[1], invalidValues: invalid, sqlstate: code };
    try {
      await this.batcher.submit({ row: trace });
      this.log.warn(about, 'audit event refused as given; recorded with its bad values replaced');
    } catch (err) {
      this.log.error(
        { ...about, cause: sqlState(err) },
        'audit event refused, and its trace could not be written',
      );
    }
    throw new AuditEventRejected(code);
  }

  private async insert(items: Item[], signal: AbortSignal): Promise<void[]> {
    const columns: unknown[][] = Array.from({ length: 10 }, () => []);
    let rows = 0;
    for (const { row } of items) {
      if (!row) continue;
      rows++;
      row.forEach((v, i) => columns[i].push(v));
    }
    await this.repository.insertBatch(columns, signal);
    if (rows > 0) {
      this.stats.batches++;
      this.stats.events += rows;
      this.metrics.auditInserts.inc();
      this.metrics.auditEvents.inc(rows);
    }
    return items.map(() => undefined);
  }
}
