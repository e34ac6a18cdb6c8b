/**
 * Start-up benchmark: `npm run bench:start`.
 *
 * Runs `npm start` as a user does, on one data folder: a first start (builds what changed, initialises the
 * embedded PostgreSQL cluster), then BENCH_STARTS more starts with nothing changed (default 5), each stopped
 * with SIGTERM to the npm process. Measures the time from spawning `npm start` to the first 200 from
 * /healthz, and from the signal to npm's exit. Writes bench/results/start-*.json.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, log } from './lib.js';

const root = path.join(import.meta.dirname, '..');
const STARTS = Number(process.env.BENCH_STARTS ?? 5);

async function healthy(url: string): Promise<boolean> {
  try {
    return (await fetch(url, { signal: AbortSignal.timeout(1000) })).status === 200;
  } catch {
    return false;
  }
}

async function oneStart(dataDir: string): Promise<{ toHealthzMs: number; toExitMs: number }> {
  const port = await freePort();
  const began = performance.now();
  const npm = spawn('npm', ['start'], {
    cwd: root,
    env: { ...process.env, CUSTOS_DATA_DIR: dataDir, PORT: String(port), HOST: '127.0.0.1' },
    stdio: 'ignore',
  });
  const url = `http://127.0.0.1:${port}/healthz`;
  while (!(await healthy(url))) {
    if (npm.exitCode !== null) throw new Error('npm start exited before answering /healthz');
    if (performance.now() - began > 180_000)
      throw new Error('npm start did not answer /healthz in 3 minutes');
    await new Promise((r) => setTimeout(r, 25));
  }
  const toHealthzMs = performance.now() - began;
  const exited = new Promise<void>((resolve) => npm.once('exit', () => resolve()));
  const stopping = performance.now();
  npm.kill('SIGTERM');
  await exited;
  return { toHealthzMs: Math.round(toHealthzMs), toExitMs: Math.round(performance.now() - stopping) };
}

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-start-'));
try {
  log('first start (builds what changed, initialises the embedded cluster)');
  const first = await oneStart(dataDir);
  const again: { toHealthzMs: number; toExitMs: number }[] = [];
  for (let i = 0; i < STARTS; i++) {
    log(`start ${i + 1} of ${STARTS} with nothing changed`);
    again.push(await oneStart(dataDir));
  }
  const sorted = again.map((r) => r.toHealthzMs).sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  process.stdout.write('| start | to /healthz ms | SIGTERM to exit ms |\n| --- | --- | --- |\n');
  process.stdout.write(`| first | ${first.toHealthzMs} | ${first.toExitMs} |\n`);
  again.forEach((r, i) =>
    process.stdout.write(`| unchanged ${i + 1} | ${r.toHealthzMs} | ${r.toExitMs} |\n`),
  );
  process.stdout.write(`median start with nothing changed: ${median} ms\n`);
  const file = path.join(
    root,
    'bench/results',
    `start-${new Date().toISOString().replace(/[:.]/g, '-')}.json`,
  );
  fs.writeFileSync(
    file,
    JSON.stringify({ machine: { cpus: os.cpus().length }, first, again, median }, null, 2),
  );
  log(`results written to ${path.relative(root, file)}`);
} finally {
  fs.rmSync(dataDir, { recursive: true, force: true });
}
