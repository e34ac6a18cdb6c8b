import pg from 'pg';

/** Drops this run's databases. Reads only what globalSetup left in the environment (no imports: see there). */
export default async function globalTeardown(): Promise<void> {
  const run = process.env.CUSTOS_TEST_DB_PREFIX;
  const count = Number(process.env.CUSTOS_TEST_DB_COUNT ?? 0);
  if (!run || !process.env.CUSTOS_TEST_ADMIN_DB_URL) return;
  const client = new pg.Client({ connectionString: process.env.CUSTOS_TEST_ADMIN_DB_URL });
  await client.connect();
  try {
    for (let i = 1; i <= count; i++) await client.query(`DROP DATABASE IF EXISTS "${run}${i}" WITH (FORCE)`);
  } finally {
    await client.end();
  }
}
