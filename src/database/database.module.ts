/**
 * The database, provided by @nestjs/typeorm: TypeOrmModule.forRootAsync builds the one DataSource of the app
 * with createDataSource (the definition the migration command and the tests share), on the embedded
 * PostgreSQL when DATABASE_URL is not set; each domain module declares its entities with forFeature
 * (autoLoadEntities). Migrations run, and the audit trail's protection is checked, before the DataSource is
 * handed to anyone. Closing the app destroys the DataSource, which stops the embedded server after it.
 */
import { type DynamicModule, Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { Logger } from 'pino';
import type { DataSource, DataSourceOptions } from 'typeorm';
import type { Config } from '../config/config.js';
import { auditTrailProtection, createDataSource, runMigrations } from './data-source.js';
import { failpoint } from '../common/failpoint.js';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from './embedded-postgres.js';
import { DatabasePoolMetrics } from './pool-metrics.js';

@Module({})
export class DatabaseModule {
  /**
   * `opened` receives the DataSource once it is open, so that a start-up that fails later (while Nest still
   * builds other providers, before there is an app to close) can still close it.
   */
  static forRoot(config: Config, logger: Logger, opened: DataSource[] = []): DynamicModule {
    return {
      module: DatabaseModule,
      imports: [
        TypeOrmModule.forRootAsync({
          useFactory: () => ({
            type: 'postgres',
            entities: [],
            autoLoadEntities: true,
            toRetry: () => false,
          }),
          dataSourceFactory: async (options?: DataSourceOptions) => {
            const ds = await openDatabase(config, logger, options?.entities ?? []);
            opened.push(ds);
            return ds;
          },
        }),
      ],
      providers: [DatabasePoolMetrics],
    };
  }
}

/** Starts the embedded server if needed, opens the data source, migrates, and checks the audit trail's owner. */
export async function openDatabase(
  config: Config,
  logger: Logger,
  entities: NonNullable<DataSourceOptions['entities']>,
): Promise<DataSource> {
  let embedded: EmbeddedPostgresHandle | undefined;
  let url = config.databaseUrl;
  if (!url) {
    embedded = await startEmbeddedPostgres(config.dataDir, logger);
    url = embedded.databaseUrl;
    await failpoint(config.failpoints, logger, 'start.after-embedded-postgres');
  }
  const ds = createDataSource(
    url,
    entities,
    config.dbPoolSize,
    { connectTimeoutMs: config.dbConnectTimeoutMs, statementTimeoutMs: config.dbStatementTimeoutMs },
    () => embedded?.stop() ?? Promise.resolve(),
  );
  try {
    await ds.initialize();
    if (config.migrationsRun) {
      const ran = await runMigrations(ds, { ownerUrl: config.migrationDatabaseUrl });
      if (ran.length > 0) logger.info({ migrations: ran }, 'migrations applied');
    }
    if (!embedded) {
      const protection = await auditTrailProtection(ds);
      if (protection !== 'enforced') {
        logger.warn(
          { databaseRole: protection },
          `the application's database role ${protection === 'owner' ? 'owns audit_events' : 'is a superuser'} and could alter the audit trail: run migrations as the schema owner (CUSTOS_MIGRATION_DATABASE_URL) and the application as a role of its own`,
        );
      }
    }
    return ds;
  } catch (err) {
    if (ds.isInitialized) await ds.destroy().catch(() => undefined);
    else await embedded?.stop();
    throw err;
  }
}
