/**
 * The one data-source definition, shared by the app, the migration command and the tests. The entities are
 * given by the caller (src/entities.ts lists them), so this folder imports no domain.
 */
import pg from 'pg';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { migrations } from './migrations.js';
import { poolOf } from './sql.js';

/** Time limits on every database connection (CUSTOS_DB_CONNECT_TIMEOUT_MS, CUSTOS_DB_STATEMENT_TIMEOUT_MS). */
export interface DatabaseLimits {
  /** Opening a connection, or waiting for a free one when the pool is busy. */
  connectTimeoutMs: number;
  /** PostgreSQL cancels a statement that runs longer (statement_timeout); 0: no limit. */
  statementTimeoutMs: number;
}

export const defaultDatabaseLimits: DatabaseLimits = { connectTimeoutMs: 5000, statementTimeoutMs: 15_000 };

/**
 * How long after statement_timeout the client still waits for an answer. PostgreSQL would have cancelled the
 * statement and said so by then; silence past it means the connection is dead (a partition, a lost NAT entry),
 * which TCP alone can take a quarter of an hour to notice while bytes are unacknowledged.
 */
const SILENCE_MARGIN_MS = 2000;
/**
 * TCP keepalive on every pool socket, so that a peer that vanished while a connection sat idle in the pool is
 * noticed by the kernel rather than by the next request.
 */
const KEEPALIVE_DELAY_MS = 10_000;
/**
 * A transaction left idle this long is ended by PostgreSQL: when its client vanished in a partition, its row
 * locks are otherwise held until the server's own keepalive notices (two hours by default). Generous, because
 * a few transactions rightly wait on a key backend between statements.
 */
const IDLE_IN_TRANSACTION_MS = 120_000;

/** pg keeps the statement a client is waiting on here; still set when the client is released, it never got its answer. */
interface ClientInternals {
  _getActiveQuery?: () => unknown;
}

/**
 * Adds to TypeORM's DataSource what a partition needs: a connection whose statement timed out is closed instead
 * of going back to the pool, and closing the data source cannot hang on connections that no longer answer.
 */
class CustosDataSource extends DataSource {
  constructor(
    options: DataSourceOptions,
    private readonly clients: Set<pg.Client>,
    private readonly closeGraceMs: number,
    private readonly afterDestroy?: () => Promise<unknown>,
  ) {
    super(options);
  }

  override async initialize(): Promise<this> {
    await super.initialize();
    // pg-pool drops a client released with an error, but TypeORM releases without one after a failed
    // statement, so a client whose statement hit query_timeout (still waiting on a silent socket) would be
    // handed to the next caller and hang it too.
    poolOf(this)?.on('release', (err, client) => {
      if (err) return;
      if ((client as unknown as ClientInternals)._getActiveQuery?.()) {
        // end() marks the client as ending (so the pool removes it) and destroys its socket.
        client.end().catch(() => undefined);
      }
    });
    return this;
  }

  override async destroy(): Promise<void> {
    // A graceful close says goodbye and waits for the server's; over a dead connection that never comes.
    const force = setTimeout(() => {
      for (const c of this.clients) c.connection.stream.destroy();
    }, this.closeGraceMs);
    try {
      await super.destroy();
    } finally {
      clearTimeout(force);
      await this.afterDestroy?.();
    }
  }
}

export function createDataSource(
  url: string,
  entities: NonNullable<DataSourceOptions['entities']>,
  poolSize = 10,
  limits: Partial<DatabaseLimits> = {},
  /** Runs once the data source is closed: stops the embedded server it was the client of. */
  afterDestroy?: () => Promise<unknown>,
): DataSource {
  const { connectTimeoutMs, statementTimeoutMs } = { ...defaultDatabaseLimits, ...limits };
  const clients = new Set<pg.Client>();
  // Every client the pool opens, so that destroy() can close the ones that no longer answer.
  class TrackedClient extends pg.Client {
    constructor(config?: pg.ClientConfig) {
      super(config);
      clients.add(this);
      this.once('end', () => clients.delete(this));
    }
  }
  return new CustosDataSource(
    {
      type: 'postgres',
      url,
      entities,
      migrations,
      synchronize: false,
      migrationsRun: false,
      migrationsTransactionMode: 'each',
      poolSize,
      extra: {
        Client: TrackedClient,
        application_name: 'custos',
        connectionTimeoutMillis: connectTimeoutMs,
        keepAlive: true,
        keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS,
        ...(statementTimeoutMs > 0 && {
          statement_timeout: statementTimeoutMs,
          query_timeout: statementTimeoutMs + SILENCE_MARGIN_MS,
        }),
        idle_in_transaction_session_timeout: IDLE_IN_TRANSACTION_MS,
      },
      logging: false,
    },
    clients,
    connectTimeoutMs,
    afterDestroy,
  );
}

export interface MigrationOptions {
  /**
   * The schema owner's URL (CUSTOS_MIGRATION_DATABASE_URL). Migrations run as that role, and the data source's
   * own role (the application's) is then granted only what it needs.
   */
  ownerUrl?: string;
}

/**
 * Runs pending migrations under an advisory lock, so replicas starting together don't race. They run on a
 * connection of their own without statement time limits: building an index may rightly take longer than any
 * request, and waiting for the lock lasts as long as another replica's migrations. With an owner URL, they run
 * as the owner, and the application's role is granted its privileges under the same lock.
 */
export async function runMigrations(ds: DataSource, opts: MigrationOptions = {}): Promise<string[]> {
  // Two connections: one holds the lock, the other runs the migrations.
  const mds = await maintenanceDataSource(ds, opts.ownerUrl, 2);
  try {
    const runner = mds.createQueryRunner();
    await runner.connect();
    try {
      await runner.query('select pg_advisory_lock(727274001)');
      const done = await mds.runMigrations({ transaction: 'each' });
      // The audit trail's monthly partitions: this month's and the next three (migration AuditPartitions).
      await mds.query('SELECT custos_audit_ensure_partitions(3)');
      if (opts.ownerUrl) {
        const [{ role }] = await ds.query<{ role: string }[]>('SELECT current_user AS role');
        await grantApplicationRole(mds, role);
      }
      return done.map((m) => m.name);
    } finally {
      await runner.query('select pg_advisory_unlock(727274001)').catch(() => undefined);
      await runner.release();
    }
  } finally {
    await mds.destroy();
  }
}

/**
 * An initialised data source like `ds` but without statement time limits, as `ownerUrl`'s role when given:
 * for migrations and the audit trail's partition maintenance, which may rightly take longer than any request.
 * The caller destroys it.
 */
export async function maintenanceDataSource(
  ds: DataSource,
  ownerUrl: string | undefined,
  poolSize: number,
): Promise<DataSource> {
  const unlimited: Record<string, unknown> = {
    ...(ds.options as { extra?: Record<string, unknown> }).extra,
  };
  delete unlimited.statement_timeout;
  delete unlimited.query_timeout;
  delete unlimited.idle_in_transaction_session_timeout;
  delete unlimited.Client;
  const mds = new DataSource({
    ...ds.options,
    ...(ownerUrl ? { url: ownerUrl } : {}),
    poolSize,
    extra: unlimited,
  } as DataSourceOptions);
  await mds.initialize();
  return mds;
}

/**
 * What the application's role may do, granted by the schema owner: read and write the tables it works with,
 * but only INSERT and SELECT on the audit trail (events, chain links, checkpoints, truncation records) (no UPDATE, DELETE or TRUNCATE, and, not owning the table, no
 * way to disable its append-only triggers), and only read the migrations table. Idempotent; re-run after every
 * migration so that new tables are covered.
 */
export async function grantApplicationRole(owner: DataSource, role: string): Promise<void> {
  const [{ me }] = await owner.query<{ me: string }[]>('SELECT current_user AS me');
  if (me === role) return;
  const r = quoteIdentifier(role);
  const [{ schema }] = await owner.query<{ schema: string }[]>('SELECT current_schema() AS schema');
  const sc = quoteIdentifier(schema);
  for (const statement of [
    `GRANT USAGE ON SCHEMA ${sc} TO ${r}`,
    `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${sc} TO ${r}`,
    `GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA ${sc} TO ${r}`,
    `REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ${sc}.audit_events FROM ${r}`,
    // The sealed trail's links and signed checkpoints, like the events they seal.
    `REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ${sc}.audit_chain FROM ${r}`,
    `REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ${sc}.audit_checkpoints FROM ${r}`,
    `REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ${sc}.audit_truncations FROM ${r}`,
    `REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ${sc}.migrations FROM ${r}`,
  ]) {
    await owner.query(statement);
  }
  // audit_events' monthly partitions: the application writes and reads through audit_events only (privileges
  // are checked on the table a statement names), so it needs nothing on the partitions themselves.
  const partitions = await owner.query<{ name: string }[]>(
    `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = to_regclass('audit_events')`,
  );
  for (const { name } of partitions) {
    await owner.query(`REVOKE ALL ON ${sc}.${quoteIdentifier(name)} FROM ${r}`);
  }
}

/**
 * Whether the append-only audit trail is protected from the application's own role: `enforced` when that role
 * neither owns audit_events nor is a superuser (it cannot disable the triggers or change rows), otherwise what
 * undermines it.
 */
export async function auditTrailProtection(ds: DataSource): Promise<'enforced' | 'owner' | 'superuser'> {
  const [row] = await ds.query<{ superuser: boolean; owner: boolean }[]>(
    `SELECT r.rolsuper AS superuser, pg_has_role(current_user, c.relowner, 'USAGE') AS owner
       FROM pg_roles r, pg_class c
      WHERE r.rolname = current_user AND c.oid = to_regclass('audit_events')`,
  );
  if (!row) return 'owner';
  if (row.superuser) return 'superuser';
  return row.owner ? 'owner' : 'enforced';
}

function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
