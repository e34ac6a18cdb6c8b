import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { startCustos } from '../../src/bootstrap.js';
import { loadConfig } from '../../src/config/config.js';
import { createLogger } from '../../src/common/logger.js';
import { packageRoot } from '../../src/common/paths.js';
import { isProcessAlive } from '../../src/database/embedded-postgres.js';

jest.setTimeout(120_000);

function startChild(dataDir: string): Promise<{ child: ChildProcess; url: string; pgdata: string }> {
  // node itself with tsx's loader (not the tsx CLI, which would put a second process in between).
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/support/embedded-child.ts', dataDir], {
    cwd: packageRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n')) resolve({ child, ...(JSON.parse(line) as { url: string; pgdata: string }) });
    });
    child.on('exit', (code) => reject(new Error(`embedded child exited with ${code}: ${err}`)));
  });
}

async function query<T>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(sql, params)).rows as T[];
  } finally {
    await c.end();
  }
}

function removeCluster(pgdata: string, dataDir: string) {
  if (!pgdata.startsWith(dataDir)) fs.rmSync(pgdata, { recursive: true, force: true });
}

describe('embedded PostgreSQL', () => {
  it('recovers by itself after the process that ran it was killed with SIGKILL, keeping the data', async () => {
    // A root-only (0700) temporary folder: the postgres user cannot traverse it.
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-crash-'));
    const dataDir = path.join(tmp, 'data');
    let pgdata = '';
    try {
      const first = await startChild(dataDir);
      pgdata = first.pgdata;
      await query(first.url, 'CREATE TABLE crash_probe (v text)');
      await query(first.url, `INSERT INTO crash_probe VALUES ('survived')`);
      const pid = Number(fs.readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n')[0]);
      first.child.kill('SIGKILL');
      await new Promise((r) => first.child.once('exit', r));
      expect(isProcessAlive(pid)).toBe(true); // the orphaned server is still running

      const second = await startChild(dataDir);
      try {
        expect(isProcessAlive(pid)).toBe(false);
        expect(await query(second.url, 'SELECT v FROM crash_probe')).toEqual([{ v: 'survived' }]);
      } finally {
        second.child.kill('SIGTERM');
        await new Promise((r) => second.child.once('exit', r));
      }
      expect(fs.existsSync(path.join(pgdata, 'postmaster.pid'))).toBe(false);
    } finally {
      if (pgdata) removeCluster(pgdata, dataDir);
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('stops its PostgreSQL when a signal comes while Custos is still starting', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-early-signal-'));
    const dataDir = path.join(tmp, 'data');
    let pgdata = '';
    let pid = 0;
    try {
      // src/main.ts, stopped by a failpoint once its embedded PostgreSQL runs and before start-up is done.
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
        cwd: packageRoot,
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          PORT: '0',
          CUSTOS_DATA_DIR: dataDir,
          CUSTOS_LOG_LEVEL: 'info',
          CUSTOS_TEST_FAILPOINTS: 'start.after-embedded-postgres',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      const deadline = Date.now() + 90_000;
      while (!out.includes('failpoint reached')) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no failpoint:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      pgdata = JSON.parse(fs.readFileSync(path.join(dataDir, 'embedded-postgres.json'), 'utf8')).pgdata;
      pid = Number(fs.readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n')[0]);
      expect(isProcessAlive(pid)).toBe(true);

      child.kill('SIGTERM');
      expect(await exited).toBe(143);
      expect(out).toContain('signal during start-up: exiting');
      // PostgreSQL was told to stop as Custos exited, and does so on its own.
      const until = Date.now() + 15_000;
      while (isProcessAlive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      expect(isProcessAlive(pid)).toBe(false);
    } finally {
      // A failed run must not leave its server behind.
      if (pid && isProcessAlive(pid)) process.kill(pid, 'SIGKILL');
      if (pgdata) removeCluster(pgdata, dataDir);
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('runs Custos with no configuration, generates its keys 0600, and keeps data across a restart', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-embedded-'));
    const logs: string[] = [];
    const sink = new Writable({
      write(c: Buffer, _e, cb) {
        logs.push(c.toString());
        cb();
      },
    });
    const env = { CUSTOS_DATA_DIR: dataDir, PORT: '0', CUSTOS_LOG_LEVEL: 'info' };
    let pgdata = '';
    try {
      const first = await startCustos({
        config: loadConfig(env),
        logger: createLogger('info', sink),
        listen: false,
      });
      const fastify = first.app.getHttpAdapter().getInstance();
      const keyFile = path.join(dataDir, 'bootstrap-admin-key');
      const key = fs.readFileSync(keyFile, 'utf8').trim();
      expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
      expect(fs.statSync(path.join(dataDir, 'root-keys')).mode & 0o777).toBe(0o600);
      expect(logs.join('')).toContain(keyFile);
      expect(logs.join('')).not.toContain(key);
      expect(logs.join('')).toMatch(/LOCAL ROOT KEY/);
      const state = JSON.parse(fs.readFileSync(path.join(dataDir, 'embedded-postgres.json'), 'utf8'));
      pgdata = state.pgdata;
      // The generated key is in the audit trail (written through the audit module like every event).
      const [boot] = await first.runtime.dataSource.query<
        { outcome: string; actor_type: string; details: Record<string, unknown> }[]
      >(`SELECT outcome, actor_type, details FROM audit_events WHERE action = 'admin_key.bootstrap'`);
      expect(boot).toMatchObject({
        outcome: 'allowed',
        actor_type: 'system',
        details: { source: 'generated' },
      });
      const auth = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
      const tenant = (
        await fastify.inject({
          method: 'POST',
          url: '/v1/tenants',
          headers: auth,
          payload: '{"name":"local"}',
        })
      ).json();
      const admin = (
        await fastify.inject({
          method: 'POST',
          url: `/v1/tenants/${tenant.id}/admin-keys`,
          headers: auth,
          payload: '{"name":"a","role":"admin"}',
        })
      ).json();
      const put = await fastify.inject({
        method: 'PUT',
        url: `/v1/tenants/${tenant.id}/users/u/connections/openai`,
        headers: { authorization: `Bearer ${admin.key}`, 'content-type': 'application/json' },
        payload: '{"type":"api_key","apiKey":"example-key"}',
      });
      expect(put.statusCode).toBe(201);
      await first.close();

      const second = await startCustos({
        config: loadConfig(env),
        logger: createLogger('silent'),
        listen: false,
      });
      try {
        const list = await second.app
          .getHttpAdapter()
          .getInstance()
          .inject({
            method: 'GET',
            url: `/v1/tenants/${tenant.id}/users/u/connections`,
            headers: { authorization: `Bearer ${admin.key}` },
          });
        expect(list.statusCode).toBe(200);
        expect(list.json().items.map((i: { id: string }) => i.id)).toEqual([put.json().id]);
        expect(fs.readFileSync(keyFile, 'utf8').trim()).toBe(key); // not regenerated
      } finally {
        await second.close();
      }
    } finally {
      if (pgdata) removeCluster(pgdata, dataDir);
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
