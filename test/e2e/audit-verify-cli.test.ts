/**
 * `custos audit verify` as an operator runs it: the real CLI in its own Node process, with no configuration
 * and no database, on a sealed export and a JWKS written to a temporary folder (or the JWKS served over
 * HTTP). Exit status 0 with one `OK` line, 1 naming the first bad event, 2 for a usage error or an input that
 * cannot be read.
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import {
  AUDIT_FORMAT,
  entryHash,
  genesisHead,
  nextHead,
  publicJwk,
  signCheckpoint,
  type CheckpointLine,
  type EventLine,
  type ExportHeader,
} from '../../src/audit/audit-format.js';

const ROOT = path.join(__dirname, '../..');
const CLI = path.join(ROOT, 'src/cli.ts');

const EVENTS = 2_500;
const PER_CHECKPOINT = 250;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI from source, as the other process tests do, with nothing but PATH and HOME set. */
function custos(...args: string[]): Promise<Run> {
  return custosWithInput(null, ...args);
}

/** As custos(), with `stdin` (a file) as its standard input. */
function custosWithInput(stdin: string | null, ...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, HOME: process.env.HOME },
      stdio: [stdin === null ? 'ignore' : fs.openSync(stdin, 'r'), 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A tenant chain of EVENTS events, sealed PER_CHECKPOINT at a time by a key generated for this run. */
function aSealedExport(): { lines: (ExportHeader | EventLine | CheckpointLine)[]; jwks: unknown } {
  const { privateKey } = crypto.generateKeyPairSync('ed25519');
  const kid = crypto.randomUUID();
  const chain = `tenant:${crypto.randomUUID()}`;
  const lines: (ExportHeader | EventLine | CheckpointLine)[] = [
    {
      kind: 'export',
      format: AUDIT_FORMAT,
      chain,
      from: null,
      to: null,
      exportedAt: '2026-06-01T00:00:00.000Z',
    },
  ];
  let head = genesisHead(chain);
  for (let seq = 1; seq * PER_CHECKPOINT <= EVENTS; seq++) {
    const prevHead = head.toString('hex');
    const firstPos = (seq - 1) * PER_CHECKPOINT + 1;
    for (let pos = firstPos; pos < firstPos + PER_CHECKPOINT; pos++) {
      const event: EventLine = {
        kind: 'event',
        chain,
        pos,
        id: String(pos * 3),
        occurredAt: new Date(Date.UTC(2026, 4, 1) + pos * 1000).toISOString().replace('Z', '123Z'),
        action: 'token.exchange',
        outcome: pos % 7 ? 'allowed' : 'denied',
        actor: { type: 'connector', id: 'ci-bot' },
        subjectUserId: `user-${pos % 11}`,
        connectionId: null,
        provider: 'github',
        requestId: `req-${pos}`,
        details: { grantType: 'token-exchange', requestedScopes: ['repo'] },
      };
      head = nextHead(head, entryHash(event));
      lines.push({ ...event, head: head.toString('hex') });
    }
    const lastPos = firstPos + PER_CHECKPOINT - 1;
    lines.push(
      signCheckpoint(
        {
          kind: 'checkpoint',
          format: AUDIT_FORMAT,
          chain,
          seq,
          firstPos,
          lastPos,
          count: PER_CHECKPOINT,
          firstEventId: String(firstPos * 3),
          lastEventId: String(lastPos * 3),
          prevHead,
          head: head.toString('hex'),
          sealedAt: new Date(Date.UTC(2026, 4, 2) + seq * 60_000).toISOString(),
          kid,
        },
        privateKey,
      ),
    );
  }
  return { lines, jwks: { keys: [publicJwk(privateKey, kid, new Date('2026-05-01T00:00:00Z'), null)] } };
}

/** The relative modules a file imports statically (import and export … from), and the packages it names. */
function staticImports(file: string): string[] {
  const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest);
  return source.statements.flatMap((s) =>
    (ts.isImportDeclaration(s) || ts.isExportDeclaration(s)) &&
    s.moduleSpecifier &&
    ts.isStringLiteral(s.moduleSpecifier)
      ? [s.moduleSpecifier.text]
      : [],
  );
}

describe('custos audit verify', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-audit-verify-'));
  const exportFile = path.join(dir, 'export.ndjson');
  const tamperedFile = path.join(dir, 'tampered.ndjson');
  const jwksFile = path.join(dir, 'jwks.json');
  let jwksBody = '';
  let server: http.Server;
  let jwksUrl = '';
  const tamperedPos = 1234;

  beforeAll(async () => {
    const { lines, jwks } = aSealedExport();
    jwksBody = JSON.stringify(jwks);
    fs.writeFileSync(jwksFile, jwksBody);
    fs.writeFileSync(exportFile, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    const tampered = lines.map((l) =>
      l.kind === 'event' && l.pos === tamperedPos ? { ...l, outcome: 'allowed', details: {} } : l,
    );
    fs.writeFileSync(tamperedFile, tampered.map((l) => JSON.stringify(l)).join('\n') + '\n');

    server = http.createServer((req, res) => {
      if (req.url === '/jwks.json') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(jwksBody);
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('prints one line starting with OK and exits 0 for an honest export', async () => {
    const run = await custos('audit', 'verify', exportFile, '--jwks', jwksFile);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout).toMatch(
      /^OK tenant:[0-9a-f-]{36}: 2500 events \(positions 1–2500\) in 10 checkpoints/,
    );
    expect(run.stdout).toMatch(/; last sealed 2026-05-02T00:10:00\.000Z; head [0-9a-f]{64}\n$/);
    expect(run.stdout.split('\n')).toHaveLength(2);
  }, 60_000);

  it('exits 1 for a tampered export, naming the first bad event and the line on stderr', async () => {
    const run = await custos('audit', 'verify', tamperedFile, '--jwks', jwksFile);
    expect(run).toMatchObject({ code: 1, stdout: '' });
    const line = tamperedPos + Math.floor((tamperedPos - 1) / PER_CHECKPOINT) + 1;
    expect(run.stderr).toBe(
      `FAILED: event ${tamperedPos * 3} (position ${tamperedPos}) does not match its seal: it was altered, or an ` +
        `event before it was removed, inserted or reordered\n` +
        `first bad event: ${tamperedPos * 3}\n` +
        `found at line ${line} of ${tamperedFile}\n`,
    );
  }, 60_000);

  it('reads the export from standard input when it is given as -', async () => {
    const honest = await custosWithInput(exportFile, 'audit', 'verify', '-', '--jwks', jwksFile);
    expect(honest).toMatchObject({ code: 0, stderr: '' });
    expect(honest.stdout).toMatch(/^OK tenant:/);
    const tampered = await custosWithInput(tamperedFile, 'audit', 'verify', '-', '--jwks', jwksFile);
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toContain(`first bad event: ${tamperedPos * 3}`);
  }, 60_000);

  it('verifies with a JWKS served over HTTP', async () => {
    const run = await custos('audit', 'verify', exportFile, '--jwks', jwksUrl);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout).toMatch(/^OK tenant:/);
  }, 60_000);

  it.each([
    ['no --jwks', [exportFile], /--jwks <file\|url> is missing/],
    ['no export file', ['--jwks', jwksFile], /the export file is missing/],
    ['an unknown option', [exportFile, '--jwks', jwksFile, '--fast'], /Unknown option '--fast'/],
  ])(
    'exits 2 with the usage for %s',
    async (_what, args, message) => {
      const run = await custos('audit', 'verify', ...args);
      expect(run).toMatchObject({ code: 2, stdout: '' });
      expect(run.stderr).toMatch(message);
      expect(run.stderr).toContain('usage: custos audit verify <export-file | -> --jwks <file|url>');
    },
    60_000,
  );

  it('exits 2, not 1, when an input cannot be read: nothing was verified either way', async () => {
    const missing = await custos('audit', 'verify', path.join(dir, 'nope.ndjson'), '--jwks', jwksFile);
    expect(missing).toMatchObject({ code: 2, stdout: '' });
    expect(missing.stderr).toMatch(/cannot read the export .*nope\.ndjson: no such file/);
    const notFound = await custos('audit', 'verify', exportFile, '--jwks', jwksUrl.replace('jwks.json', 'x'));
    expect(notFound).toMatchObject({ code: 2, stdout: '' });
    expect(notFound.stderr).toMatch(/cannot fetch the JWKS http:.*: HTTP 404/);
  }, 60_000);

  it('lists its commands for --help and help', async () => {
    for (const arg of ['--help', 'help']) {
      const run = await custos(arg);
      expect(run).toMatchObject({ code: 0, stderr: '' });
      expect(run.stdout).toContain('migrate');
      expect(run.stdout).toContain('audit verify <export-file> --jwks <file|url>');
    }
    expect(await custos()).toMatchObject({ code: 2, stdout: '' });
  }, 60_000);

  it('imports nothing but Node built-ins and the audit format, so it runs where nothing is configured', () => {
    const files = new Set<string>();
    const packages = new Set<string>();
    const visit = (file: string) => {
      if (files.has(file)) return;
      files.add(file);
      for (const spec of staticImports(file)) {
        if (spec.startsWith('.')) visit(path.resolve(path.dirname(file), spec.replace(/\.js$/, '.ts')));
        else packages.add(spec);
      }
    };
    visit(CLI);
    expect([...files].map((f) => path.relative(ROOT, f)).sort()).toEqual([
      'src/audit/audit-format.ts',
      'src/cli.ts',
    ]);
    expect([...packages].filter((p) => !p.startsWith('node:'))).toEqual(['canonicalize']);
  });
});
