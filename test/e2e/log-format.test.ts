/**
 * Custos as a person starts it at a terminal: readable lines (pino-pretty) when asked for or when stdout is a
 * terminal, with the start-up summary and the last line before exit, and never a secret.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RootKeyring } from '../../src/common/root-keyring.js';
import { generateAdminKey } from '../../src/identity/admin-keys.service.js';
import { databaseUrlFor, workerDatabaseName } from '../support/env.js';

const ROOT = path.resolve(__dirname, '../..');

interface Run {
  child: ChildProcess;
  output: () => string;
  exited: Promise<void>;
}

/** `node --import tsx src/main.ts`, directly or under `script` (a pseudo-terminal), its output collected. */
function start(env: Record<string, string>, underTerminal: boolean): Run {
  const node = [process.execPath, '--import', 'tsx', path.join(ROOT, 'src/main.ts')];
  const child = underTerminal
    ? spawn('script', ['-qfec', node.map((a) => `'${a}'`).join(' '), '/dev/null'], {
        cwd: ROOT,
        env: { PATH: process.env.PATH, HOME: process.env.HOME, TERM: 'xterm', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
        // Its own process group, so that a signal reaches Node under `script` too.
        detached: true,
      })
    : spawn(node[0], node.slice(1), {
        cwd: ROOT,
        env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { child, output: () => out, exited };
}

async function waitFor(run: Run, text: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!run.output().includes(text)) {
    if (Date.now() > deadline || run.child.exitCode !== null) {
      throw new Error(`no "${text}" within ${ms} ms:\n${run.output().slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** SIGTERM (to the process group under `script`), and the exit. */
async function stop(run: Run, group: boolean): Promise<void> {
  if (run.child.exitCode === null && run.child.signalCode === null) {
    if (group) process.kill(-run.child.pid!, 'SIGTERM');
    else run.child.kill('SIGTERM');
  }
  const timer = setTimeout(
    () => (group ? process.kill(-run.child.pid!, 'SIGKILL') : run.child.kill('SIGKILL')),
    15_000,
  );
  await run.exited;
  clearTimeout(timer);
}

describe('log format', () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-log-format-'));
  const rootKeys = RootKeyring.generateSpec();
  const adminKey = generateAdminKey();
  const env = (extra: Record<string, string>) => ({
    HOST: '127.0.0.1',
    PORT: '0',
    DATABASE_URL: databaseUrlFor(workerDatabaseName()),
    CUSTOS_ROOT_KEYS: rootKeys,
    CUSTOS_BOOTSTRAP_ADMIN_KEY: adminKey,
    CUSTOS_DATA_DIR: dataDir,
    CUSTOS_LOG_LEVEL: 'info',
    ...extra,
  });
  const secrets = [rootKeys, rootKeys.slice(3), adminKey];

  afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

  it('writes readable lines with CUSTOS_LOG_FORMAT=pretty, the summary included, and never a secret', async () => {
    const run = start(env({ CUSTOS_LOG_FORMAT: 'pretty' }), false);
    try {
      await waitFor(run, 'Custos is listening', 90_000);
      const line = run
        .output()
        .split('\n')
        .find((l) => l.includes('Custos is listening'))!;
      expect(() => JSON.parse(line) as unknown).toThrow();
      expect(line).toMatch(/INFO.*Custos is listening/);
      // The summary's fields follow on their own lines.
      const summary = run.output().slice(run.output().indexOf(line));
      expect(summary).toMatch(/url: "http:\/\/127\.0\.0\.1:\d+"/);
      expect(summary).toMatch(/docs: "http:\/\/127\.0\.0\.1:\d+\/docs"/);
      expect(summary).toContain('jobs: "in-process"');
      expect(summary).toContain('database: "external"');
      expect(summary).toContain('keyBackend: "managed"');
      expect(summary).toContain('rootKeySource: "CUSTOS_ROOT_KEYS (v1 wraps)"');
      // A pipe gets no colours.
      // eslint-disable-next-line no-control-regex -- an ANSI colour sequence is what must be absent
      expect(run.output()).not.toMatch(/\u001b\[/);
    } finally {
      await stop(run, false);
    }
    // The last line before process.exit() is there, written at once.
    expect(run.output()).toMatch(/INFO.*Custos stopped/);
    for (const s of secrets) expect(run.output()).not.toContain(s);
  }, 120_000);

  const haveScript = spawnSync('script', ['--version']).status === 0;
  (haveScript ? it : it.skip)(
    'writes readable lines by default when stdout is a terminal (under script), JSON with CUSTOS_LOG_FORMAT=json',
    async () => {
      const pretty = start(env({}), true);
      try {
        await waitFor(pretty, 'Custos is listening', 90_000);
        const line = pretty
          .output()
          .split('\n')
          .find((l) => l.includes('Custos is listening'))!;
        expect(line).not.toMatch(/^\s*\{/);
        expect(line).toMatch(/INFO.*Custos is listening/);
      } finally {
        await stop(pretty, true);
      }
      for (const s of secrets) expect(pretty.output()).not.toContain(s);

      const json = start(env({ CUSTOS_LOG_FORMAT: 'json' }), true);
      try {
        await waitFor(json, '"msg":"Custos is listening"', 90_000);
        const line = json
          .output()
          .split(/\r?\n/)
          .find((l) => l.includes('"msg":"Custos is listening"'))!;
        expect(JSON.parse(line)).toMatchObject({
          msg: 'Custos is listening',
          keyBackend: 'managed',
          rootKeySource: 'CUSTOS_ROOT_KEYS (v1 wraps)',
        });
      } finally {
        await stop(json, true);
      }
    },
    200_000,
  );
});
