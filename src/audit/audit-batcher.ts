/**
 * Group-committed audit events for the hot path. Concurrent callers' events are written together in one
 * multi-row INSERT (its own implicit transaction), and each caller's promise settles only when that INSERT
 * has committed or failed: nothing is released before its event is durable, and a failed write fails every
 * caller in the batch (fail closed). While one batch is in flight the next one gathers, so under load the
 * number of INSERTs falls to about one per database round trip instead of one per request.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { requestContext } from '../common/logger.js';
import { Metrics } from '../common/metrics.js';
import { preparedQuery } from '../database/sql.js';
import type { AuditRecord } from './audit.service.js';

interface Pending {
  row: unknown[];
  resolve(): void;
  reject(err: unknown): void;
}

const MAX_BATCH = 500;

// unnest() keeps the statement text constant whatever the batch size, so PostgreSQL plans it once.
const insertSql = `INSERT INTO audit_events
  (tenant_id, action, outcome, actor_type, actor_id, subject_user_id, connection_id, provider, request_id, details)
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[],
                       $8::text[], $9::text[], $10::jsonb[])`;

@Injectable()
export class AuditBatcher {
  private queue: Pending[] = [];
  private flushing = false;
  /** INSERT statements issued and events written (for metrics and benchmarks). */
  readonly stats = { batches: 0, events: 0 };

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(Metrics) private readonly metrics: Metrics,
  ) {}

  /** Resolves once the event is committed; rejects if it could not be written. */
  write(event: AuditRecord): Promise<void> {
    const requestId = requestContext.getStore()?.requestId ?? null;
    return new Promise<void>((resolve, reject) => {
      this.queue.push({
        row: [
          event.tenantId,
          event.action,
          event.outcome,
          event.actor.type,
          event.actor.id,
          event.subjectUserId ?? null,
          event.connectionId ?? null,
          event.provider ?? null,
          requestId,
          JSON.stringify(event.details ?? {}),
        ],
        resolve,
        reject,
      });
      if (!this.flushing) {
        this.flushing = true;
        // Let the requests of this turn of the event loop join the batch.
        setImmediate(() => void this.flush());
      }
    });
  }

  private async flush(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, MAX_BATCH);
      const columns: unknown[][] = Array.from({ length: 10 }, () => []);
      for (const p of batch) p.row.forEach((v, i) => columns[i].push(v));
      try {
        await preparedQuery(this.db, 'custos_audit_batch_v1', insertSql, columns);
        this.stats.batches++;
        this.stats.events += batch.length;
        this.metrics.auditInserts.inc();
        this.metrics.auditEvents.inc(batch.length);
        for (const p of batch) p.resolve();
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
    this.flushing = false;
  }
}
