/**
 * Starts a real Custos (real PostgreSQL, real crypto) for a test file, with captured logs and an HTTP helper.
 * The test data it holds is made with the factories (factories.ts).
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import type { OutgoingHttpHeaders } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { startCustos, type Custos } from '../../src/bootstrap.js';
import { loadConfig } from '../../src/config/config.js';
import { createLogger } from '../../src/common/logger.js';
import { generateAdminKey } from '../../src/identity/admin-keys.service.js';
import { RootKeyring } from '../../src/common/root-keyring.js';
import { databaseUrlFor, workerDatabaseName } from './env.js';

export interface Reply {
  status: number;
  headers: OutgoingHttpHeaders;
  // JSON bodies are asserted field by field in tests.
  body: any;
  raw: string;
}

export interface TestApp {
  custos: Custos;
  bootstrapKey: string;
  logs: string[];
  dataDir: string;
  request(
    method: string,
    url: string,
    opts?: { key?: string; body?: unknown; headers?: Record<string, string>; payload?: string },
  ): Promise<Reply>;
  close(): Promise<void>;
}

export async function startTestApp(env: Record<string, string | undefined> = {}): Promise<TestApp> {
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(chunk.toString());
      cb();
    },
  });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-test-'));
  const bootstrapKey = generateAdminKey();
  const config = loadConfig({
    DATABASE_URL: databaseUrlFor(workerDatabaseName()),
    CUSTOS_ROOT_KEYS: RootKeyring.generateSpec(),
    CUSTOS_BOOTSTRAP_ADMIN_KEY: bootstrapKey,
    CUSTOS_DATA_DIR: dataDir,
    CUSTOS_LOG_LEVEL: 'debug',
    CUSTOS_DB_POOL_SIZE: '5',
    // Each app has its own BullMQ keys unless a test shares them on purpose.
    CUSTOS_QUEUE_PREFIX: `custos-test-${randomUUID()}`,
    // Every test request comes from one address and many are refused on purpose: no throttling or folding
    // unless a test asks for it (test/integration/audit/rate-limit.test.ts does).
    CUSTOS_RATE_LIMIT_CREDENTIAL_FAILURES: '1000000',
    CUSTOS_RATE_LIMIT_ADDRESS_FAILURES: '1000000',
    CUSTOS_AUDIT_DENIALS_PER_WINDOW: '1000000',
    CUSTOS_AUDIT_DENIALS_GLOBAL_PER_WINDOW: '10000000',
    // The sealer runs in every test app, on its timer, but less often than in production (1 s): the tests of
    // the sealed trail run it themselves (test/support/audit.ts), and the others need not pay for it.
    CUSTOS_AUDIT_SEAL_INTERVAL_MS: '5000',
    ...env,
  });
  const custos = await startCustos({ config, logger: createLogger('debug', sink), listen: false });
  const fastify = custos.app.getHttpAdapter().getInstance();
  return {
    custos,
    bootstrapKey,
    logs,
    dataDir,
    async request(method, url, opts = {}) {
      const headers: Record<string, string> = { ...(opts.headers ?? {}) };
      if (opts.key) headers.authorization = `Bearer ${opts.key}`;
      let payload: string | undefined = opts.payload;
      if (opts.body !== undefined) {
        payload = JSON.stringify(opts.body);
        headers['content-type'] ??= 'application/json';
      }
      const res = await fastify.inject({ method: method as 'GET', url, headers, payload });
      let body: unknown;
      try {
        body = res.body ? JSON.parse(res.body) : undefined;
      } catch {
        body = res.body;
      }
      return { status: res.statusCode, headers: res.headers, body, raw: res.body };
    },
    async close() {
      await custos.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
