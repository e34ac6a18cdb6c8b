/**
 * The published form of @custos/sdk: what `npm run build:sdk` writes to sdk/dist loads in plain Node (no tsx,
 * no Jest transform) as an ES module, with its exports in place and jose resolved as a dependency.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = path.resolve(__dirname, '../..');
const dist = path.join(root, 'sdk/dist/index.js');

/** The newest modification time of the files under `dir` (0 when there are none). */
function newest(dir: string): number {
  if (!fs.existsSync(dir)) return 0;
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .reduce((t, e) => Math.max(t, fs.statSync(path.join(e.parentPath, e.name)).mtimeMs), 0);
}

// `npm test` has just built it (`npm run typecheck` runs `npm run build:sdk`); a build older than the sources
// (a Jest run on its own) is made again.
beforeAll(async () => {
  if (newest(path.join(root, 'sdk/dist')) < newest(path.join(root, 'sdk/src'))) {
    await run('npx', ['tsc', '-p', 'sdk/tsconfig.json'], { cwd: root, timeout: 120_000 });
  }
}, 130_000);

/** Runs an ES module script in a plain `node` and returns what it printed as JSON. */
async function inNode(script: string): Promise<any> {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
    cwd: root,
    timeout: 30_000,
    env: { PATH: process.env.PATH ?? '' },
  });
  return JSON.parse(stdout);
}

describe('the built SDK (sdk/dist)', () => {
  it('has its entry point and type declarations', () => {
    expect(fs.existsSync(dist)).toBe(true);
    const types = fs.readFileSync(path.join(root, 'sdk/dist/index.d.ts'), 'utf8');
    for (const name of [
      'CustosClient',
      'getAccessToken',
      'CustosError',
      'ConsentRequiredError',
      'AccessToken',
    ]) {
      expect(types).toContain(name);
    }
  });

  it('loads in plain Node with its exports, and refuses bad options with a CustosError', async () => {
    const result = await inNode(`
      const sdk = await import(${JSON.stringify(dist)});
      const kinds = Object.fromEntries(Object.entries(sdk).map(([k, v]) => [k, typeof v]));
      let refused = null;
      try {
        new sdk.CustosClient({ url: 'http://127.0.0.1:1', clientId: 'c' });
      } catch (err) {
        refused = { isCustosError: err instanceof sdk.CustosError, code: err.code };
      }
      const consent = new sdk.ConsentRequiredError({
        message: 'm', provider: 'github', scopes: [], connectUri: 'https://c.example/connect/x',
        expiresAt: new Date(0), sessionId: 's', sessionUri: 'https://c.example/s', reason: 'not_connected',
      });
      console.log(JSON.stringify({
        kinds, refused,
        consent: { isCustosError: consent instanceof sdk.CustosError, code: consent.code, keys: Object.keys(consent) },
      }));
    `);
    expect(result.kinds).toEqual({
      ConsentRequiredError: 'function',
      CustosClient: 'function',
      CustosError: 'function',
      getAccessToken: 'function',
    });
    expect(result.refused).toEqual({ isCustosError: true, code: 'invalid_argument' });
    expect(result.consent.isCustosError).toBe(true);
    expect(result.consent.code).toBe('consent_required');
    expect(result.consent.keys).not.toContain('connectUri');
  });

  it('signs client assertions with jose from plain Node', async () => {
    const result = await inNode(`
      import { generateKeyPairSync } from 'node:crypto';
      import http from 'node:http';
      const { CustosClient } = await import(${JSON.stringify(dist)});
      let seen;
      const server = http.createServer((req, res) => {
        let body = '';
        req.on('data', (c) => (body += c));
        req.on('end', () => {
          seen = new URLSearchParams(body).get('client_assertion');
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ access_token: 't', token_type: 'Bearer', issued_token_type: 'x', expires_in: 60 }));
        });
      });
      await new Promise((r) => server.listen(0, '127.0.0.1', r));
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const client = new CustosClient({ url: 'http://127.0.0.1:' + server.address().port, clientId: 'c', privateKey });
      const token = await client.getAccessToken({ userId: 'u', provider: 'github' });
      server.close();
      const [header, payload] = seen.split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url')));
      console.log(JSON.stringify({ token: token.accessToken, header, payload }));
    `);
    expect(result.token).toBe('t');
    expect(result.header).toEqual({ alg: 'ES256' });
    expect(result.payload).toMatchObject({
      iss: 'c',
      sub: 'c',
      aud: expect.stringMatching(/\/oauth\/token$/),
    });
  });
});
