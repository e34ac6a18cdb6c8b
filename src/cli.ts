#!/usr/bin/env node
/**
 * The `custos` command line (dist/src/cli.js, the package's `custos` bin):
 *   custos migrate                                  applies the database migrations (npm run migration:run)
 *   custos audit verify <export> --jwks <file|url>  checks a sealed audit export (docs/audit-format.md)
 *   custos doctor                                   checks the configuration and what it points at
 *   custos tenants|admin-keys|connectors|identity-providers|key-backend|audit export …
 *                                                   the admin API's operations, through the same services
 *                                                   (cli/admin.ts), configured by the same CUSTOS_* variables
 * `audit verify` loads only the audit format, so it works offline on a machine with nothing configured: the
 * configuration, database, Nest and embedded PostgreSQL modules are imported by the other commands alone.
 *
 * Exit status: 0 done; 1 refused (bad input, unknown record: the stable error code is printed) or, for verify
 * and doctor, failed; 2 a wrong command line or configuration, or an unreadable input; 3 Custos could not do it
 * (database, key backend or Redis unavailable, or an unexpected error).
 */
import fs from 'node:fs';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import { auditKeysFrom, describeSummary, verifyExport } from './audit/audit-format.js';

const USAGE = `usage: custos <command>

commands:
  migrate                                       apply the database migrations (configured by CUSTOS_* variables)
  audit verify <export-file> --jwks <file|url>  verify a sealed audit export (custos-audit/1) against the
                                                chain's JWKS, offline (- reads the export from stdin);
                                                exit 0 verified, 1 failed, 2 unreadable
  doctor [--json]                               check the configuration, database, key backends, Redis,
                                                outbound allow-list and audit sealing; exit 1 on a failure
  help                                          show this help

administration (the admin API's operations, as the platform operator; JSON answers on stdout):
%ADMIN%
`;

const VERIFY_USAGE = 'usage: custos audit verify <export-file | -> --jwks <file|url>\n';

const JWKS_TIMEOUT_MS = 10_000;

/** A wrong command line: the usage goes to stderr and the exit status is 2. */
class UsageError extends Error {}

/** An input that could not be read, so nothing was verified: exit status 2, unlike a failed verification. */
class InputError extends Error {}

// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/g;

/** The export and the JWKS can say anything; no control character of theirs reaches the terminal. */
function printable(text: string): string {
  return text.replace(CONTROL_CHARACTERS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

async function migrate(): Promise<number> {
  await import('reflect-metadata');
  const { ConfigError, loadConfig } = await import('./config/config.js');
  const { createLogger } = await import('./common/logger.js');
  const { createDataSource, runMigrations } = await import('./database/data-source.js');
  const { entities } = await import('./entities.js');
  const { startEmbeddedPostgres } = await import('./database/embedded-postgres.js');
  try {
    const config = loadConfig();
    const log = createLogger(config.logLevel);
    const embedded = config.databaseUrl ? undefined : await startEmbeddedPostgres(config.dataDir, log);
    const ds = createDataSource(config.databaseUrl ?? embedded!.databaseUrl, entities, 2);
    try {
      await ds.initialize();
      const ran = await runMigrations(ds, { ownerUrl: config.migrationDatabaseUrl });
      log.info({ migrations: ran }, ran.length ? 'migrations applied' : 'database is up to date');
    } finally {
      await ds.destroy().catch(() => undefined);
      await embedded?.stop();
    }
    return 0;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // Named variable, never its value; checked before the embedded PostgreSQL (if any) starts.
    process.stderr.write(`custos: configuration error: ${err.message.replace(/[\r\n]+/g, ' ')}\n`);
    return 2;
  }
}

/** The JWKS document from a file, or from an http(s) URL that the operator gave. */
async function loadJwks(source: string): Promise<unknown> {
  let text: string;
  if (/^https?:\/\//i.test(source)) {
    let res: Response;
    try {
      res = await fetch(source, {
        signal: AbortSignal.timeout(JWKS_TIMEOUT_MS),
        headers: { accept: 'application/json' },
      });
    } catch (err) {
      const why =
        (err as Error).name === 'TimeoutError'
          ? `no answer within ${JWKS_TIMEOUT_MS / 1000} s`
          : describe(err);
      throw new InputError(`cannot fetch the JWKS ${source}: ${why}`);
    }
    if (!res.ok) throw new InputError(`cannot fetch the JWKS ${source}: HTTP ${res.status}`);
    text = await res.text();
  } else {
    try {
      text = await fs.promises.readFile(source, 'utf8');
    } catch (err) {
      throw new InputError(`cannot read the JWKS ${source}: ${describe(err)}`);
    }
  }
  let jwks: unknown;
  try {
    jwks = JSON.parse(text);
    auditKeysFrom(jwks);
  } catch (err) {
    throw new InputError(`the JWKS ${source} is unusable: ${describe(err)}`);
  }
  return jwks;
}

function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException & { cause?: { message?: string } };
  return e.code === 'ENOENT' ? 'no such file' : (e.cause?.message ?? e.message);
}

async function auditVerify(args: string[]): Promise<number> {
  let values: { jwks?: string; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args,
      options: { jwks: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(VERIFY_USAGE);
    return 0;
  }
  const [file, ...extra] = positionals;
  if (!file) throw new UsageError('the export file is missing');
  if (extra.length) throw new UsageError(`unexpected argument ${extra[0]}`);
  if (!values.jwks) throw new UsageError('--jwks <file|url> is missing');

  const jwks = await loadJwks(values.jwks);
  let input: NodeJS.ReadableStream & { destroy(): void };
  if (file === '-') {
    // `curl … | custos audit verify - --jwks …`
    process.stdin.setEncoding('utf8');
    input = process.stdin;
  } else {
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(file, 'r');
    } catch (err) {
      throw new InputError(`cannot read the export ${file}: ${describe(err)}`);
    }
    input = handle.createReadStream({ encoding: 'utf8' });
  }
  const lines = readline.createInterface({ input, crlfDelay: Infinity });
  try {
    const result = await verifyExport(lines, jwks);
    if (result.ok) {
      process.stdout.write(`${printable(describeSummary(result.summary))}\n`);
      return 0;
    }
    process.stderr.write(
      `FAILED: ${printable(result.problem)}\n` +
        (result.eventId ? `first bad event: ${printable(result.eventId)}\n` : '') +
        `found at line ${result.line} of ${printable(file)}\n`,
    );
    return 1;
  } catch (err) {
    // A read error part way through (the file is a directory, the disk failed) proves nothing either way.
    throw new InputError(`cannot read the export ${file}: ${describe(err)}`);
  } finally {
    lines.close();
    input.destroy();
  }
}

/** The administration commands' module, loaded (with Nest and the services) only when one is run. */
const admin = () => import('./cli/admin.js');

async function openContext() {
  await import('reflect-metadata');
  const { openCliContext } = await import('./cli/context.js');
  return openCliContext();
}

async function usage(): Promise<string> {
  return USAGE.replace('%ADMIN%', (await admin()).adminUsage());
}

async function runDoctor(args: string[]): Promise<number> {
  let values: { json?: boolean };
  try {
    ({ values } = parseArgs({ args, options: { json: { type: 'boolean' } }, allowPositionals: false }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  await import('reflect-metadata');
  const { doctor, formatChecks } = await import('./cli/doctor.js');
  const checks = await doctor(undefined, openContext);
  process.stdout.write(values.json ? `${JSON.stringify({ checks }, null, 2)}\n` : formatChecks(checks));
  return checks.some((c) => c.status === 'fail') ? 1 : 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command !== 'audit' || rest[0] === 'export') {
    const { isAdminGroup, runAdmin } = await admin();
    if (isAdminGroup(command) && (command !== 'audit' || rest[0] === 'export')) {
      return runAdmin(argv, openContext);
    }
  }
  switch (command) {
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(await usage());
      return 0;
    case 'migrate':
      return migrate();
    case 'doctor':
      return runDoctor(rest);
    case 'audit':
      if (rest[0] === 'verify') return auditVerify(rest.slice(1));
      throw new UsageError(
        rest[0] ? `unknown audit command ${rest[0]}` : 'audit needs a command: verify, export',
      );
    case undefined:
      throw new UsageError('a command is missing');
    default:
      throw new UsageError(`unknown command ${command}`);
  }
}

const argv = process.argv.slice(2);
main(argv).then(
  (status) => {
    // Not process.exit(): it could cut off output still on its way to a pipe.
    process.exitCode = status;
  },
  async (err: unknown) => {
    const { CliRefusal, CliUsageError } = await admin();
    const { ConfigError } = await import('./config/config.js');
    if (err instanceof UsageError) {
      process.stderr.write(
        `custos: ${printable(err.message)}\n${argv[0] === 'audit' ? VERIFY_USAGE : await usage()}`,
      );
      process.exitCode = 2;
    } else if (err instanceof CliUsageError) {
      process.stderr.write(`custos: ${printable(err.message)}\n${err.usage}`);
      process.exitCode = 2;
    } else if (err instanceof InputError) {
      process.stderr.write(`custos audit verify: ${printable(err.message)}\n`);
      process.exitCode = 2;
    } else if (err instanceof ConfigError) {
      // Named variable, never its value.
      process.stderr.write(`custos: configuration error: ${err.message.replace(/[\r\n]+/g, ' ')}\n`);
      process.exitCode = 2;
    } else if (err instanceof CliRefusal) {
      process.stderr.write(`custos ${argv.slice(0, 2).join(' ')}: ${err.code}: ${printable(err.message)}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`custos ${argv[0]}: ${printable((err as Error).message)}\n`);
      process.exit(3);
    }
  },
);
