/**
 * The `custos` CLI's administration commands and `custos doctor`, against the real database: each command
 * goes through the admin API's service with the API's own input schema, answers JSON, is audited as the
 * operator, and refuses bad input with the stable error code. Most run in this process (one set of services
 * for the file, as `openCliContext` builds it for a command); two spawn the real command line, for its exit
 * statuses and streams.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CliRefusal, CliUsageError, cliActor, runAdmin } from '../../src/cli/admin.js';
import { openCliContext, type CliContext } from '../../src/cli/context.js';
import { doctor } from '../../src/cli/doctor.js';
import { RootKeyring } from '../../src/common/root-keyring.js';
import { createDataSource, runMigrations } from '../../src/database/data-source.js';
import { databaseUrlFor, workerDatabaseName } from '../support/env.js';

const CLI = path.resolve(__dirname, '../../src/cli.ts');

const env: NodeJS.ProcessEnv = {
  PATH: process.env.PATH,
  HOME: process.env.HOME,
  DATABASE_URL: databaseUrlFor(workerDatabaseName()),
  CUSTOS_ROOT_KEYS: RootKeyring.generateSpec(),
};

let ctx: CliContext;
let dir: string;

beforeAll(async () => {
  // The CLI never migrates implicitly (`custos migrate` does); this file may be the first in its database.
  const ds = createDataSource(env.DATABASE_URL!, [], 2);
  await ds.initialize();
  await runMigrations(ds).finally(() => ds.destroy());
  ctx = await openCliContext(env);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-cli-'));
});
afterAll(async () => {
  await ctx.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs `custos <argv>` on this file's services; returns what it printed on stdout, parsed when JSON. */
async function custos(...argv: string[]): Promise<unknown> {
  let out = '';
  const write = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += chunk.toString();
    return true;
  });
  try {
    const status = await runAdmin(argv, async () => ({ ...ctx, close: async () => undefined }));
    expect(status).toBe(0);
  } finally {
    write.mockRestore();
  }
  try {
    return JSON.parse(out);
  } catch {
    return out;
  }
}

const refusal = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('the command succeeded');
    },
    (err: unknown) => err,
  );

function jsonFile(name: string, value: unknown): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify(value));
  return file;
}

describe('custos administration commands', () => {
  it('create, list and show tenants, audited as the operator', async () => {
    const created = (await custos('tenants', 'create', 'cli-acme')) as { id: string; name: string };
    expect(created).toMatchObject({ name: 'cli-acme', keyBackend: { type: 'managed' } });
    const list = (await custos('tenants', 'list')) as { items: { id: string }[] };
    expect(list.items.map((t) => t.id)).toContain(created.id);
    expect(await custos('tenants', 'show', created.id.toUpperCase())).toMatchObject({ id: created.id });
    const [event] = await ctx.app
      .get((await import('typeorm')).DataSource)
      .query(
        `SELECT actor_type, actor_id FROM audit_events WHERE tenant_id = $1 AND action = 'tenant.created'`,
        [created.id],
      );
    expect(event).toEqual({ actor_type: 'system', actor_id: cliActor().id });
    expect(cliActor().id).toMatch(/^cli:[A-Za-z0-9._-]{1,64}$/);
  });

  it('delete a tenant only with its name as confirmation', async () => {
    const t = (await custos('tenants', 'create', 'cli-doomed')) as { id: string };
    expect(await refusal(custos('tenants', 'delete', t.id))).toMatchObject({ code: 'validation_failed' });
    expect(await refusal(custos('tenants', 'delete', t.id, '--confirm', 'cli-other'))).toMatchObject({
      code: 'validation_failed',
    });
    expect(await custos('tenants', 'delete', t.id, '--confirm', 'cli-doomed')).toMatchObject({
      id: t.id,
      status: 'deleting',
    });
    expect(await custos('tenants', 'deletion-status', t.id)).toMatchObject({ status: 'deleting' });
    const [event] = await ctx.app
      .get((await import('typeorm')).DataSource)
      .query(
        `SELECT actor_id FROM audit_events WHERE tenant_id = $1 AND action = 'tenant.deletion_requested'`,
        [t.id],
      );
    expect(event).toEqual({ actor_id: cliActor().id });
  });

  it('issue, list and revoke admin keys; the key is shown once', async () => {
    const t = (await custos('tenants', 'create', 'cli-keys')) as { id: string };
    const issued = (await custos('admin-keys', 'issue', t.id, '--name', 'ops', '--role', 'auditor')) as {
      id: string;
      key: string;
    };
    expect(issued.key).toEqual(expect.any(String));
    const listed = JSON.stringify(await custos('admin-keys', 'list', t.id));
    expect(listed).toContain(issued.id);
    expect(listed).not.toContain(issued.key);
    expect(await custos('admin-keys', 'revoke', t.id, issued.id)).toMatchObject({ id: issued.id });
    const bad = await refusal(custos('admin-keys', 'issue', t.id, '--name', 'x', '--role', 'root'));
    expect(bad).toBeInstanceOf(CliRefusal);
    expect(bad).toMatchObject({ code: 'validation_failed', message: expect.stringContaining('role') });
  });

  it('create, rotate and delete a connector from a JSON file, validated like the API', async () => {
    const t = (await custos('tenants', 'create', 'cli-connectors')) as { id: string };
    const body = {
      name: 'agent',
      allowedProviders: ['github'],
      delegation: 'trusted',
      auth: { method: 'client_secret_basic' },
    };
    const c = (await custos('connectors', 'create', t.id, '--file', jsonFile('c.json', body))) as {
      id: string;
      clientSecret: string;
    };
    expect(c.clientSecret).toEqual(expect.any(String));
    const rotated = (await custos('connectors', 'rotate-secret', t.id, c.id)) as { clientSecret: string };
    expect(rotated.clientSecret).not.toBe(c.clientSecret);
    const wrong = await refusal(
      custos('connectors', 'create', t.id, '--file', jsonFile('bad.json', { ...body, extra: 1 })),
    );
    expect(wrong).toMatchObject({ code: 'validation_failed' });
    const notJson = path.join(dir, 'not.json');
    fs.writeFileSync(notJson, '{');
    expect(await refusal(custos('connectors', 'create', t.id, '--file', notJson))).toMatchObject({
      code: 'validation_failed',
      message: expect.stringContaining('not JSON'),
    });
    expect(await custos('connectors', 'delete', t.id, c.id)).toEqual({ deleted: true });
    expect(await refusal(custos('connectors', 'show', t.id, c.id))).toMatchObject({ code: 'not_found' });
  });

  it('shows and flushes a key backend, and exports a chain as NDJSON', async () => {
    const t = (await custos('tenants', 'create', 'cli-keys-backend')) as { id: string };
    expect(await custos('key-backend', 'show', t.id)).toMatchObject({ type: 'managed' });
    expect(await custos('key-backend', 'flush', t.id)).toMatchObject({ flushed: true });
    // Nothing of this tenant is sealed yet (no sealer runs here): the export is its header line alone.
    expect(await custos('audit', 'export', t.id)).toMatchObject({
      kind: 'export',
      format: 'custos-audit/1',
      chain: `tenant:${t.id}`,
    });
    expect(await refusal(custos('audit', 'export', t.id, '--from', 'yesterday'))).toMatchObject({
      code: 'validation_failed',
    });
  });

  it('refuses a wrong command line before opening anything', async () => {
    const open = jest.fn();
    for (const argv of [
      ['tenants'],
      ['tenants', 'burn'],
      ['tenants', 'show'],
      ['tenants', 'show', 'a', 'b'],
      ['admin-keys', 'list', 'x', '--force'],
    ]) {
      expect(await refusal(runAdmin(argv, open))).toBeInstanceOf(CliUsageError);
    }
    expect(open).not.toHaveBeenCalled();
    expect(await refusal(custos('tenants', 'show', 'not-a-uuid'))).toMatchObject({
      code: 'validation_failed',
    });
  });
});

describe('custos doctor', () => {
  it('reports each check, and what is wrong', async () => {
    const ok = await doctor(env, () => openCliContext(env));
    const by = Object.fromEntries(ok.map((c) => [c.name, c]));
    expect(by.configuration.status).toBe('ok');
    expect(by.database).toMatchObject({ status: 'ok', detail: 'reachable and migrated' });
    expect(by['key backend (platform)'].status).toBe('ok');
    expect(by['audit trail protection'].status).toBe('warn'); // the tests' role is a superuser
    expect(by.redis.status).toBe('ok');

    const bad = await doctor({ ...env, REDIS_URL: 'redis://127.0.0.1:1' }, () =>
      openCliContext({ ...env, REDIS_URL: 'redis://127.0.0.1:1' }),
    );
    expect(bad.find((c) => c.name === 'redis')).toMatchObject({ status: 'fail' });

    const broken = await doctor({ ...env, CUSTOS_ROOT_KEYS: 'nonsense' }, () => openCliContext(env));
    expect(broken).toEqual([
      expect.objectContaining({
        name: 'configuration',
        status: 'fail',
        detail: expect.stringContaining('CUSTOS_ROOT_KEYS'),
      }),
    ]);
    expect(JSON.stringify(broken)).not.toContain('nonsense');
  });
});

describe('the custos command line', () => {
  const run = (...args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { env });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });

  it('answers JSON on stdout with exit 0, and a refusal with its code on stderr with exit 1', async () => {
    const created = await run('tenants', 'create', 'cli-spawned');
    expect(created.code).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({ name: 'cli-spawned' });
    const missing = await run('tenants', 'show', '7a3a9a3e-4b8c-4c7f-9a51-1d8f1e2b3c4d');
    expect(missing).toMatchObject({ code: 1, stdout: '' });
    expect(missing.stderr).toMatch(/^custos tenants show: not_found: /);
  }, 60_000);
});
