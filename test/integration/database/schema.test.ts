import { createDataSource, runMigrations } from '../../../src/database/data-source.js';
import { entities } from '../../../src/entities.js';
import { databaseUrlFor, workerDatabaseName } from '../../support/env.js';

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
