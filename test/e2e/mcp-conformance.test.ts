/**
 * The official MCP conformance suite (`@modelcontextprotocol/conformance`, its `server` command) against the
 * example MCP server (examples/mcp-server/), run as its own process the way an SDK's CI runs it. Every scenario
 * of the suite is run; the ones that apply to a server whose only tool is `whoami` must pass check by check,
 * and the others (which need the suite's own test tools, resources and prompts) are listed with the reason.
 * docs/mcp-conformance.md has the table and how to run it by hand.
 *
 * The example is an OAuth resource server and the suite's client cannot authenticate to a server. The suite's
 * process is given a real user token from the identity provider the example trusts, added to its requests
 * to the example's origin by an undici dispatcher (a preload, below): the example's gate runs unchanged on every
 * request, and a run without the token is refused.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { startMcpExampleWorld, type McpExampleWorld } from '../support/mcp-example.js';

const CONFORMANCE_CLI = path.join(
  path.dirname(require.resolve('@modelcontextprotocol/conformance/package.json')),
  'dist/index.js',
);
const RUN_DEADLINE_MS = 20_000;
/** The `sub` of the user the suite acts as. */
const SUITE_USER = 'conformance-suite';

interface Check {
  id: string;
  name: string;
  status: 'SUCCESS' | 'FAILURE' | 'WARNING' | 'SKIPPED' | 'INFO';
  errorMessage?: string;
  details?: Record<string, unknown>;
}

/**
 * The scenarios that apply to the example, with the checks each must pass (every one SUCCESS, none other
 * but INFO lines). conformance 0.1.16 tests servers at protocol 2025-06-18 / 2025-11-25 only, through its
 * 1.x SDK client: these exercise the example's 2025-11-25 side.
 */
const APPLICABLE: Record<string, string[]> = {
  'server-initialize': ['server-initialize'],
  ping: ['ping'],
  'tools-list': ['tools-list'],
  'server-sse-multiple-streams': ['server-accepts-multiple-post-streams', 'server-sse-streams-functional'],
  'dns-rebinding-protection': ['localhost-host-rebinding-rejected', 'localhost-host-valid-accepted'],
};

/**
 * The scenarios that do not apply, and why. Their results are not asserted. Two of them pass vacuously
 * (`tools-call-simple-text`, `tools-call-error`): the 1.x SDK answers a call of an unknown tool with an
 * `isError` text result, which is all those checks look at.
 */
const NOT_APPLICABLE: Record<string, string> = {
  'logging-set-level': 'no logging capability',
  'completion-complete': 'no prompts or resource templates to complete',
  'tools-call-simple-text': 'needs the suite’s test_simple_text tool',
  'tools-call-image': 'needs the suite’s test_image_content tool',
  'tools-call-audio': 'needs the suite’s test_audio_content tool',
  'tools-call-embedded-resource': 'needs the suite’s test_embedded_resource tool',
  'tools-call-mixed-content': 'needs the suite’s test_multiple_content_types tool',
  'tools-call-with-logging': 'needs the suite’s test_tool_with_logging tool',
  'tools-call-error': 'needs the suite’s test_error_handling tool',
  'tools-call-with-progress': 'needs the suite’s test_tool_with_progress tool',
  'tools-call-sampling': 'needs the suite’s test_sampling tool',
  'tools-call-elicitation': 'needs the suite’s test_elicitation tool (form mode)',
  'json-schema-2020-12': 'needs the suite’s json_schema_2020_12_tool',
  'elicitation-sep1034-defaults': 'needs the suite’s test_elicitation_sep1034_defaults tool',
  'elicitation-sep1330-enums': 'needs the suite’s test_elicitation_sep1330_enums tool',
  'server-sse-polling': 'needs the suite’s test_reconnection tool',
  'resources-list': 'no resources',
  'resources-read-text': 'no resources',
  'resources-read-binary': 'no resources',
  'resources-templates-read': 'no resources',
  'resources-subscribe': 'no resources',
  'resources-unsubscribe': 'no resources',
  'prompts-list': 'no prompts',
  'prompts-get-simple': 'no prompts',
  'prompts-get-with-args': 'no prompts',
  'prompts-get-embedded-resource': 'no prompts',
  'prompts-get-with-image': 'no prompts',
};

const dataUrl = (source: string) => `data:text/javascript,${encodeURIComponent(source)}`;

/**
 * Loaded into the suite's process with `--import`:
 * - on Node 20 only, an `fs` with a `globSync` for the suite's bundle, which imports it at load time (it is
 *   Node 22's; only the suite's `tier-check` command calls it);
 * - with MCP_CONFORMANCE_BEARER set, an undici global dispatcher that sends it as the bearer token on every
 *   request to MCP_CONFORMANCE_ORIGIN. Node's fetch (the SDK client) and undici's `request` (the DNS-rebinding
 *   scenario) both go through the global dispatcher.
 */
function preload(): string {
  const fsWithGlobSync = dataUrl(
    "export * from 'node:fs'; export { default } from 'node:fs';" +
      "export function globSync() { throw new Error('fs.globSync needs Node 22'); }",
  );
  const hooks = dataUrl(`
    export async function resolve(specifier, context, next) {
      if ((specifier === 'fs' || specifier === 'node:fs') &&
          context.parentURL?.includes('/@modelcontextprotocol/conformance/')) {
        return { url: ${JSON.stringify(fsWithGlobSync)}, shortCircuit: true };
      }
      return next(specifier, context);
    }`);
  const undici = pathToFileURL(require.resolve('undici')).href;
  return dataUrl(`
    import fs from 'node:fs';
    import { register } from 'node:module';
    if (typeof fs.globSync !== 'function') register(${JSON.stringify(hooks)});
    const token = process.env.MCP_CONFORMANCE_BEARER;
    const origin = process.env.MCP_CONFORMANCE_ORIGIN;
    if (token && origin) {
      const { Agent, setGlobalDispatcher } = await import(${JSON.stringify(undici)});
      const value = 'Bearer ' + token;
      const withBearer = (headers) => {
        if (headers == null) return { authorization: value };
        if (Array.isArray(headers) && Array.isArray(headers[0])) {
          return [...headers.filter(([k]) => String(k).toLowerCase() !== 'authorization'), ['authorization', value]];
        }
        if (Array.isArray(headers)) {
          const out = [];
          for (let i = 0; i < headers.length; i += 2) {
            if (String(headers[i]).toLowerCase() !== 'authorization') out.push(headers[i], headers[i + 1]);
          }
          return [...out, 'authorization', value];
        }
        if (typeof headers[Symbol.iterator] === 'function') return withBearer([...headers]);
        const out = {};
        for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() !== 'authorization') out[k] = v;
        return { ...out, authorization: value };
      };
      setGlobalDispatcher(new Agent().compose((dispatch) => (opts, handler) =>
        dispatch(new URL(String(opts.origin)).origin === origin
          ? { ...opts, headers: withBearer(opts.headers) } : opts, handler)));
    }`);
}

interface SuiteRun {
  code: number | null;
  output: string;
  /** The checks of each scenario run, by scenario name. */
  scenarios: Map<string, Check[]>;
}

/** Runs `conformance server` against the example, as SUITE_USER when `token` is given, within the deadline. */
async function runSuite(args: string[], token: string | null): Promise<SuiteRun> {
  const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mcp-conformance-'));
  try {
    const child = spawn(
      process.execPath,
      ['--import', preload(), CONFORMANCE_CLI, 'server', '--url', world.mcpUrl, '-o', outDir, ...args],
      {
        cwd: outDir,
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          MCP_CONFORMANCE_ORIGIN: new URL(world.mcpUrl).origin,
          ...(token ? { MCP_CONFORMANCE_BEARER: token } : {}),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`conformance did not finish within ${RUN_DEADLINE_MS} ms:\n${output.slice(-3000)}`));
      }, RUN_DEADLINE_MS);
      child.once('error', reject);
      child.once('close', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    // One folder per scenario run: server-<scenario>-<ISO time with : and . as ->/checks.json
    const scenarios = new Map<string, Check[]>();
    for (const dir of fs.readdirSync(outDir)) {
      const name = /^server-(.+)-\d{4}-\d\d-\d\dT[\d-]+Z$/.exec(dir)?.[1];
      if (!name) continue;
      scenarios.set(
        name,
        JSON.parse(fs.readFileSync(path.join(outDir, dir, 'checks.json'), 'utf8')) as Check[],
      );
    }
    return { code, output, scenarios };
  } finally {
    fs.rmSync(outDir, { recursive: true, force: true });
  }
}

/** A scenario's checks as `id: STATUS` lines, INFO lines left out; failures keep their message. */
const outcome = (checks: Check[] | undefined) =>
  (checks ?? [])
    .filter((c) => c.status !== 'INFO')
    .map((c) => `${c.id}: ${c.status}${c.status === 'SUCCESS' ? '' : ` (${c.errorMessage ?? ''})`}`);

let world: McpExampleWorld;
let token: string;
let suite: SuiteRun;
/** The example's log lines of the requests of that run. */
let suiteLogs: McpExampleWorld['mcpLogs'];

beforeAll(async () => {
  world = await startMcpExampleWorld();
  token = await world.userToken(SUITE_USER);
  suite = await runSuite(['--suite', 'all'], token);
  suiteLogs = world.mcpLogs.filter((l) => l.msg === 'request' && l.path === '/mcp');
}, 60_000);

afterAll(async () => {
  await world?.close();
});

describe('the MCP conformance suite against the example server', () => {
  it('runs every server scenario it has, and each is either applicable or listed as not', () => {
    expect([...suite.scenarios.keys()].sort()).toEqual(
      [...Object.keys(APPLICABLE), ...Object.keys(NOT_APPLICABLE)].sort(),
    );
  });

  it.each(Object.entries(APPLICABLE))('passes %s', (scenario, checks) => {
    expect(outcome(suite.scenarios.get(scenario))).toEqual(checks.map((id) => `${id}: SUCCESS`));
  });

  it('finds whoami, and only whoami, in tools/list', () => {
    const [check] = suite.scenarios.get('tools-list') ?? [];
    expect(check?.details?.tools).toEqual(['whoami']);
  });

  it('was served as the user of its token, over protocol 2025-11-25, on every request let in', () => {
    const served = suiteLogs.filter((l) => Number(l.status) < 400);
    expect(served.length).toBeGreaterThan(10);
    expect(served.filter((l) => l.user !== SUITE_USER || l.protocol !== '2025-11-25')).toEqual([]);
  });

  it('was refused for a foreign Host by the DNS-rebinding check, before its token was looked at', () => {
    const [rejected] = suite.scenarios.get('dns-rebinding-protection') ?? [];
    expect(rejected?.details?.statusCode).toBe(403);
    const refused = suiteLogs.filter((l) => l.refused !== undefined);
    expect(refused.map((l) => [l.status, l.refused])).toEqual([[403, 'host']]);
  });

  it('never shows the token in its output', () => {
    expect(suite.output).not.toContain(token);
    expect(JSON.stringify([...suite.scenarios.values()])).not.toContain(token);
  });

  it('cannot initialize without a token: the example answers 401', async () => {
    const run = await runSuite(['--scenario', 'server-initialize'], null);
    expect(run.code).toBe(1);
    expect(run.scenarios.get('server-initialize')).toEqual([
      expect.objectContaining({ id: 'server-initialize', status: 'FAILURE' }),
    ]);
    const logged = world.mcpLogs
      .filter((l) => l.msg === 'request' && l.path === '/mcp')
      .slice(suiteLogs.length);
    expect(logged.map((l) => [l.status, l.refused])).toEqual([[401, 'missing']]);
  });
});
