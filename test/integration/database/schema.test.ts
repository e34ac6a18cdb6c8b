import { randomBytes } from 'node:crypto';
import { DataSource } from 'typeorm';
import { createDataSource, runMigrations } from '../../../src/database/data-source.js';
import { migrations } from '../../../src/database/migrations.js';
import { entities } from '../../../src/entities.js';
import { asAdmin, databaseUrlFor, workerDatabaseName } from '../../support/env.js';

describe('migrations', () => {
  it('bring the database to exactly what the entities describe, and are idempotent', async () => {
    const ds = createDataSource(databaseUrlFor(workerDatabaseName()), entities, 2);
    await ds.initialize();
    try {
      await runMigrations(ds);
      expect(await runMigrations(ds)).toEqual([]);
      const pending = await ds.driver.createSchemaBuilder().log();
      expect(pending.upQueries.map((q) => q.query)).toEqual([]);
    } finally {
      await ds.destroy();
    }
  });

  it('apply once when several replicas start together', async () => {
    const sources = Array.from({ length: 3 }, () =>
      createDataSource(databaseUrlFor(workerDatabaseName()), entities, 2),
    );
    await Promise.all(sources.map((s) => s.initialize()));
    try {
      const results = await Promise.all(sources.map((s) => runMigrations(s)));
      expect(results.flat().length).toBeLessThanOrEqual(1);
    } finally {
      await Promise.all(sources.map((s) => s.destroy()));
    }
  });
});

describe('the audit partitions migration', () => {
  it('moves existing events into monthly partitions with their ids, transaction ids and contents', async () => {
    const name = `custos_partitions_${process.pid}_${randomBytes(3).toString('hex')}`;
    await asAdmin(`CREATE DATABASE ${name}`);
    const url = databaseUrlFor(name);
    const until = migrations.findIndex((m) => m.name === 'AuditPartitions1795530000000');
    expect(until).toBeGreaterThan(0);
    const before = new DataSource({
      ...createDataSource(url, [], 2).options,
      migrations: migrations.slice(0, until),
    });
    await before.initialize();
    let rows: unknown[];
    try {
      await before.runMigrations({ transaction: 'each' });
      await before.query(
        `INSERT INTO audit_events (occurred_at, action, outcome, actor_type, details)
         VALUES ('2020-05-03T10:00:00.123456Z', 'a', 'allowed', 'system', '{"n":1}'),
                ('2020-07-09T00:00:00Z', 'b', 'denied', 'admin_key', '{}'), (now(), 'c', 'failed', 'user', '{}')`,
      );
      rows = await before.query('SELECT * FROM audit_events ORDER BY id');
    } finally {
      await before.destroy();
    }
    const ds = createDataSource(url, entities, 2);
    await ds.initialize();
    try {
      // This migration, then any that came after it.
      expect(await runMigrations(ds)).toEqual(migrations.slice(until).map((m) => m.name));
      expect(await ds.query('SELECT * FROM audit_events ORDER BY id')).toEqual(rows);
      const parts = await ds.query(
        `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'audit_events'::regclass`,
      );
      expect(parts.map((p: { name: string }) => p.name)).toEqual(
        expect.arrayContaining([
          'audit_events_default',
          'audit_events_2020_05',
          'audit_events_2020_06',
          'audit_events_2020_07',
        ]),
      );
      const [{ n }] = await ds.query('SELECT count(*)::int AS n FROM audit_events_default');
      expect(n).toBe(0);
      // New events carry on after the copied ids.
      const [{ id }] = await ds.query(
        `INSERT INTO audit_events (action, outcome, actor_type) VALUES ('d', 'allowed', 'system') RETURNING id::text AS id`,
      );
      expect(BigInt(id)).toBeGreaterThan(BigInt((rows[2] as { id: string }).id));
      // And back: the events return to one table, ids and all.
      for (let i = until; i < migrations.length; i++) await ds.undoLastMigration({ transaction: 'each' });
      const back = await ds.query('SELECT * FROM audit_events ORDER BY id');
      expect(back.slice(0, 3)).toEqual(rows);
      expect(back).toHaveLength(4);
      const [{ kind }] = await ds.query(
        `SELECT relkind AS kind FROM pg_class WHERE oid = 'audit_events'::regclass`,
      );
      expect(kind).toBe('r');
    } finally {
      await ds.destroy();
      await asAdmin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    }
  });
});

describe('the entities', () => {
  it('that the domain modules declare (forFeature) are exactly the list the migrations are checked against', async () => {
    const { startTestApp } = await import('../../support/app.js');
    const app = await startTestApp();
    try {
      const loaded = app.custos.runtime.dataSource.entityMetadatas.map(
        (m) => m.target as (typeof entities)[number],
      );
      expect(new Set(loaded)).toEqual(new Set(entities));
      expect(loaded).toHaveLength(entities.length);
    } finally {
      await app.close();
    }
  });
});
