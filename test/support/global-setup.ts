import pg from 'pg';

// Defined here rather than imported: Jest resolves globalSetup's imports without moduleNameMapper.
export const adminDatabaseUrl =
  process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const WORKER_DB_COUNT = 4;
const PREFIX = 'custos_test_';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Fresh databases for this run (custos_test_<pid>_<n>), so parallel Jest runs never share or drop each
 * other's; databases left by runs whose process is gone are dropped. Custos migrates them when started.
 */
export default async function globalSetup(): Promise<void> {
  const run = `${PREFIX}${process.pid}_`;
  process.env.CUSTOS_TEST_DB_PREFIX = run;
  process.env.CUSTOS_TEST_DB_COUNT = String(WORKER_DB_COUNT);
  process.env.CUSTOS_TEST_ADMIN_DB_URL = adminDatabaseUrl;
  const client = new pg.Client({ connectionString: adminDatabaseUrl });
  await client.connect();
  try {
    const existing = await client.query<{ datname: string }>(
      `SELECT datname FROM pg_database WHERE datname LIKE 'custos\\_test\\_%'`,
    );
    for (const { datname } of existing.rows) {
      const pid = Number(/^custos_test_(\d+)_\d+$/.exec(datname)?.[1]);
      if (!pid || !alive(pid) || datname.startsWith(run)) {
        await client.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`);
      }
    }
    for (let i = 1; i <= WORKER_DB_COUNT; i++) await client.query(`CREATE DATABASE "${run}${i}"`);
  } finally {
    await client.end();
  }
}
