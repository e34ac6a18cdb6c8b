/**
 * The container image's invariants, read from the Dockerfile (there is no Docker engine on these machines, so
 * the image is never built here: this checks what the file says, not what a build produces).
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, variables } from '../../src/config/config.js';

const ROOT = path.resolve(__dirname, '../..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  license: string;
  engines: { node: string };
  scripts: Record<string, string>;
  config: { nodeFlags: string };
};

interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

interface Stage {
  name: string;
  base: string;
  instructions: Instruction[];
}

/** Instructions with continuation lines joined and comment lines dropped, as Docker reads them. */
function parseInstructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let current: { text: string; line: number } | null = null;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line.startsWith('#')) return; // comments, also between continuation lines
    if (current === null) {
      if (line === '') return;
      current = { text: '', line: i + 1 };
    }
    const continued = line.endsWith('\\');
    current.text += ' ' + (continued ? line.slice(0, -1) : line);
    if (!continued) {
      const text = current.text.trim();
      const m = /^(\S+)\s*(.*)$/s.exec(text)!;
      out.push({ keyword: m[1].toUpperCase(), args: m[2].trim(), line: current.line });
      current = null;
    }
  });
  return out;
}

function parseStages(instructions: Instruction[]): Stage[] {
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new Error(`line ${ins.line}: unreadable FROM ${ins.args}`);
      stages.push({ name: m[2] ?? String(stages.length), base: m[1], instructions: [] });
    } else if (stages.length === 0) {
      if (ins.keyword !== 'ARG') throw new Error(`line ${ins.line}: ${ins.keyword} before the first FROM`);
    } else {
      stages[stages.length - 1].instructions.push(ins);
    }
  }
  return stages;
}

/** `KEY=value KEY2="a value"` (ENV, LABEL, ARG), quotes removed. */
function parsePairs(args: string): Map<string, string> {
  const pairs = new Map<string, string>();
  const re = /([A-Za-z0-9_.-]+)(?:=("(?:[^"\\]|\\.)*"|\S*))?/g;
  for (let m = re.exec(args); m; m = re.exec(args)) {
    const value = m[2] ?? '';
    pairs.set(m[1], value.startsWith('"') ? value.slice(1, -1).replace(/\\(.)/g, '$1') : value);
  }
  return pairs;
}

interface Copy {
  from?: string;
  chown?: string;
  sources: string[];
  dest: string;
}

function parseCopy(args: string): Copy {
  const words = args.startsWith('[') ? (JSON.parse(args) as string[]) : args.split(/\s+/);
  const flags = words.filter((w) => w.startsWith('--'));
  const paths = words.filter((w) => !w.startsWith('--'));
  const flag = (name: string) => flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1];
  return {
    from: flag('from'),
    chown: flag('chown'),
    sources: paths.slice(0, -1),
    dest: paths[paths.length - 1],
  };
}

const dockerfile = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
const instructions = parseInstructions(dockerfile);
const stages = parseStages(instructions);
const runtime = stages[stages.length - 1];
const all = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.keyword === keyword);
const copies = (stage: Stage) => all(stage, 'COPY').map((i) => parseCopy(i.args));
const stageNamed = (name: string) => {
  const s = stages.find((x) => x.name === name);
  if (!s) throw new Error(`no stage ${name}`);
  return s;
};
const runtimeEnv = new Map(all(runtime, 'ENV').flatMap((i) => [...parsePairs(i.args)]));
const workdir = all(runtime, 'WORKDIR').at(-1)?.args;
const cmd = JSON.parse(all(runtime, 'CMD').at(-1)?.args ?? 'null') as string[] | null;

describe('the Dockerfile', () => {
  it('is multi-stage: a build stage that compiles, and a runtime stage that only copies its output', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const fromBuild = copies(runtime).filter((c) => c.from !== undefined);
    const distFrom = fromBuild.find((c) => c.sources.some((s) => /(^|\/)dist\/?$/.test(s)));
    expect(distFrom).toBeDefined();
    const build = stageNamed(distFrom!.from!);
    expect(all(build, 'RUN').some((r) => /\bnpm ci\b/.test(r.args) && !/--omit=dev/.test(r.args))).toBe(true);
    expect(all(build, 'RUN').some((r) => /\bnpm run build\b/.test(r.args))).toBe(true);
    // The runtime stage compiles nothing and installs no development dependency.
    for (const r of all(runtime, 'RUN')) expect(r.args).not.toMatch(/\bnpm (ci|install|i|run)\b|\btsc\b/);
  });

  it('installs production dependencies only, with npm ci --omit=dev, for the runtime', () => {
    const nodeModules = copies(runtime).find((c) => c.sources.some((s) => /node_modules\/?$/.test(s)));
    // Either installed in the runtime stage itself or copied from a stage that did.
    const installer = nodeModules?.from ? stageNamed(nodeModules.from) : runtime;
    const runs = all(installer, 'RUN').map((r) => r.args);
    expect(runs.some((r) => /\bnpm ci\b[^&;]*--omit=dev/.test(r))).toBe(true);
    expect(runs.some((r) => /\bnpm (install|i)\b/.test(r))).toBe(false);
  });

  it('bases every stage on Node 22 bookworm-slim, pinned to a tag (never latest)', () => {
    for (const s of stages) {
      if (stages.some((x) => x.name === s.base)) continue; // FROM an earlier stage
      expect(s.base).toMatch(/^node:22(\.\d+){0,2}-bookworm-slim(@sha256:[0-9a-f]{64})?$/);
    }
    // The image's Node satisfies package.json's engines.
    const minimum = /^>=(\d+)(?:\.\d+)*$/.exec(pkg.engines.node);
    expect(minimum).not.toBeNull();
    expect(Number(/^node:(\d+)/.exec(runtime.base)![1])).toBeGreaterThan(Number(minimum![1]));
  });

  it('runs as a numeric non-root user, from WORKDIR /app', () => {
    const users = all(runtime, 'USER');
    expect(users.length).toBeGreaterThan(0);
    const user = users.at(-1)!.args;
    expect(user).toMatch(/^\d+(:\d+)?$/);
    for (const id of user.split(':')) expect(Number(id)).not.toBe(0);
    expect(user.split(':')[0]).toBe('10001');
    // The user is set before the command it runs.
    expect(users.at(-1)!.line).toBeLessThan(all(runtime, 'CMD').at(-1)!.line);
    expect(workdir).toBe('/app');
  });

  it('leaves the code read-only to that user: nothing under /app is handed to it', () => {
    for (const c of copies(runtime)) expect(c.chown).toBeUndefined();
    for (const r of all(runtime, 'RUN')) expect(r.args).not.toMatch(/ch(own|mod)\b[^&;]*\/app\b/);
  });

  it('needs no write under /app: the data folder is elsewhere, and no secret is baked in', () => {
    const dataDir = runtimeEnv.get('CUSTOS_DATA_DIR');
    expect(dataDir).toBeDefined();
    expect(path.posix.isAbsolute(dataDir!)).toBe(true);
    expect(dataDir === workdir || dataDir!.startsWith(`${workdir}/`)).toBe(false);
    for (const [name, spec] of Object.entries(variables)) {
      if (spec.sensitive) expect(runtimeEnv.has(name)).toBe(false);
    }
    // Reachable from outside the container, and JSON logs whatever the terminal.
    expect(runtimeEnv.get('HOST')).toBe('0.0.0.0');
    expect(runtimeEnv.get('CUSTOS_LOG_FORMAT')).toBe('json');
  });

  it('sets only variables Custos knows, with values its configuration accepts', () => {
    const known = new Set(Object.keys(variables));
    for (const name of runtimeEnv.keys()) {
      if (name === 'NODE_ENV') continue;
      expect(known.has(name) ? name : `unknown variable ${name}`).toBe(name);
    }
    expect(() => loadConfig(Object.fromEntries(runtimeEnv))).not.toThrow();
  });

  it('exposes the default port', () => {
    const port = String(variables.PORT.schema.parse(undefined));
    expect(all(runtime, 'EXPOSE').map((e) => e.args)).toEqual([port]);
    expect(runtimeEnv.get('PORT') ?? port).toBe(port);
  });

  it("runs dist/src/main.js with the V8 flags of npm start (package.json's config.nodeFlags)", () => {
    expect(cmd).not.toBeNull();
    expect(all(runtime, 'ENTRYPOINT')).toEqual([]);
    const flags = pkg.config.nodeFlags.split(/\s+/).filter(Boolean);
    expect(cmd).toEqual(['node', ...flags, 'dist/src/main.js']);
    // npm start runs the same file with the same flags.
    expect(pkg.scripts.start).toBe('exec node $npm_package_config_nodeFlags dist/src/main.js');
  });

  it('runs a file that npm run build produces', () => {
    const script = cmd!.at(-1)!;
    const build = /^tsc -b (\S+)$/.exec(pkg.scripts.build);
    expect(build).not.toBeNull();
    const tsconfig = JSON.parse(fs.readFileSync(path.join(ROOT, build![1]), 'utf8')) as {
      extends?: string;
      compilerOptions: { outDir: string; rootDir: string };
      include: string[];
    };
    const { outDir, rootDir } = tsconfig.compilerOptions;
    const relative = path.posix.relative(outDir, script);
    expect(relative.startsWith('..')).toBe(false);
    const source = path.join(ROOT, rootDir, relative.replace(/\.js$/, '.ts'));
    expect(fs.existsSync(source)).toBe(true);
    expect(
      tsconfig.include.some((dir) => path.relative(path.join(ROOT, dir), source).split(path.sep)[0] !== '..'),
    ).toBe(true);
    // The build stage has everything that build reads: the tsconfig it names, the one that extends, the sources.
    const distFrom = copies(runtime).find(
      (c) => c.from !== undefined && c.sources.some((s) => /dist\/?$/.test(s)),
    )!;
    const buildStage = stageNamed(distFrom.from!);
    const copied = copies(buildStage).flatMap((c) => c.sources.map((s) => s.replace(/\/$/, '')));
    for (const needed of [build![1], tsconfig.extends?.replace(/^\.\//, ''), ...tsconfig.include]) {
      if (needed) expect(copied).toContain(needed);
    }
    expect(copied).toEqual(expect.arrayContaining(['package.json', 'package-lock.json']));
  });

  it('copies what the runtime reads: package.json (module type, package root) and the provider catalog', () => {
    const sources = copies(runtime)
      .filter((c) => c.from === undefined)
      .flatMap((c) => c.sources.map((s) => s.replace(/\/$/, '')));
    expect(sources).toEqual(expect.arrayContaining(['package.json', 'providers']));
  });

  it('copies only named paths that exist in the repository, never the whole context or local state', () => {
    for (const s of stages) {
      for (const c of copies(s)) {
        if (c.from !== undefined) continue;
        for (const src of c.sources) {
          expect(src).not.toMatch(/^\.\/?$|[*?]/);
          expect(src).not.toMatch(/^\.?\/?(node_modules|dist|\.custos|\.git|\.env)(\/|$)/);
          expect(fs.existsSync(path.join(ROOT, src)) ? src : `missing: ${src}`).toBe(src);
        }
      }
    }
  });

  it('fetches nothing by URL with ADD', () => {
    for (const ins of instructions.filter((i) => i.keyword === 'ADD')) {
      expect(ins.args).not.toMatch(/(https?|git|ssh):\/\/|git@/);
    }
  });

  it('carries OCI labels that agree with package.json', () => {
    const labels = new Map(all(runtime, 'LABEL').flatMap((i) => [...parsePairs(i.args)]));
    const args = new Map(all(runtime, 'ARG').flatMap((i) => [...parsePairs(i.args)]));
    const resolve = (v: string | undefined) =>
      v?.replace(/\$\{(\w+)\}/g, (_, a: string) => args.get(a) ?? '');
    expect(labels.get('org.opencontainers.image.title')).toBe('Custos');
    expect(labels.get('org.opencontainers.image.licenses')).toBe(pkg.license);
    expect(resolve(labels.get('org.opencontainers.image.version'))).toBe(pkg.version);
    expect(labels.has('org.opencontainers.image.revision')).toBe(true);
    expect(labels.get('org.opencontainers.image.base.name')).toMatch(/node:22-bookworm-slim$/);
  });
});
