import pg from 'pg';

// Defined here rather than imported: Jest resolves globalSetup's imports without moduleNameMapper.
export const adminDatabaseUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const WORKER_DB_COUNT = 4;

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
