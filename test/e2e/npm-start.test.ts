/**
 * `npm start` as a user runs it: a signal to the process the user started (npm's, which runs the script
 * through `sh -c`) stops Custos and its embedded PostgreSQL within seconds, and the log says so; a second
 * signal while it stops exits at once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { descendantsOf, listening } from '../support/processes.js';

const ROOT = path.join(__dirname, '../..');

interface Started {
  npm: ChildProcess;
  /** Every process under npm once up (sh, Node, PostgreSQL), killed after the test if a failure left any. */
  descendants: number[];
  output: () => string;
  apiPort: number;
  databasePort: number;
}

async function npmStart(dataDir: string): Promise<Started> {
  const npm = spawn('npm', ['start'], {
    cwd: ROOT,
    env: { ...process.env, CUSTOS_DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', CUSTOS_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  npm.stdout.on('data', (c: Buffer) => (out += c.toString()));
  npm.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const api = /"url":"http:\/\/127\.0\.0\.1:(\d+)".*"msg":"Custos is listening"/.exec(out);
    const db = /"port":(\d+),"cluster":"[^"]*","msg":"embedded PostgreSQL is ready/.exec(out);
    if (api && db) {
      const descendants = descendantsOf(npm.pid!);
      return { npm, descendants, output: () => out, apiPort: Number(api[1]), databasePort: Number(db[1]) };
    }
    if (npm.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  npm.kill('SIGKILL');
  throw new Error(`npm start did not come up:\n${out.slice(-2000)}`);
}

describe('npm start', () => {
  const dirs: string[] = [];
  const started: Started[] = [];

  afterAll(async () => {
    for (const s of started) {
      if (s.npm.exitCode === null) s.npm.kill('SIGKILL');
      for (const pid of s.descendants) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Already gone, as it should be.
        }
      }
    }
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it.each(['SIGTERM', 'SIGINT'] as const)(
    'stops Node and the embedded PostgreSQL within seconds of %s to the npm process, and logs that it stopped',
    async (signal) => {
      const dataDir = mkdtempSync(path.join(tmpdir(), 'custos-npm-start-'));
      dirs.push(dataDir);
      const s = await npmStart(dataDir);
      started.push(s);
      expect(await listening(s.apiPort)).toBe(true);
      expect(await listening(s.databasePort)).toBe(true);
      // The start-up summary says where to go and where the first admin key is, never the key itself.
      const summary = JSON.parse(
        s
          .output()
          .split('\n')
          .find((l) => l.includes('"msg":"Custos is listening"'))!,
      ) as Record<string, unknown>;
      expect(summary).toMatchObject({
        url: `http://127.0.0.1:${s.apiPort}`,
        docs: `http://127.0.0.1:${s.apiPort}/docs`,
        role: 'all',
        jobs: 'in-process',
        database: 'embedded',
        dataDir,
        keyBackend: 'managed',
        rootKeySource: `local file ${path.join(dataDir, 'root-keys')} (development only)`,
        adminKeyFile: path.join(dataDir, 'bootstrap-admin-key'),
      });
      // Same address as the listener (PORT=0 here): no separate publicUrl.
      expect(summary).not.toHaveProperty('publicUrl');
      // Nest's narration of modules and routes stays at debug.
      expect(s.output()).not.toMatch(/"context":"(RouterExplorer|RoutesResolver|InstanceLoader)"/);
      expect(s.output()).not.toContain(
        readFileSync(path.join(dataDir, 'bootstrap-admin-key'), 'utf8').trim(),
      );

      const exited = new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 15_000);
        s.npm.once('exit', () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      s.npm.kill(signal);
      expect(await exited).toBe(true);
      // npm returns when its child (Node, exec'd by the script) has exited; give the sockets a moment.
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline && ((await listening(s.apiPort)) || (await listening(s.databasePort)))) {
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(await listening(s.apiPort)).toBe(false);
      expect(await listening(s.databasePort)).toBe(false);
      expect(s.output()).toContain(`"signal":"${signal}","msg":"Custos stopped"`);
    },
    150_000,
  );

  it('exits at once on a second signal while it is stopping, and its embedded PostgreSQL stops too', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'custos-npm-start-'));
    dirs.push(dataDir);
    const s = await npmStart(dataDir);
    started.push(s);
    const exited = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 10_000);
      s.npm.once('exit', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    s.npm.kill('SIGINT');
    // Stopping takes a moment (requests, pools, PostgreSQL's own shutdown): the second Ctrl-C comes in it.
    await new Promise((r) => setTimeout(r, 30));
    s.npm.kill('SIGINT');
    expect(await exited).toBe(true);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && ((await listening(s.apiPort)) || (await listening(s.databasePort)))) {
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(await listening(s.apiPort)).toBe(false);
    expect(await listening(s.databasePort)).toBe(false);
    expect(s.output()).toContain('"msg":"second signal while stopping: exiting at once"');
    // The next start on the same data folder is not refused by a lock or a PostgreSQL left behind.
    const again = await npmStart(dataDir);
    started.push(again);
    expect(await listening(again.apiPort)).toBe(true);
    const stoppedAgain = new Promise<void>((resolve) => again.npm.once('exit', () => resolve()));
    again.npm.kill('SIGTERM');
    await stoppedAgain;
  }, 150_000);
});
