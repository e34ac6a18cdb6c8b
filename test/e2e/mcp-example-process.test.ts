/**
 * `npm run example:mcp` as an operator runs it (`node --import tsx examples/mcp-server/src/main.ts`): a missing
 * variable stops it at once with one line naming the variable; fully configured, it listens and serves its
 * protected-resource metadata. Nothing else is needed for that: the identity provider and Custos it names are
 * only reached by requests to /mcp.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { freePort } from '../support/processes.js';

const ROOT = path.join(__dirname, '../..');
const MAIN = path.join(ROOT, 'examples/mcp-server/src/main.ts');
const SECRET = `process-test-secret-${Date.now()}`;

function env(port: number): Record<string, string> {
  return {
    CUSTOS_URL: 'http://127.0.0.1:9',
    CUSTOS_CLIENT_ID: 'cc_example',
    CUSTOS_CLIENT_SECRET: SECRET,
    MCP_PORT: String(port),
    MCP_PUBLIC_URL: `http://127.0.0.1:${port}`,
    MCP_AUTH_ISSUER: 'http://127.0.0.1:9/issuer',
    MCP_AUTH_AUDIENCE: `http://127.0.0.1:${port}/mcp`,
    MCP_PROVIDER: 'acme',
    MCP_USERINFO_URL: 'http://127.0.0.1:9/userinfo',
  };
}

/** Starts the example with exactly `vars` (plus PATH and HOME); gives its output as it grows. */
function run(vars: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...vars },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (c: Buffer) => (out.stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out.stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, out, exited };
}

describe('npm run example:mcp', () => {
  it('exits with code 2 and one line naming a missing variable', async () => {
    const vars = env(1);
    delete vars.MCP_AUTH_AUDIENCE;
    const { out, exited } = run(vars);
    expect(await exited).toBe(2);
    expect(out.stderr.trim()).toBe('example-mcp-server: configuration error: MCP_AUTH_AUDIENCE is required');
    expect(out.stdout).toBe('');
    expect(out.stderr + out.stdout).not.toContain(SECRET);
  }, 60_000);

  it('starts fully configured, serves its metadata, and stops on SIGTERM', async () => {
    const port = await freePort();
    const { child, out, exited } = run(env(port));
    try {
      const deadline = Date.now() + 60_000;
      while (!out.stdout.includes('MCP server listening')) {
        if (Date.now() > deadline || child.exitCode !== null) {
          throw new Error(`did not start:\n${out.stdout}\n${out.stderr}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      const res = await fetch(`http://127.0.0.1:${port}/.well-known/oauth-protected-resource/mcp`);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({
        resource: `http://127.0.0.1:${port}/mcp`,
        authorization_servers: ['http://127.0.0.1:9/issuer'],
        bearer_methods_supported: ['header'],
        resource_name: 'Custos example MCP server',
      });
      // Log lines are JSON, one per line, and never carry the client secret.
      const lines = out.stdout.trim().split('\n');
      for (const line of lines) expect(() => JSON.parse(line)).not.toThrow();
      expect(out.stdout + out.stderr).not.toContain(SECRET);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 90_000);
});
