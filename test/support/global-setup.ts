import pg from 'pg';
import { adminDatabaseUrl, WORKER_DB_COUNT } from './env';

/** Fresh worker databases for every run; Custos migrates them itself when a test starts it. */
export default async function globalSetup(): Promise<void> {
  const client = new pg.Client({ connectionString: adminDatabaseUrl });
  await client.connect();
  try {
    for (let i = 1; i <= WORKER_DB_COUNT; i++) {
      await client.query(`DROP DATABASE IF EXISTS custos_test_${i} WITH (FORCE)`);
      await client.query(`CREATE DATABASE custos_test_${i}`);
    }
  } finally {
    await client.end();
  }
}
