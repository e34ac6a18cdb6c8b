/** Assembles and starts Custos: used by main.ts, the tests and the benchmarks alike. */
import { randomUUID } from 'node:crypto';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type { Logger } from 'pino';
import { AppModule, type Runtime } from './app.module.js';
import { BrokerService } from './broker/broker.service.js';
import { ProviderRevocationService } from './connections/provider-revocation.service.js';
import { ConnectSessionsService } from './connect/connect-sessions.service.js';
import { describeConfig, loadConfig, type Config } from './config/config.js';
import { answerFrameworkError, CustosExceptionFilter } from './http/exception.filter.js';
import { accessLogger, createLogger, PinoNestLogger, requestContext } from './common/logger.js';
import { fastifyTrustProxy } from './common/rate-limit.js';
import { installInputGuards } from './common/validation.js';
import { ConnectionsService } from './connections/connections.service.js';
import { TokenRefresher } from './connections/token-refresher.service.js';
import { KeyBackendService } from './crypto/key-backend.service.js';
import { loadRootKeyring } from './crypto/root-keyring-file.js';
import { auditTrailProtection, createDataSource, runMigrations } from './database/data-source.js';
import { entities } from './entities.js';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from './database/embedded-postgres.js';
import { AdminKeysService } from './identity/admin-keys.service.js';
import { BullMqJobRunner, InProcessJobRunner, type JobRunner } from './jobs/job-runner.js';
import { RefreshJobs } from './jobs/refresh-jobs.js';
import { RefreshQueue } from './jobs/refresh-queue.js';
import { ProviderCatalog } from './providers/provider-catalog.js';

export interface StartOptions {
  env?: Record<string, string | undefined>;
  config?: Config;
  logger?: Logger;
  /** Listen on HOST:PORT (default true); tests may use fastify inject instead. */
  listen?: boolean;
}

export interface Custos {
  app: NestFastifyApplication;
  runtime: Runtime;
  /** The BullMQ refresh-ahead queue, when Redis is configured. */
  refreshQueue?: RefreshQueue;
  url: string;
  close(): Promise<void>;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export async function startCustos(opts: StartOptions = {}): Promise<Custos> {
  const config = opts.config ?? loadConfig(opts.env);
  const logger = opts.logger ?? createLogger(config.logLevel);
  logger.debug({ config: describeConfig(config) }, 'configuration');

  // Before anything starts: a bad keyring (or key file) must not cost an embedded PostgreSQL start.
  const keyring = loadRootKeyring(config, logger);
  let embedded: EmbeddedPostgresHandle | undefined;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    embedded = await startEmbeddedPostgres(config.dataDir, logger);
    databaseUrl = embedded.databaseUrl;
  }
  const dataSource = createDataSource(databaseUrl, entities, config.dbPoolSize, {
    connectTimeoutMs: config.dbConnectTimeoutMs,
    statementTimeoutMs: config.dbStatementTimeoutMs,
  });
  const cleanups: (() => Promise<unknown>)[] = [];
  try {
    await dataSource.initialize();
    cleanups.push(() => dataSource.destroy());
    if (config.migrationsRun) {
      const ran = await runMigrations(dataSource, { ownerUrl: config.migrationDatabaseUrl });
      if (ran.length > 0) logger.info({ migrations: ran }, 'migrations applied');
    }
    if (!embedded) {
      const protection = await auditTrailProtection(dataSource);
      if (protection !== 'enforced') {
        logger.warn(
          { databaseRole: protection },
          `the application's database role ${protection === 'owner' ? 'owns audit_events' : 'is a superuser'} and could alter the audit trail: run migrations as the schema owner (CUSTOS_MIGRATION_DATABASE_URL) and the application as a role of its own`,
        );
      }
    }
    const catalog = await ProviderCatalog.load();
    const worker = config.role !== 'api';
    // The api role runs no background jobs: its runner stays empty.
    const jobs: JobRunner =
      config.redisUrl && worker
        ? new BullMqJobRunner(config.redisUrl, logger, 'maintenance', config.queuePrefix)
        : new InProcessJobRunner(logger);
    const runtime: Runtime = { config, logger, dataSource, keyring, catalog, jobs };

    const adapter = new FastifyAdapter({
      bodyLimit: config.bodyLimitBytes,
      // User ids are up to 255 characters, percent-encoded in the path.
      routerOptions: { maxParamLength: 2048 },
      // Malformed path parameters, which the router refuses itself, answered in the stable shape too.
      frameworkErrors: answerFrameworkError,
      // Which proxies may name the client (X-Forwarded-For): rate limits and audit use req.ip.
      trustProxy: fastifyTrustProxy(config.trustProxy),
      genReqId: (req: { headers: Record<string, string | string[] | undefined> }) => {
        const given = req.headers['x-request-id'];
        return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
      },
    });
    const app = await NestFactory.create<NestFastifyApplication>(AppModule.register(runtime), adapter, {
      logger: new PinoNestLogger(logger),
    });
    cleanups.unshift(() => app.close());
    const fastify = app.getHttpAdapter().getInstance();
    fastify.addHook('onRequest', (req, reply, done) => {
      requestContext.enterWith({ requestId: req.id });
      void reply.header('x-request-id', req.id);
      void reply.header('x-content-type-options', 'nosniff');
      done();
    });
    installInputGuards(fastify);
    const access = accessLogger(logger);
    fastify.addHook('onResponse', (req, reply, done) => {
      access.info(
        {
          requestId: req.id,
          method: req.method,
          route: req.routeOptions?.url,
          status: reply.statusCode,
          ms: Math.round(reply.elapsedTime),
        },
        'request',
      );
      done();
    });
    app.useGlobalFilters(new CustosExceptionFilter(logger));

    if (config.role !== 'worker') setupApiDocs(app);

    await app.init();
    const admin = app.get(AdminKeysService);
    const boot = await admin.ensureBootstrapKey(config.bootstrapAdminKey, config.dataDir);
    if (boot.generatedAt) {
      logger.warn(
        { file: boot.generatedAt },
        `the first platform admin key was written to ${boot.generatedAt}`,
      );
    }

    const refresher = app.get(TokenRefresher);
    let refreshQueue: RefreshQueue | undefined;
    if (config.redisUrl) {
      const queue = new RefreshQueue({
        redisUrl: config.redisUrl,
        prefix: config.queuePrefix,
        log: logger,
        concurrency: config.refreshConcurrency,
        lockMs: config.refreshLeaseSeconds * 1000,
      });
      refreshQueue = queue;
      cleanups.unshift(() => queue.stop());
      // The api role only adds jobs (the next due time after a refresh or an import); workers run them.
      await queue.start(
        worker ? { run: (d) => refresher.refreshDue(d.t, d.c), limiter: refresher.limiter } : undefined,
      );
      app
        .get(RefreshJobs)
        .attach(queue, (err) =>
          logger.warn({ err: { name: err.name, message: err.message } }, 'could not queue a refresh'),
        );
    }
    if (worker) registerWorkerJobs(app, jobs, config, logger, refreshQueue);
    await jobs.start();
    cleanups.splice(1, 0, () => jobs.stop());

    let url = config.publicUrl;
    if (opts.listen !== false) {
      await app.listen({ port: config.port, host: config.host });
      const addr = fastify.server.address();
      const port = addr && typeof addr === 'object' ? addr.port : config.port;
      const host = config.host.includes(':') ? `[${config.host}]` : config.host;
      url = `http://${host}:${port}`;
      logger.info(
        { url, role: config.role, jobs: jobs.kind, database: embedded ? 'embedded' : 'external' },
        'Custos is listening',
      );
    } else {
      await fastify.ready();
    }
    if (embedded) cleanups.push(() => embedded.stop());
    let closed = false;
    return {
      app,
      runtime,
      refreshQueue,
      url,
      close: async () => {
        if (closed) return;
        closed = true;
        for (const c of cleanups) await c().catch(() => undefined);
      },
    };
  } catch (err) {
    for (const c of cleanups) await c().catch(() => undefined);
    await embedded?.stop();
    throw err;
  }
}

/** The OpenAPI document at /openapi.json and its viewer at /docs (api role). */
function setupApiDocs(app: NestFastifyApplication): void {
  const doc = SwaggerModule.createDocument(
    app,
    new DocumentBuilder()
      .setTitle('Custos')
      .setDescription('Credential vault and connector control plane')
      .setVersion('0.1.0')
      .addBearerAuth()
      .build(),
  );
  SwaggerModule.setup('docs', app, doc, { jsonDocumentUrl: 'openapi.json' });
}

/** The background jobs of the worker role (and of `all`). */
function registerWorkerJobs(
  app: NestFastifyApplication,
  jobs: JobRunner,
  config: Config,
  logger: Logger,
  refreshQueue: RefreshQueue | undefined,
): void {
  const connections = app.get(ConnectionsService);
  jobs.register('connections.mark-expired', 60_000, async () => {
    const n = await connections.markExpired();
    if (n > 0) logger.info({ count: n }, 'connections marked expired');
  });
  const keyBackends = app.get(KeyBackendService);
  // The backstop for data-key migrations: resumes any that a crash or an outage interrupted.
  jobs.register('key-backends.migrate', 30_000, async () => {
    for (const tenantId of await keyBackends.tenantsMigrating()) {
      const { migrated, remaining } = await keyBackends.migrate(tenantId);
      logger.info({ tenantId, migrated, remaining }, 'data keys migrated to the tenant’s key backend');
    }
  });
  const refresher = app.get(TokenRefresher);
  const sweepMs = config.refreshSweepSeconds * 1000;
  if (refreshQueue) {
    // Refresh ahead with Redis: every worker re-creates, from PostgreSQL, any job due soon that is missing.
    refreshQueue.startSweeper(() => refresher.dueWithin(Math.max(60_000, 3 * sweepMs)), sweepMs);
  } else {
    // Without Redis: the worker refreshes due tokens itself.
    jobs.register('connections.refresh-due', sweepMs, async () => {
      const n = await refresher.sweep();
      if (n > 0) logger.info({ count: n }, 'tokens refreshed ahead of expiry');
    });
  }
  const revocations = app.get(ProviderRevocationService);
  jobs.register('connections.revoke-at-provider', 60_000, async () => {
    const n = await revocations.processDue();
    if (n > 0) logger.info({ count: n }, 'tokens revoked at providers');
  });
  const broker = app.get(BrokerService);
  jobs.register('broker.prune-used-assertions', 10 * 60_000, async () => {
    await broker.pruneUsedAssertions();
  });
  const sessions = app.get(ConnectSessionsService);
  jobs.register('connect.prune-expired-sessions', 10 * 60_000, async () => {
    const n = await sessions.pruneExpired();
    if (n > 0) logger.info({ count: n }, 'expired connect sessions deleted');
  });
}
