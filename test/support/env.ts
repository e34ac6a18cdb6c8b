/** Where the tests find PostgreSQL and Redis: TEST_DATABASE_URL / TEST_REDIS_URL, or this machine's defaults. */
import pg from 'pg';
import { adminDatabaseUrl, WORKER_DB_COUNT } from './global-setup.js';

export { adminDatabaseUrl };
export const testRedisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export function databaseUrlFor(dbName: string): string {
  const u = new URL(adminDatabaseUrl);
  u.pathname = `/${dbName}`;
  return u.toString();
}

/** One database per Jest worker, so files running in parallel never share tables. */
export function workerDatabaseName(): string {
  const id = Number(process.env.JEST_WORKER_ID ?? '1');
  const prefix = process.env.CUSTOS_TEST_DB_PREFIX;
  if (!prefix)
    throw new Error(
      'CUSTOS_TEST_DB_PREFIX is unset: run the tests through Jest (globalSetup creates the databases)',
    );
  return `${prefix}${((id - 1) % WORKER_DB_COUNT) + 1}`;
}

/** Runs one statement on the server's admin database (creating or dropping roles and databases). */
export async function asAdmin(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminDatabaseUrl });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}
