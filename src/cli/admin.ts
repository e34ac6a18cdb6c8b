/**
 * The `custos` CLI's administration commands: each one calls the service the admin API's route calls, with the
 * same input schema, so the CLI and the API cannot drift apart. The operator acts with the platform's rights
 * (whoever holds the database URL and the root keys holds everything anyway) and is audited as
 * `{type: "system", id: "cli:<os user>"}`. Answers are JSON on stdout; refusals name their stable error code.
 */
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { z } from 'zod';
import { AuditExport } from '../audit/audit-export.js';
import type { Actor } from '../audit/audit.service.js';
import { CustosException } from '../common/errors.js';
import { keyBackendInputSchema } from '../crypto/key-backend.dto.js';
import { KeyBackendService } from '../crypto/key-backend.service.js';
import { createAdminKeySchema } from '../identity/admin-keys.dto.js';
import { AdminKeysService } from '../identity/admin-keys.service.js';
import {
  createConnectorSchema,
  IDENTITY_PROVIDER_NAME,
  saveIdentityProviderSchema,
  updateConnectorSchema,
} from '../identity/connectors.dto.js';
import { ConnectorsService } from '../identity/connectors.service.js';
import { IdentityProvidersService } from '../identity/identity-providers.service.js';
import { createTenantSchema } from '../tenants/tenants.dto.js';
import { TenantsService } from '../tenants/tenants.service.js';
import type { CliContext } from './context.js';

/** A wrong command line: exit status 2 with the command's usage. */
export class CliUsageError extends Error {
  constructor(
    message: string,
    readonly usage: string,
  ) {
    super(message);
  }
}

/** The operation was refused (bad input, unknown record, conflict): exit status 1, with the stable code. */
export class CliRefusal extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type Options = NonNullable<ParseArgsConfig['options']>;

interface Command {
  /** Positional arguments, by name, in order. */
  args: string[];
  options?: Options;
  summary: string;
  /** The answer to print as JSON, or undefined when the command wrote its own output. */
  run(ctx: CliContext, args: Record<string, string>, opts: Record<string, unknown>): Promise<unknown>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function tenantId(raw: string): string {
  if (!UUID.test(raw)) throw new CliRefusal('validation_failed', `"${raw}" is not a tenant id (a UUID)`);
  return raw.toLowerCase();
}

function uuid(raw: string, what: string): string {
  if (!UUID.test(raw)) throw new CliRefusal('validation_failed', `"${raw}" is not ${what} (a UUID)`);
  return raw.toLowerCase();
}

function idpName(raw: string): string {
  if (!IDENTITY_PROVIDER_NAME.test(raw)) {
    throw new CliRefusal(
      'validation_failed',
      `"${raw}" is not an identity provider name (a-z, 0-9, _ and -)`,
    );
  }
  return raw;
}

/** Who the operator is, for the audit trail: the OS user, reduced to safe characters. */
export function cliActor(): Actor {
  let user: string;
  try {
    user = os.userInfo().username;
  } catch {
    user = `uid-${process.getuid?.() ?? 'unknown'}`;
  }
  const safe = user.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64) || 'unknown';
  return { type: 'system', id: `cli:${safe}` };
}

/** The JSON document of `--file <path>` (`-`: stdin), validated with the admin API's own schema. */
async function readInput<S extends z.ZodType>(file: unknown, schema: S): Promise<z.output<S>> {
  if (typeof file !== 'string') throw new CliRefusal('validation_failed', '--file <path|-> is required');
  let text: string;
  try {
    text = file === '-' ? await readStdin() : await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    throw new CliRefusal('validation_failed', `cannot read ${file}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new CliRefusal('validation_failed', `${file} is not JSON`);
  }
  return parsed(schema, value);
}

function parsed<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) {
    const issues = result.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`);
    throw new CliRefusal('validation_failed', issues.join('; '));
  }
  return result.data;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

const fileOption: Options = { file: { type: 'string', short: 'f' } };

const get = <T>(ctx: CliContext, cls: new (...args: never[]) => T): T => ctx.app.get(cls, { strict: false });

const commands: Record<string, Record<string, Command>> = {
  tenants: {
    create: {
      args: ['name'],
      summary: 'create a tenant',
      run: (ctx, a) =>
        get(ctx, TenantsService).createTenant(cliActor(), parsed(createTenantSchema, { name: a.name }).name),
    },
    list: {
      args: [],
      summary: 'list the tenants',
      run: async (ctx) => ({ items: await get(ctx, TenantsService).listTenants() }),
    },
    show: {
      args: ['tenant-id'],
      summary: 'show a tenant',
      run: (ctx, a) => get(ctx, TenantsService).getTenant(tenantId(a['tenant-id'])),
    },
    delete: {
      args: ['tenant-id'],
      options: { confirm: { type: 'string' } },
      summary:
        'delete a tenant (--confirm <its current name>): its keys and connectors stop at once, its tokens are revoked at providers, then its data keys are destroyed (crypto-shredding); its audit trail stays',
      run: (ctx, a, o) =>
        get(ctx, TenantsService).deleteTenant(cliActor(), tenantId(a['tenant-id']), {
          confirmName: typeof o.confirm === 'string' ? o.confirm : '',
        }),
    },
    'deletion-status': {
      args: ['tenant-id'],
      summary: "a deletion's progress (not_found once the tenant is shredded)",
      run: (ctx, a) => get(ctx, TenantsService).deletionStatus(tenantId(a['tenant-id'])),
    },
  },
  'admin-keys': {
    issue: {
      args: ['tenant-id'],
      options: { name: { type: 'string' }, role: { type: 'string' } },
      summary: 'issue a tenant key, --role admin or auditor; the key is shown once',
      run: (ctx, a, o) => {
        const body = parsed(createAdminKeySchema, { name: o.name, role: o.role });
        return get(ctx, AdminKeysService).issue(cliActor(), tenantId(a['tenant-id']), body.name, body.role);
      },
    },
    list: {
      args: ['tenant-id'],
      summary: "list a tenant's admin keys (never the keys themselves)",
      run: (ctx, a) => get(ctx, AdminKeysService).list(tenantId(a['tenant-id'])),
    },
    revoke: {
      args: ['tenant-id', 'key-id'],
      summary: 'revoke an admin key at once',
      run: (ctx, a) =>
        get(ctx, AdminKeysService).revoke(
          cliActor(),
          tenantId(a['tenant-id']),
          uuid(a['key-id'], 'a key id'),
        ),
    },
  },
  connectors: {
    list: {
      args: ['tenant-id'],
      summary: "list a tenant's connectors",
      run: async (ctx, a) => ({
        items: await get(ctx, ConnectorsService).listConnectors(tenantId(a['tenant-id'])),
      }),
    },
    show: {
      args: ['tenant-id', 'connector-id'],
      summary: 'show a connector',
      run: (ctx, a) =>
        get(ctx, ConnectorsService).getConnector(
          tenantId(a['tenant-id']),
          uuid(a['connector-id'], 'a connector id'),
        ),
    },
    create: {
      args: ['tenant-id'],
      options: fileOption,
      summary:
        'create a connector from --file <json|-> (the body of POST …/connectors); a secret is shown once',
      run: async (ctx, a, o) =>
        get(ctx, ConnectorsService).createConnector(
          cliActor(),
          tenantId(a['tenant-id']),
          await readInput(o.file, createConnectorSchema),
        ),
    },
    update: {
      args: ['tenant-id', 'connector-id'],
      options: fileOption,
      summary: 'change a connector from --file <json|-> (the body of PATCH …/connectors/{id})',
      run: async (ctx, a, o) =>
        get(ctx, ConnectorsService).updateConnector(
          cliActor(),
          tenantId(a['tenant-id']),
          uuid(a['connector-id'], 'a connector id'),
          await readInput(o.file, updateConnectorSchema),
        ),
    },
    'rotate-secret': {
      args: ['tenant-id', 'connector-id'],
      summary: "issue a connector's new client secret (shown once)",
      run: (ctx, a) =>
        get(ctx, ConnectorsService).rotateClientSecret(
          cliActor(),
          tenantId(a['tenant-id']),
          uuid(a['connector-id'], 'a connector id'),
        ),
    },
    delete: {
      args: ['tenant-id', 'connector-id'],
      summary: 'delete a connector',
      run: async (ctx, a) => {
        await get(ctx, ConnectorsService).deleteConnector(
          cliActor(),
          tenantId(a['tenant-id']),
          uuid(a['connector-id'], 'a connector id'),
        );
        return { deleted: true };
      },
    },
  },
  'identity-providers': {
    list: {
      args: ['tenant-id'],
      summary: "list a tenant's identity providers",
      run: async (ctx, a) => ({
        items: await get(ctx, IdentityProvidersService).listIdentityProviders(tenantId(a['tenant-id'])),
      }),
    },
    show: {
      args: ['tenant-id', 'name'],
      summary: 'show an identity provider',
      run: (ctx, a) =>
        get(ctx, IdentityProvidersService).getIdentityProvider(tenantId(a['tenant-id']), idpName(a.name)),
    },
    set: {
      args: ['tenant-id', 'name'],
      options: fileOption,
      summary:
        'create or replace an identity provider from --file <json|-> (the body of PUT …/identity-providers/{name})',
      run: async (ctx, a, o) => {
        const input = await readInput(o.file, saveIdentityProviderSchema);
        const { identityProvider } = await get(ctx, IdentityProvidersService).saveIdentityProvider(
          cliActor(),
          tenantId(a['tenant-id']),
          idpName(a.name),
          input,
        );
        return identityProvider;
      },
    },
    delete: {
      args: ['tenant-id', 'name'],
      summary: 'delete an identity provider',
      run: async (ctx, a) => {
        await get(ctx, IdentityProvidersService).deleteIdentityProvider(
          cliActor(),
          tenantId(a['tenant-id']),
          idpName(a.name),
        );
        return { deleted: true };
      },
    },
  },
  'key-backend': {
    show: {
      args: ['tenant-id'],
      summary: "show a tenant's key backend and its data keys' state",
      run: (ctx, a) => get(ctx, KeyBackendService).view(tenantId(a['tenant-id'])),
    },
    set: {
      args: ['tenant-id'],
      options: fileOption,
      summary: 'choose a key backend from --file <json|-> (the body of PUT …/key-backend); data keys migrate',
      run: async (ctx, a, o) =>
        get(ctx, KeyBackendService).configure(
          cliActor(),
          tenantId(a['tenant-id']),
          await readInput(o.file, keyBackendInputSchema),
        ),
    },
    rotate: {
      args: ['tenant-id'],
      summary: 'start a new data-key epoch (new credentials are sealed under a new data key)',
      run: (ctx, a) => get(ctx, KeyBackendService).rotateTenantKey(cliActor(), tenantId(a['tenant-id'])),
    },
    flush: {
      args: ['tenant-id'],
      summary: "drop the tenant's cached data keys in every process",
      run: (ctx, a) => get(ctx, KeyBackendService).flush(cliActor(), tenantId(a['tenant-id'])),
    },
    'resume-migration': {
      args: ['tenant-id'],
      summary: 'resume a failed data-key migration',
      run: (ctx, a) => get(ctx, KeyBackendService).resumeMigration(cliActor(), tenantId(a['tenant-id'])),
    },
    'cancel-migration': {
      args: ['tenant-id'],
      summary: 'cancel a stuck data-key migration (back to the previous backend)',
      run: (ctx, a) => get(ctx, KeyBackendService).cancelMigration(cliActor(), tenantId(a['tenant-id'])),
    },
  },
  audit: {
    export: {
      args: ['tenant-id|platform'],
      options: { from: { type: 'string' }, to: { type: 'string' } },
      summary:
        "write a chain's sealed trail (custos-audit/1 NDJSON) to stdout, a deleted tenant's too; --from and --to (ISO 8601) are optional",
      run: async (ctx, a, o) => {
        const chain = a['tenant-id|platform'];
        const when = (v: unknown, name: string) => {
          if (typeof v !== 'string') return null;
          const d = new Date(v);
          if (Number.isNaN(d.getTime())) throw new CliRefusal('validation_failed', `--${name} is not a date`);
          return d;
        };
        const lines = await get(ctx, AuditExport).open(chain === 'platform' ? null : tenantId(chain), {
          from: when(o.from, 'from'),
          to: when(o.to, 'to'),
        });
        for await (const chunk of lines) {
          if (!process.stdout.write(chunk)) await new Promise((r) => process.stdout.once('drain', r));
        }
        return undefined;
      },
    },
  },
};

/** Whether `custos <group> …` is one of these commands. */
export function isAdminGroup(group: string | undefined): boolean {
  return group !== undefined && Object.hasOwn(commands, group);
}

/** A command's synopsis: `group verb <arg> … [--option <value>] …`. */
function synopsis(group: string, verb: string, c: Command): string {
  const args = c.args.map((n) => `<${n}>`);
  const opts = Object.entries(c.options ?? {}).map(([name, o]) =>
    o.type === 'boolean' ? `[--${name}]` : `--${name} <${name === 'file' ? 'json|-' : name}>`,
  );
  return [group, verb, ...args, ...opts].join(' ');
}

export function adminUsage(): string {
  const lines: string[] = [];
  for (const [group, verbs] of Object.entries(commands)) {
    for (const [verb, c] of Object.entries(verbs)) {
      lines.push(`  ${synopsis(group, verb, c)}\n      ${c.summary}`);
    }
  }
  return lines.join('\n');
}

/**
 * Runs `custos <group> <verb> …`: parses the arguments (usage errors before anything opens), opens the
 * services, runs the command and prints its answer. The caller maps CliUsageError, CliRefusal and
 * CustosException to exit statuses.
 */
export async function runAdmin(argv: string[], open: () => Promise<CliContext>): Promise<number> {
  const [group, verb, ...rest] = argv;
  const verbs = commands[group];
  const usage = `usage:\n${Object.entries(verbs)
    .map(([v, c]) => `  custos ${synopsis(group, v, c)}`)
    .join('\n')}\n`;
  const command = verb !== undefined && Object.hasOwn(verbs, verb) ? verbs[verb] : undefined;
  if (!command) {
    throw new CliUsageError(verb ? `unknown ${group} command ${verb}` : `${group} needs a command`, usage);
  }
  let values: Record<string, unknown>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: rest,
      options: command.options ?? {},
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    throw new CliUsageError((err as Error).message, usage);
  }
  if (positionals.length !== command.args.length) {
    throw new CliUsageError(
      positionals.length < command.args.length
        ? `<${command.args[positionals.length]}> is missing`
        : `unexpected argument ${positionals[command.args.length]}`,
      usage,
    );
  }
  const args = Object.fromEntries(command.args.map((name, i) => [name, positionals[i]]));
  const ctx = await open();
  try {
    const answer = await command.run(ctx, args, values);
    if (answer !== undefined) process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
    return 0;
  } catch (err) {
    if (err instanceof CustosException) throw new CliRefusal(err.code, err.message);
    throw err;
  } finally {
    await ctx.close();
  }
}
