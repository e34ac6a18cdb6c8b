/** The `custos` command line: `node dist/src/cli.js migrate` (npm run migration:run). */
import 'reflect-metadata';
import { ConfigError, loadConfig } from './config/config.js';
import { createLogger } from './common/logger.js';
import { createDataSource, runMigrations } from './database/data-source.js';
import { entities } from './entities.js';
import { startEmbeddedPostgres } from './database/embedded-postgres.js';

async function migrate(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.logLevel);
  const embedded = config.databaseUrl ? undefined : await startEmbeddedPostgres(config.dataDir, log);
  const ds = createDataSource(config.databaseUrl ?? embedded!.databaseUrl, entities, 2);
  try {
    await ds.initialize();
    const ran = await runMigrations(ds, { ownerUrl: config.migrationDatabaseUrl });
    log.info({ migrations: ran }, ran.length ? 'migrations applied' : 'database is up to date');
  } finally {
    await ds.destroy().catch(() => undefined);
    await embedded?.stop();
  }
}

const [command] = process.argv.slice(2);
const commands: Record<string, () => Promise<void>> = { migrate };
const run = command ? commands[command] : undefined;
if (!run) {
  process.stderr.write('usage: custos migrate\n');
  process.exit(2);
}
run().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    // Named variable, never its value; checked before the embedded PostgreSQL (if any) starts.
    process.stderr.write(`custos: configuration error: ${err.message.replace(/[\r\n]+/g, ' ')}\n`);
    process.exit(2);
  }
  process.stderr.write(`custos ${command}: ${(err as Error).message}\n`);
  process.exit(1);
});
