/**
 * The services of a running Custos, for the `custos` CLI: the same application (modules, services, database,
 * key backends) that `npm start` assembles, from the same CUSTOS_* configuration, without HTTP and without what
 * runs in the background (no first admin key, no jobs, no sealer). Migrations are not run implicitly (that is
 * `custos migrate`). Logs go to stderr, so that stdout carries only the command's answer.
 */
import { NestFactory } from '@nestjs/core';
import type { INestApplicationContext } from '@nestjs/common';
import pino, { type Logger } from 'pino';
import type { DataSource } from 'typeorm';
import { AppModule, type Runtime } from '../app.module.js';
import { createLogger, PinoNestLogger } from '../common/logger.js';
import { loadConfig, type Config } from '../config/config.js';
import { loadRootKeyring } from '../crypto/root-keyring-file.js';

export interface CliContext {
  app: INestApplicationContext;
  config: Config;
  logger: Logger;
  close(): Promise<void>;
}

/** Opens the services; the caller closes them (which stops an embedded PostgreSQL it started). */
export async function openCliContext(env?: Record<string, string | undefined>): Promise<CliContext> {
  const loaded = loadConfig(env);
  // The API's services, whatever role the environment names; no migrations behind the operator's back.
  const config: Config = { ...loaded, role: 'api', migrationsRun: false };
  // Errors only unless CUSTOS_LOG_LEVEL asks for more than the default: what a server says at start (a role
  // that owns the audit trail…) is for `custos doctor` to report, not for every command to repeat.
  const logger = createLogger(config.logLevel === 'info' ? 'error' : config.logLevel, pino.destination(2));
  const keyring = loadRootKeyring(config, logger);
  const base: Runtime = { config, logger, keyring };
  const opened: DataSource[] = [];
  try {
    const app = await NestFactory.createApplicationContext(
      AppModule.register(base, opened, { background: false }),
      { logger: new PinoNestLogger(logger), abortOnError: false },
    );
    let closed = false;
    return {
      app,
      config,
      logger,
      close: async () => {
        if (closed) return;
        closed = true;
        await app.close();
      },
    };
  } catch (err) {
    for (const ds of opened) if (ds.isInitialized) await ds.destroy().catch(() => undefined);
    throw err;
  }
}
