/**
 * What the benchmarks share: logging, the admin database, free ports, health waits, admin API calls, bounded
 * concurrency and the machine description of a results file.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import pg from 'pg';

export const adminUrl =
  process.env.BENCH_DATABASE_URL ??
  process.env.TEST_DATABASE_URL ??
  'postgres://postgres@127.0.0.1:5432/postgres';

/**
 * The V8 flags `npm start` runs Custos with (package.json `config.nodeFlags`), so that a benchmark measures
 * the configuration that ships.
 */
export function shippedNodeFlags(root: string): string[] {
  // BENCH_NODE_FLAGS replaces them, for experiments (an empty value: no flags).
  if (process.env.BENCH_NODE_FLAGS !== undefined)
    return process.env.BENCH_NODE_FLAGS.split(/\s+/).filter(Boolean);
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
    config?: { nodeFlags?: string };
  };
  return (pkg.config?.nodeFlags ?? '').split(/\s+/).filter(Boolean);
}

export function log(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

/** Runs `fn` on a client of the admin database (create and drop benchmark databases). */
export async function admin<T>(fn: (c: pg.Client) => Promise<T>, url = adminUrl): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export async function waitForHealth(url: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('Custos did not become healthy');
}

/** An admin API call with a JSON body; throws on a non-2xx answer. */
export async function call<T = unknown>(
  url: string,
  method: string,
  route: string,
  key: string,
  body: unknown,
): Promise<T> {
  const res = await fetch(url + route, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${method} ${route}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

/** A tenant and a key of its own (an admin or auditor key), created with the bootstrap admin key. */
export async function createTenant(
  url: string,
  bootstrapKey: string,
  name: string,
  key: { name: string; role: string },
): Promise<{ id: string; key: string }> {
  const { id } = await call<{ id: string }>(url, 'POST', '/v1/tenants', bootstrapKey, { name });
  const created = await call<{ key: string }>(url, 'POST', `/v1/tenants/${id}/admin-keys`, bootstrapKey, key);
  return { id, key: created.key };
}

/** Runs `fn(0)` … `fn(count - 1)` in index order, at most `concurrency` at a time (seeding over the admin API). */
export async function forEachConcurrently(
  count: number,
  concurrency: number,
  fn: (i: number) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) await fn(next++);
    }),
  );
}

/** The machine a benchmark ran on, as its results file records it. */
export function machineInfo(): { cpus: number; cpuModel: string | undefined; memGiB: number; node: string } {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
  };
}

/** Resident set size of a process, from /proc (Linux). */
export function rssOf(pid: number): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
    return kb ? Number(kb) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Prometheus text exposition as a map from each sample's `name{labels}` (as written) to its value. */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    if (at > 0) out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}
