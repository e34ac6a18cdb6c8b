/**
 * The README's and the quickstart's shell snippets, run as a reader runs them: every ```sh block of README.md,
 * then of docs/quickstart.md, in order, in one `bash -e -o pipefail`, against a real Custos listening on a free
 * port (`http://127.0.0.1:8080` in a snippet stands for it), from a folder whose `.custos/bootstrap-admin-key`
 * holds the platform admin key, as after a first `npm start`. Each block must exit 0, and what it prints last
 * must be what the doc says it prints.
 *
 * The rules a doc follows (docs/development.md, "Documentation"):
 * - `<!-- not run: <reason> -->` on the line before a ```sh block keeps it out (it starts a server and stays in
 *   the foreground, or needs what a test cannot have); the reason is required;
 * - `<!-- output -->` before a ```json block makes it the expected last line of the ```sh block just before it:
 *   objects must have the same keys, a string with `...` matches any text in its place, and `expires_in` may
 *   be up to 60 seconds less than written, as time runs down;
 * - ```text blocks and any other language are never run.
 *
 * It also checks every relative link of README.md and docs/*.md: the file exists, and so does the heading a
 * link names.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestApp, type TestApp } from '../support/app.js';
import { freePort } from '../support/processes.js';

const ROOT = path.join(__dirname, '../..');
/** The address the docs use; the test's Custos listens elsewhere. */
const DOC_BASE = 'http://127.0.0.1:8080';
const RUN = ['README.md', 'docs/quickstart.md'];

interface Block {
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  code: string;
  /** The HTML comment on the last non-blank line before the fence, if any. */
  marker?: string;
}

function codeBlocks(file: string): Block[] {
  const lines = fs.readFileSync(path.join(ROOT, file), 'utf8').split('\n');
  const found: Block[] = [];
  let open: { line: number; lang: string; marker?: string; body: string[] } | null = null;
  let lastText: string | undefined;
  lines.forEach((l, i) => {
    if (open) {
      if (/^```\s*$/.test(l)) {
        found.push({
          file,
          line: open.line,
          lang: open.lang,
          code: open.body.join('\n'),
          marker: open.marker,
        });
        open = null;
        lastText = undefined;
      } else {
        open.body.push(l);
      }
      return;
    }
    const fence = /^```(\S*)\s*$/.exec(l);
    if (fence) {
      const marker = lastText && /^<!--.*-->$/.test(lastText) ? lastText : undefined;
      open = { line: i + 1, lang: fence[1], marker, body: [] };
    } else if (l.trim() !== '') {
      lastText = l.trim();
    }
  });
  if (open) throw new Error(`${file}: a code block is never closed`);
  return found;
}

interface Snippet {
  block: Block;
  expected?: { block: Block; value: unknown };
}

/** The blocks to run, each with the output the doc gives for it; throws on a block the rules do not cover. */
function snippets(file: string): Snippet[] {
  const run: Snippet[] = [];
  let previous: Snippet | null = null;
  for (const block of codeBlocks(file)) {
    const where = `${file}:${block.line}`;
    if (block.marker !== undefined) {
      if (block.marker === '<!-- output -->') {
        if (block.lang !== 'json') throw new Error(`${where}: an output block is fenced as json`);
        if (!previous) throw new Error(`${where}: an output block follows a block that runs`);
        if (previous.expected) throw new Error(`${where}: a block has one output block`);
        previous.expected = { block, value: JSON.parse(block.code.replaceAll(DOC_BASE, '<base>')) };
        previous = null;
        continue;
      }
      const skip = /^<!-- not run: (.+\S) -->$/.exec(block.marker);
      if (!skip) throw new Error(`${where}: unknown marker ${block.marker}`);
      if (block.lang !== 'sh') throw new Error(`${where}: "not run" marks a sh block`);
      previous = null;
      continue;
    }
    previous = null;
    if (block.lang === 'sh') {
      previous = { block };
      run.push(previous);
    }
  }
  return run;
}

/** Why `actual` is not what the doc shows (`expected`), or nothing when it is. */
function mismatches(actual: unknown, expected: unknown, at: string, key?: string): string[] {
  if (typeof expected === 'string' && expected.includes('...')) {
    const pattern = expected
      .split('...')
      .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*');
    return typeof actual === 'string' && new RegExp(`^${pattern}$`, 's').test(actual)
      ? []
      : [`${at}: ${JSON.stringify(actual)} does not match ${JSON.stringify(expected)}`];
  }
  if (typeof expected === 'number' && key === 'expires_in') {
    return typeof actual === 'number' && actual <= expected && actual >= expected - 60
      ? []
      : [`${at}: ${JSON.stringify(actual)} is not within a minute below ${expected}`];
  }
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual) || actual.length !== expected.length)
      return [`${at}: ${JSON.stringify(actual)} is not ${JSON.stringify(expected)}`];
    return expected.flatMap((e, i) => mismatches(actual[i], e, `${at}[${i}]`));
  }
  if (expected !== null && typeof expected === 'object') {
    if (actual === null || typeof actual !== 'object' || Array.isArray(actual))
      return [`${at}: ${JSON.stringify(actual)} is not an object`];
    const a = actual as Record<string, unknown>;
    const e = expected as Record<string, unknown>;
    const keys = (o: object) => Object.keys(o).sort().join(', ');
    if (keys(a) !== keys(e)) return [`${at}: fields ${keys(a)}, the doc shows ${keys(e)}`];
    return Object.keys(e).flatMap((k) => mismatches(a[k], e[k], `${at}.${k}`, k));
  }
  return actual === expected
    ? []
    : [`${at}: ${JSON.stringify(actual)}, the doc shows ${JSON.stringify(expected)}`];
}

/** GitHub's anchors for a Markdown file's headings. */
function anchors(file: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  const text = fs.readFileSync(file, 'utf8').replace(/^```[\s\S]*?^```$/gm, '');
  for (const m of text.matchAll(/^#{1,6} +(.+?) *$/gm)) {
    const words = m[1].replace(/\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/`/g, '');
    const slug = words
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    out.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return out;
}

function runBash(
  script: string,
  cwd: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-e', '-o', 'pipefail', '-c', script], {
      cwd,
      // What a reader's fresh terminal has, and nothing of this process's settings.
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: cwd, LANG: 'C.UTF-8' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('the README and the quickstart', () => {
  it('begin with the two commands, README first (CI and tools read them there)', () => {
    const first = codeBlocks('README.md')[0];
    expect(first.lang).toBe('sh');
    expect(first.code).toBe('npm install && npm start\nnpm install && npm test');
  });

  it('follow the snippet rules: a block not run says why, an output follows the block it belongs to', () => {
    for (const file of RUN) expect(() => snippets(file)).not.toThrow();
    const skipped = RUN.flatMap((f) => codeBlocks(f)).filter((b) => b.lang === 'sh' && b.marker);
    for (const b of skipped) expect(b.marker).toMatch(/^<!-- not run: .+ -->$/);
    // Only what cannot run in a test is left out: the README's commands and the start of the quickstart.
    expect(skipped.map((b) => b.code)).toEqual([
      'npm install && npm start\nnpm install && npm test',
      'npm install && npm run demo',
      'npm install && npm start',
    ]);
    expect(snippets('docs/quickstart.md').filter((s) => s.expected).length).toBeGreaterThanOrEqual(5);
  });

  describe('run as written', () => {
    let app: TestApp;
    let base: string;
    let dir: string;

    beforeAll(async () => {
      const port = await freePort();
      base = `http://127.0.0.1:${port}`;
      app = await startTestApp({ HOST: '127.0.0.1', PORT: String(port), CUSTOS_PUBLIC_URL: base });
      await app.custos.app.listen({ port, host: '127.0.0.1' });
      // The folder a reader works in after a first `npm start`.
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-docs-'));
      fs.mkdirSync(path.join(dir, '.custos'), { mode: 0o700 });
      fs.writeFileSync(path.join(dir, '.custos', 'bootstrap-admin-key'), `${app.bootstrapKey}\n`, {
        mode: 0o600,
      });
    }, 60_000);

    afterAll(async () => {
      await app?.close();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it('exit 0, block by block, and print what the docs say', async () => {
      const all = RUN.flatMap((f) => snippets(f));
      const script = all
        .map((s, i) => `printf '\\n@@block ${i}@@\\n'\n${s.block.code.replaceAll(DOC_BASE, base)}\n`)
        .join('');
      const { code, stdout, stderr } = await runBash(`${script}printf '\\n@@block end@@\\n'\n`, dir);

      const parts = stdout.split(/\n@@block (\d+|end)@@\n/);
      // parts: [before, i, output of i, i+1, output, ..., 'end', after]
      const outputs = new Map<string, string>();
      for (let i = 1; i < parts.length; i += 2) outputs.set(parts[i], parts[i + 1] ?? '');
      if (code !== 0 || !outputs.has('end')) {
        const started = [...outputs.keys()].filter((k) => k !== 'end').map(Number);
        const failed = all[Math.max(...started, 0)].block;
        throw new Error(
          `the block at ${failed.file}:${failed.line} failed (exit ${code}):\n${failed.code}\n` +
            `--- its output:\n${outputs.get(String(Math.max(...started, 0))) ?? ''}\n--- stderr:\n${stderr}`,
        );
      }

      const problems: string[] = [];
      all.forEach((s, i) => {
        if (!s.expected) return;
        const where = `${s.block.file}:${s.expected.block.line}`;
        const last = (outputs.get(String(i)) ?? '')
          .split('\n')
          .filter((l) => l.trim() !== '')
          .pop();
        let actual: unknown;
        try {
          actual = JSON.parse((last ?? '').replaceAll(base, '<base>'));
        } catch {
          problems.push(`${where}: the block printed ${JSON.stringify(last)}, not JSON`);
          return;
        }
        problems.push(...mismatches(actual, s.expected.value, where));
      });
      expect(problems).toEqual([]);
      // The end of the story: the user's token was released, and after revocation a new connect link.
      const token = all.find((s) => (s.expected?.value as { access_token?: string })?.access_token);
      expect(token).toBeDefined();
      expect(stdout).toContain('"access_token":"gho_alice_example_token"');
    }, 60_000);
  });

  it('link only to files and headings that exist', () => {
    const files = ['README.md', ...fs.readdirSync(path.join(ROOT, 'docs')).map((f) => `docs/${f}`)].filter(
      (f) => f.endsWith('.md'),
    );
    const broken: string[] = [];
    for (const file of files) {
      const text = fs
        .readFileSync(path.join(ROOT, file), 'utf8')
        .replace(/^```[\s\S]*?^```$/gm, '')
        .replace(/`[^`]*`/g, '');
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1];
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
        const [rel, anchor] = target.split('#');
        const resolved =
          rel === '' ? path.join(ROOT, file) : path.resolve(path.dirname(path.join(ROOT, file)), rel);
        if (!fs.existsSync(resolved)) {
          broken.push(`${file}: ${target} (no such file)`);
        } else if (anchor !== undefined && resolved.endsWith('.md') && !anchors(resolved).has(anchor)) {
          broken.push(`${file}: ${target} (no such heading)`);
        }
      }
    }
    expect(broken).toEqual([]);
  });
});
