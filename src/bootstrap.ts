/** Assembles and starts Custos: used by main.ts, the tests and the benchmarks alike. */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { SwaggerModule } from '@nestjs/swagger';
import type { Logger } from 'pino';
import { DataSource } from 'typeorm';
import { AppModule, type Runtime } from './app.module.js';
import { Background } from './background.js';
import { describeConfig, loadConfig, type Config } from './config/config.js';
import { answerFrameworkError } from './http/exception.filter.js';
import { accessLogger, createLogger, PinoNestLogger, requestContext } from './common/logger.js';
import { installHttpMetrics } from './common/http-metrics.js';
import { openApiFrame } from './common/openapi.js';
import { fastifyTrustProxy } from './common/rate-limit.js';
import { installInputGuards } from './common/validation.js';
import { loadRootKeyring } from './crypto/root-keyring-file.js';
import { JOB_RUNNER, type JobRunner } from './jobs/job-runner.js';
import { REFRESH_QUEUE } from './jobs/jobs.module.js';
import type { RefreshQueue } from './jobs/refresh-queue.js';
import { ProviderCatalog } from './providers/provider-catalog.js';

/** Routes polled by orchestrators and monitoring. */
const PROBE_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

export interface StartOptions {
  env?: Record<string, string | undefined>;
  config?: Config;
  logger?: Logger;
  /** Listen on HOST:PORT (default true); tests may use fastify inject instead. */
  listen?: boolean;
}

/** What tests and benchmarks reach into: the runtime, and the providers chosen at start-up. */
export interface CustosRuntime extends Runtime {
  dataSource: DataSource;
  catalog: ProviderCatalog;
  jobs: JobRunner;
}

export interface Custos {
  app: NestFastifyApplication;
  runtime: CustosRuntime;
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
  const base: Runtime = { config, logger, keyring };
  const cleanups: (() => Promise<unknown>)[] = [];
  // The data source, once open: closed here if start-up fails before there is an app to close.
  const opened: DataSource[] = [];
  try {
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
    const app = await NestFactory.create<NestFastifyApplication>(AppModule.register(base, opened), adapter, {
      logger: new PinoNestLogger(logger),
      // Fail with the error (and clean up below) rather than abort the process.
      abortOnError: false,
    });
    const background = app.get(Background);
    cleanups.unshift(() => app.close());
    // What runs besides HTTP stops first, while the database and the batchers still work.
    cleanups.unshift(() => background.stop());
    const fastify = app.getHttpAdapter().getInstance();
    fastify.addHook('onRequest', (req, reply, done) => {
      requestContext.enterWith({ requestId: req.id });
      void reply.header('x-request-id', req.id);
      void reply.header('x-content-type-options', 'nosniff');
      done();
    });
    installInputGuards(fastify);
    installHttpMetrics(app);
    const access = accessLogger(logger);
    fastify.addHook('onResponse', (req, reply, done) => {
      // Probes and scrapes come every few seconds: a healthy one is logged at debug, not as an access line.
      const quiet = reply.statusCode < 400 && PROBE_ROUTES.has(req.routeOptions?.url ?? '');
      access[quiet ? 'debug' : 'info'](
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
    if (config.role !== 'worker') setupApiDocs(app);

    // Runs every module's start-up hooks: the first admin key, the refresh queue and the role's jobs (background.ts).
    await app.init();
    const runtime: CustosRuntime = {
      ...base,
      dataSource: app.get(DataSource),
      catalog: app.get(ProviderCatalog),
      jobs: app.get<JobRunner>(JOB_RUNNER),
    };
    const refreshQueue = app.get<RefreshQueue | null>(REFRESH_QUEUE) ?? undefined;
    const jobs = runtime.jobs;

    let url = config.publicUrl;
    if (opts.listen !== false) {
      await app.listen({ port: config.port, host: config.host });
      const addr = fastify.server.address();
      const port = addr && typeof addr === 'object' ? addr.port : config.port;
      const host = config.host.includes(':') ? `[${config.host}]` : config.host;
      url = `http://${host}:${port}`;
      const embedded = !config.databaseUrl;
      const adminKeyFile = path.join(config.dataDir, 'bootstrap-admin-key');
      // Where people and links reach it (CUSTOS_PUBLIC_URL), when that differs from the listening address.
      const publicUrl = config.port !== 0 ? config.publicUrl : url;
      // The start-up summary: where to go, what it runs on, where the first admin key is (never a secret:
      // no URL with its password, no key, only where keys come from).
      logger.info(
        {
          url,
          ...(publicUrl !== url && { publicUrl }),
          ...(config.role !== 'worker' && { docs: `${publicUrl}/docs` }),
          role: config.role,
          jobs: jobs.kind === 'bullmq' ? 'redis (BullMQ)' : 'in-process',
          database: embedded ? 'embedded' : 'external',
          ...((embedded || !config.rootKeys) && { dataDir: config.dataDir }),
          keyBackend: 'managed',
          rootKeySource: config.rootKeys
            ? `CUSTOS_ROOT_KEYS (${keyring.currentVersion} wraps)`
            : `local file ${path.join(config.dataDir, 'root-keys')} (development only)`,
          ...(!config.bootstrapAdminKey && fs.existsSync(adminKeyFile) && { adminKeyFile }),
        },
        'Custos is listening',
      );
    } else {
      await fastify.ready();
    }
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
    // Closing the app closed it already; destroy() is not called twice.
    for (const ds of opened) if (ds.isInitialized) await ds.destroy().catch(() => undefined);
    throw err;
  }
}

/** The OpenAPI document at /openapi.json and its viewer at /docs (api role). */
function setupApiDocs(app: NestFastifyApplication): void {
  const doc = SwaggerModule.createDocument(app, openApiFrame('0.1.0'));
  SwaggerModule.setup('docs', app, doc, { jsonDocumentUrl: 'openapi.json' });
}
