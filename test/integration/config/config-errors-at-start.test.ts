/**
 * Finding 13 of issue 12: a bad configuration (a malformed CUSTOS_ROOT_KEYS, a corrupt local key file, a
 * wrong DATABASE_URL) stops `npm start` and the CLI before anything starts — no embedded PostgreSQL in the
 * data folder — with one line naming the variable, never its value, no stack trace, and a non-zero exit.
 * The real entry points run as child processes (through tsx, so no build is needed).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../../../src/common/paths.js';

const ROOT = packageRoot;
const SECRET = 'c2VjcmV0LWJ1dC1zaG9ydA';

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs an entry point with only the given environment (plus PATH and HOME); killed if it hangs. */
function run(entry: string, args: string[], env: Record<string, string>): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // A process that got as far as starting servers would not exit by itself: this bounds the test.
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

let dataDir: string;
beforeEach(() => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-config-'));
});
afterEach(() => {
  fs.rmSync(dataDir, { recursive: true, force: true });
});

function expectOneLineConfigError(exit: Exit, mentions: string | RegExp): void {
  expect(exit.code).toBe(2);
  const lines = exit.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^custos: configuration error: /);
  expect(lines[0]).toMatch(mentions);
  expect(exit.stderr + exit.stdout).not.toMatch(/\n\s+at |"stack"/);
  expect(exit.stderr + exit.stdout).not.toContain(SECRET);
}

describe('npm start (src/main.ts)', () => {
  it('refuses a malformed CUSTOS_ROOT_KEYS before starting the embedded PostgreSQL', async () => {
    const exit = await run('src/main.ts', [], {
      CUSTOS_DATA_DIR: dataDir,
      CUSTOS_ROOT_KEYS: `v1:${SECRET}`,
    });
    expectOneLineConfigError(exit, /CUSTOS_ROOT_KEYS is invalid: entry 1 \(v1\)/);
    // No embedded PostgreSQL was initialised or started in the data folder.
    expect(fs.readdirSync(dataDir)).toEqual([]);
  });

  it('refuses a corrupt local root key file, naming the file, before starting anything', async () => {
    fs.writeFileSync(path.join(dataDir, 'root-keys'), `v1:${SECRET}\n`, { mode: 0o600 });
    const exit = await run('src/main.ts', [], { CUSTOS_DATA_DIR: dataDir });
    expectOneLineConfigError(exit, /root key file .*root-keys is invalid/);
    expect(fs.readdirSync(dataDir)).toEqual(['root-keys']);
  });
});

describe('the CLI (src/cli.ts)', () => {
  it('refuses a DATABASE_URL that is not a PostgreSQL URL, without quoting it', async () => {
    const exit = await run('src/cli.ts', ['migrate'], {
      CUSTOS_DATA_DIR: dataDir,
      DATABASE_URL: `mysql://custos:${SECRET}@db.internal/custos`,
    });
    expectOneLineConfigError(exit, /^custos: configuration error: DATABASE_URL is invalid/);
    expect(fs.readdirSync(dataDir)).toEqual([]);
  });
});
