import type { Pool, PoolClient, QueryResultRow } from 'pg';
import type { DataSource } from 'typeorm';
import { isDataError } from './statement-batcher.js';

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

/** The pg pool underneath TypeORM (undefined before initialize()). */
export function poolOf(ds: DataSource): Pool | undefined {
  return (ds.driver as unknown as { master?: Pool }).master;
}

/**
 * Runs a hot-path statement as a named prepared statement on the pool underneath TypeORM: PostgreSQL
 * parses and plans it once per connection instead of on every request, and TypeORM's per-query runner is
 * skipped. Only for fixed statement texts (the name must identify the text).
 *
 * With a `signal`, the caller may stop waiting: on abort the statement's connection is dropped from the pool
 * (its socket destroyed), since a connection that did not answer in time is not one to hand to the next request.
 */
export async function preparedQuery<T>(
  ds: DataSource,
  name: string,
  text: string,
  values: unknown[],
  signal?: AbortSignal,
): Promise<T[]> {
  const pool = poolOf(ds);
  if (!pool) return ds.query<T[]>(text, values);
  if (!signal) {
    const result = await pool.query<T & QueryResultRow>({ name, text, values });
    return result.rows;
  }
  signal.throwIfAborted();
  const client: PoolClient = await pool.connect();
  let released = false;
  function release(err?: Error) {
    if (released) return;
    released = true;
    client.removeListener('error', release);
    client.release(err);
  }
  // A checked-out client reports a lost connection (a server shutdown, a reset) as an 'error' event, which
  // nobody else listens to while it is ours: unheard, it would take the process down.
  client.on('error', release);
  const abandon = () => release(new Error('statement abandoned: no answer in time'));
  if (signal.aborted) {
    // Aborted while waiting for a connection: the connection itself is fine.
    release();
    signal.throwIfAborted();
  }
  signal.addEventListener('abort', abandon, { once: true });
  try {
    const result = await client.query<T & QueryResultRow>({ name, text, values });
    release();
    return result.rows;
  } catch (err) {
    // The database refused the values: the connection is healthy. Anything else: don't reuse it.
    release(isDataError(err) ? undefined : (err as Error));
    throw err;
  } finally {
    signal.removeEventListener('abort', abandon);
  }
}
