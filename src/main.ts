/** The api+worker entry point: `npm start`. */
import 'reflect-metadata';
import { startCustos } from './bootstrap.js';
import { ConfigError, loadConfig } from './config/config.js';
import { createLogger, logDestination, type LogFormat } from './common/logger.js';

/** The configured log format once known, so that a failed start is reported in it too. */
let logFormat: LogFormat = 'json';

/** A configuration mistake is the operator's to fix: one line naming the variable, no stack trace. */
function exitOnConfigError(err: ConfigError): never {
  process.stderr.write(`custos: configuration error: ${err.message.replace(/[\r\n]+/g, ' ')}\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  // Everything is validated here, before any server (embedded PostgreSQL included) starts.
  const config = loadConfig();
  logFormat = config.logFormat;
  const logger = createLogger(config.logLevel, logDestination(logFormat));
  /** Set once start-up is done: until then a signal exits at once. */
  const started: { custos?: Awaited<ReturnType<typeof startCustos>> } = {};
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    const custos = started.custos;
    if (!custos) {
      // Still starting: exit now. process.exit runs the exit hooks, so an embedded PostgreSQL already started
      // is told to stop too (the default action of the signal would skip them and leave it running).
      logger.warn({ signal }, 'signal during start-up: exiting');
      process.exit(signal === 'SIGINT' ? 130 : 143);
    }
    if (stopping) {
      // A second signal while stopping: the operator does not want to wait. Exit now; the embedded PostgreSQL
      // (if any) is told to stop as this process exits, and the data folder's lock goes with it.
      logger.warn({ signal }, 'second signal while stopping: exiting at once');
      process.exit(signal === 'SIGINT' ? 130 : 143);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    custos.close().then(
      () => {
        logger.info({ signal }, 'Custos stopped');
        process.exit(0);
      },
      (err: unknown) => {
        const e = err as Error;
        logger.error({ signal, err: { name: e?.name, message: e?.message } }, 'Custos stopped with an error');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  started.custos = await startCustos({ config, logger });
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) exitOnConfigError(err);
  const e = err as Error;
  createLogger('error', logDestination(logFormat)).fatal(
    { err: { name: e?.name, message: e?.message, stack: e?.stack } },
    'Custos failed to start',
  );
  process.exit(1);
});
