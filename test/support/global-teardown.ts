import pg from 'pg';
import { adminDatabaseUrl, WORKER_DB_COUNT } from './global-setup';

export default async function globalTeardown(): Promise<void> {
  const run = process.env.CUSTOS_TEST_DB_PREFIX;
  if (!run) return;
  const client = new pg.Client({ connectionString: adminDatabaseUrl });
  await client.connect();
  try {
    for (let i = 1; i <= WORKER_DB_COUNT; i++)
      await client.query(`DROP DATABASE IF EXISTS "${run}${i}" WITH (FORCE)`);
  } finally {
    await client.end();
  }
}
