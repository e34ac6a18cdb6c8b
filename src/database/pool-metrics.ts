/**
 * The pg pool underneath TypeORM, at /metrics: its clients, idle and busy, and the requests waiting for one. Read
 * from the pool's own counters when scraped (no statement is sent), so a scrape costs nothing while the database
 * is away.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { Gauge } from 'prom-client';
import { DataSource } from 'typeorm';
import { Metrics } from '../common/metrics.js';
import { poolOf } from './sql.js';

@Injectable()
export class DatabasePoolMetrics {
  constructor(@Inject(DataSource) db: DataSource, @Inject(Metrics) metrics: Metrics) {
    const gauge = (name: string, help: string, read: (pool: Pool) => number) =>
      new Gauge({
        name,
        help,
        registers: [metrics.registry],
        collect() {
          const pool = poolOf(db);
          // Before the data source opens, or after it closed: nothing to report.
          this.set(pool ? read(pool) : 0);
        },
      });
    gauge(
      'custos_db_pool_clients',
      'Connections open in the database pool (busy or idle).',
      (p) => p.totalCount,
    );
    gauge('custos_db_pool_idle_clients', 'Connections idle in the database pool.', (p) => p.idleCount);
    gauge(
      'custos_db_pool_waiting_requests',
      'Requests waiting for a connection from the database pool (it is exhausted while this stays above 0).',
      (p) => p.waitingCount,
    );
    gauge(
      'custos_db_pool_max_clients',
      'The most connections the database pool opens (CUSTOS_DB_POOL_SIZE).',
      (p) => p.options.max ?? 10,
    );
  }
}
