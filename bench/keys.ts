/**
 * Key-backend benchmark: `npm run bench:keys`.
 *
 * One tenant on a customer AWS KMS key (the KMS emulator, driven by the real @aws-sdk/client-kms, with
 * BENCH_KMS_LATENCY_MS of latency per call, default 20) and 100 credentials; 10,000 reads (the release path:
 * row, data key, decrypt) at concurrency 10. Counts KMS Decrypt calls: with a warm data-key cache they stay at
 * one per data key per cache age, whatever the number of reads. Then the KMS key hangs, and another tenant
 * (managed keyring) keeps reading: its throughput is measured while the first tenant's reads time out.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { systemActor } from '../src/audit/audit.service.js';
import { startCustos } from '../src/bootstrap.js';
import { createLogger } from '../src/common/logger.js';
import { loadConfig } from '../src/config/config.js';
import { ConnectionsService } from '../src/connections/connections.service.js';
import { DataKeyService } from '../src/crypto/data-key.service.js';
import { KeyBackendService } from '../src/crypto/key-backend.service.js';
import { RootKeyring } from '../src/common/root-keyring.js';
import { generateAdminKey } from '../src/identity/admin-keys.service.js';
import { TenantsService } from '../src/tenants/tenants.service.js';
import { startKmsEmulator } from '../test/emulators/kms-emulator.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';
const adminUrl =
  process.env.BENCH_DATABASE_URL ??
  process.env.TEST_DATABASE_URL ??
  'postgres://postgres@127.0.0.1:5432/postgres';
const READS = Number(process.env.BENCH_READS ?? 10_000);
const CREDENTIALS = 100;
const LATENCY = Number(process.env.BENCH_KMS_LATENCY_MS ?? 20);

const log = (m: string) => process.stderr.write(`[bench] ${m}\n`);

async function admin(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

async function timedReads(
  n: number,
  concurrency: number,
  read: (i: number) => Promise<unknown>,
): Promise<{ seconds: number; perSecond: number; p99Ms: number; failures: number }> {
  const latencies: number[] = [];
  let next = 0;
  let failures = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const i = next++;
        const t0 = performance.now();
        try {
          await read(i);
        } catch {
          failures++;
        }
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    seconds: +seconds.toFixed(2),
    perSecond: Math.round(n / seconds),
    p99Ms: +latencies[Math.floor(latencies.length * 0.99)].toFixed(1),
    failures,
  };
}

async function main(): Promise<void> {
  const dbName = `custos_bench_keys_${process.pid}`;
  await admin(`CREATE DATABASE ${dbName}`);
  const dbUrl = new URL(adminUrl);
  dbUrl.pathname = `/${dbName}`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-keys-'));
  const creds = {
    accessKeyId: 'AKIA' + randomBytes(8).toString('hex').toUpperCase(),
    secretAccessKey: randomBytes(30).toString('base64'),
  };
  const kms = await startKmsEmulator({ credentials: [{ ...creds }] });
  const custos = await startCustos({
    config: loadConfig({
      DATABASE_URL: dbUrl.toString(),
      CUSTOS_DATA_DIR: dataDir,
      CUSTOS_ROOT_KEYS: RootKeyring.generateSpec(),
      CUSTOS_BOOTSTRAP_ADMIN_KEY: generateAdminKey(),
      CUSTOS_OUTBOUND_ALLOW_HOSTS: `127.0.0.1:${kms.port}`,
      CUSTOS_KEY_BACKEND_TIMEOUT_MS: '1000',
    }),
    logger: createLogger('warn'),
    listen: false,
  });
  try {
    const app = custos.app;
    const tenants = app.get(TenantsService);
    const connections = app.get(ConnectionsService);
    const a = await tenants.createTenant(systemActor, 'byok');
    const b = await tenants.createTenant(systemActor, 'managed');
    const key = kms.createKey({ alias: 'alias/bench' });
    await app.get(KeyBackendService).configure(systemActor, a.id, {
      type: 'aws-kms',
      keyId: key.arn,
      region: 'us-east-1',
      endpoint: kms.url,
      credentials: { ...creds },
    });
    const ids: { a: string[]; b: string[] } = { a: [], b: [] };
    for (let i = 0; i < CREDENTIALS; i++) {
      for (const [t, list] of [
        [a.id, ids.a],
        [b.id, ids.b],
      ] as const) {
        const { connection } = await connections.importCredential(systemActor, t, `user-${i}`, 'github', {
          type: 'oauth2',
          accessToken: `gho_${randomBytes(16).toString('hex')}`,
        });
        list.push(connection.id);
      }
    }
    kms.faults.latencyMs = LATENCY;
    const dataKeys = app.get(DataKeyService);
    dataKeys.flushTenant(a.id);
    const decryptsBefore = kms.callsByOp.Decrypt ?? 0;
    log(`${READS} reads across ${CREDENTIALS} credentials of a KMS tenant (KMS latency ${LATENCY} ms)`);
    const warm = await timedReads(READS, 10, (i) => connections.openCredential(a.id, ids.a[i % CREDENTIALS]));
    const decrypts = (kms.callsByOp.Decrypt ?? 0) - decryptsBefore;

    log('KMS hangs: the managed tenant keeps reading while the KMS tenant times out');
    kms.faults.hang = true;
    dataKeys.flushTenant(a.id);
    const stuck = timedReads(20, 10, (i) => connections.openCredential(a.id, ids.a[i % CREDENTIALS]));
    const other = await timedReads(2000, 10, (i) => connections.openCredential(b.id, ids.b[i % CREDENTIALS]));
    const stuckResult = await stuck;
    kms.faults.hang = false;

    const report = {
      date: new Date().toISOString(),
      machine: { cpus: os.cpus().length, node: process.version },
      kmsLatencyMs: LATENCY,
      warmReads: { reads: READS, credentials: CREDENTIALS, ...warm, kmsDecryptCalls: decrypts, dataKeys: 1 },
      duringKmsHang: {
        managedTenant: other,
        kmsTenant: {
          reads: 20,
          ...stuckResult,
          note: 'each read fails with key_unavailable after the 1 s timeout',
        },
      },
    };
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    fs.mkdirSync(path.join(import.meta.dirname, 'results'), { recursive: true });
    const file = path.join(import.meta.dirname, 'results', `keys-${report.date.replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
    log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    await custos.close();
    await kms.close();
    await admin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
process.exit(0);
