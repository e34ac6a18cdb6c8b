/** Runs the embedded PostgreSQL supervisor in its own process, so a test can kill -9 it. */
import { createLogger } from '../../src/common/logger.js';
import { startEmbeddedPostgres } from '../../src/database/embedded-postgres.js';

const handle = await startEmbeddedPostgres(process.argv[2], createLogger('warn', process.stderr));
process.stdout.write(JSON.stringify({ url: handle.databaseUrl, pgdata: handle.pgdata }) + '\n');
process.on('SIGTERM', () => void handle.stop().then(() => process.exit(0)));
setInterval(() => undefined, 60_000);
