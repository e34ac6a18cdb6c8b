/**
 * Custos for the demo, run as `npm start` runs it: the built `dist/src/main.js` in a process of its own, on
 * the embedded default (an embedded PostgreSQL in the demo's data folder, jobs in-process, a local root key).
 * The folder starts empty on every run and records which processes use it, so that a demo killed outright
 * (kill -9) is cleaned up by the next one rather than left running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** Written into the data folder: marks it as the demo's (so it may be emptied) and names its processes. */
const MARKER = 'custos-demo.json';

export interface CustosChild {
  url: string;
  pid: number;
  logFile: string;
  /** Resolves once `/healthz` answers; rejects if Custos exits first or takes more than two minutes. */
  ready(): Promise<void>;
  /** Resolves with the exit code (or signal) when the process ends. */
  exited: Promise<string>;
  /** SIGTERM, as Ctrl-C to `npm start`: Custos stops, and stops its PostgreSQL. Resolves once it has. */
  stop(): Promise<void>;
}

interface Marker {
  demoPid: number;
  custosPid?: number;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

/** Whether `pid` is still the one we mean: its command line or environment (NUL-separated) has `needle`. */
function runs(pid: number, needle: string): boolean {
  if (!alive(pid)) return false;
  for (const file of ['cmdline', 'environ']) {
    try {
      if (fs.readFileSync(`/proc/${pid}/${file}`, 'utf8').includes(needle)) return true;
    } catch {
      // Not readable (another user's process): not ours.
    }
  }
  return false;
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (alive(pid)) {
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/**
 * Empties the data folder for a fresh run. Refuses a folder that is not empty and was not made by the demo,
 * and a folder another running demo uses. What a killed demo left running there (its Custos, or the
 * embedded PostgreSQL of a killed Custos) is stopped first.
 */
export async function prepareDataFolder(dir: string): Promise<void> {
  if (fs.existsSync(dir)) {
    const entries = fs.readdirSync(dir);
    const markerFile = path.join(dir, MARKER);
    if (entries.length > 0 && !fs.existsSync(markerFile)) {
      throw new Error(
        `${dir} is not empty and is not a demo folder; choose another one with CUSTOS_DEMO_DIR`,
      );
    }
    if (fs.existsSync(markerFile)) {
      const marker = JSON.parse(fs.readFileSync(markerFile, 'utf8')) as Marker;
      if (marker.demoPid !== process.pid && runs(marker.demoPid, 'examples/demo/main')) {
        throw new Error(
          `another demo (process ${marker.demoPid}) is using ${dir}; stop it first (Ctrl-C in its terminal)`,
        );
      }
      if (marker.custosPid !== undefined && runs(marker.custosPid, `CUSTOS_DATA_DIR=${dir}\0`)) {
        process.kill(marker.custosPid, 'SIGTERM');
        if (!(await waitGone(marker.custosPid, 30_000))) process.kill(marker.custosPid, 'SIGKILL');
      }
      const cluster = await stopStalePostgres(dir);
      // Running as root with a folder the postgres user cannot reach, Custos keeps the cluster in a system
      // folder of its own for this data folder; it goes with the folder.
      if (cluster !== null && SYSTEM_CLUSTER.test(cluster))
        fs.rmSync(cluster, { recursive: true, force: true });
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeMarker(dir, { demoPid: process.pid });
}

/** Where Custos puts the cluster of a data folder that the postgres user cannot reach (running as root). */
const SYSTEM_CLUSTER = /^\/var\/lib\/custos\/embedded\/cluster-[0-9a-f]{16}$/;

/**
 * Stops the embedded PostgreSQL a killed Custos left behind (fast shutdown, SIGINT, as Custos stops it) and
 * answers where its cluster is, or null when the folder never had one.
 */
async function stopStalePostgres(dir: string): Promise<string | null> {
  let pgdata: string;
  try {
    const state = JSON.parse(fs.readFileSync(path.join(dir, 'embedded-postgres.json'), 'utf8')) as {
      pgdata?: unknown;
    };
    if (typeof state.pgdata !== 'string') return null;
    pgdata = state.pgdata;
  } catch {
    return null;
  }
  try {
    const pid = Number(fs.readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (Number.isInteger(pid) && pid > 0 && runs(pid, `${pgdata}\0`)) {
      process.kill(pid, 'SIGINT');
      if (!(await waitGone(pid, 30_000))) process.kill(pid, 'SIGKILL');
    }
  } catch {
    // No pid file: it is not running.
  }
  return pgdata;
}

function writeMarker(dir: string, marker: Marker): void {
  fs.writeFileSync(path.join(dir, MARKER), JSON.stringify(marker) + '\n', { mode: 0o600 });
}

export interface CustosOptions {
  repoRoot: string;
  dataDir: string;
  port: number;
  /** Run src/main.ts under tsx instead of the build (no `npm run build` needed). */
  fromSource: boolean;
  /** Settings on top of the embedded default. */
  env: Record<string, string>;
}

/**
 * Starts Custos (`ready()` says when it answers). Its log (JSON lines) goes to `custos.log` in the data
 * folder. It runs in a process group of its own, so a Ctrl-C in the terminal reaches the demo only, which
 * then stops Custos once, in order; should the demo die without stopping it, its next run does.
 */
export function startCustos(opts: CustosOptions): CustosChild {
  const entry = opts.fromSource
    ? ['--import', 'tsx', path.join(opts.repoRoot, 'src/main.ts')]
    : [path.join(opts.repoRoot, 'dist/src/main.js')];
  if (!opts.fromSource && !fs.existsSync(entry[0])) {
    throw new Error(`${entry[0]} is missing: run "npm run build" first (npm run demo does)`);
  }
  const logFile = path.join(opts.dataDir, 'custos.log');
  const log = fs.openSync(logFile, 'a', 0o600);
  const url = `http://127.0.0.1:${opts.port}`;
  const child: ChildProcess = spawn(process.execPath, entry, {
    cwd: opts.repoRoot,
    env: {
      ...inheritedEnv(),
      HOST: '127.0.0.1',
      PORT: String(opts.port),
      CUSTOS_PUBLIC_URL: url,
      CUSTOS_DATA_DIR: opts.dataDir,
      CUSTOS_LOG_FORMAT: 'json',
      CUSTOS_LOG_LEVEL: 'info',
      ...opts.env,
    },
    detached: true,
    stdio: ['ignore', log, log],
  });
  fs.closeSync(log);
  const pid = child.pid;
  if (pid === undefined) throw new Error('Custos could not be started');
  writeMarker(opts.dataDir, { demoPid: process.pid, custosPid: pid });
  const exited = new Promise<string>((resolve) =>
    child.once('exit', (code, signal) => resolve(signal ?? String(code))),
  );
  // A demo that fails or exits without stopping Custos (an exception, process.exit) still tells it to stop.
  const stopOnExit = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  };
  process.once('exit', stopOnExit);

  let ended: string | null = null;
  void exited.then((how) => (ended = how));
  const ready = async () => {
    const until = Date.now() + 120_000;
    for (;;) {
      if (ended !== null) throw new CustosFailedError(ended, logFile);
      const ok = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) }).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) return;
      if (Date.now() > until)
        throw new Error(`Custos did not answer on ${url} within two minutes; see ${logFile}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  return {
    url,
    pid,
    logFile,
    ready,
    exited,
    async stop() {
      process.removeListener('exit', stopOnExit);
      if (ended === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => {
          // Custos stops PostgreSQL on its way out; a second signal makes it exit at once and still tell
          // PostgreSQL to stop.
          if (ended === null) child.kill('SIGINT');
        }, 30_000);
        await exited;
        clearTimeout(timer);
      }
      // A Custos that ended before its signal handlers were installed (a Ctrl-C while it was starting), or
      // that crashed, leaves its PostgreSQL running: stop that one too.
      await stopStalePostgres(opts.dataDir);
    },
  };
}

export class CustosFailedError extends Error {
  constructor(
    readonly how: string,
    readonly logFile: string,
  ) {
    super(`Custos exited (${how}) before it was ready; see ${logFile}`);
  }
}

/**
 * The demo's environment without the settings that would take Custos off the embedded default (a
 * DATABASE_URL, REDIS_URL or any CUSTOS_* variable of the user's shell).
 */
function inheritedEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (
      v === undefined ||
      k.startsWith('CUSTOS_') ||
      ['DATABASE_URL', 'REDIS_URL', 'HOST', 'PORT'].includes(k)
    )
      continue;
    out[k] = v;
  }
  return out;
}
