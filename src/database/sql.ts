import type { Pool, QueryResultRow } from 'pg';
import type { DataSource } from 'typeorm';

/** TypeORM's postgres driver answers UPDATE/DELETE ... RETURNING with [rows, rowCount]; this evens it out. */
export function returned<T>(result: unknown): T[] {
  if (
    Array.isArray(result) &&
    result.length === 2 &&
    Array.isArray(result[0]) &&
    typeof result[1] === 'number'
  ) {
    return result[0] as T[];
  }
  return result as T[];
}

/**
 * Runs a hot-path statement as a named prepared statement on the pool underneath TypeORM: PostgreSQL
 * parses and plans it once per connection instead of on every request, and TypeORM's per-query runner is
 * skipped. Only for fixed statement texts (the name must identify the text).
 */
export async function preparedQuery<T>(
  ds: DataSource,
  name: string,
  text: string,
  values: unknown[],
): Promise<T[]> {
  const pool = (ds.driver as unknown as { master?: Pool }).master;
  if (!pool) return ds.query<T[]>(text, values);
  const result = await pool.query<T & QueryResultRow>({ name, text, values });
  return result.rows;
}
