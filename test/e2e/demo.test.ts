/**
 * `npm run demo` as a newcomer uses it, in one run of the demo: what it prints is enough to connect alice's
 * account (its link, followed like a browser through Custos's page and the local provider's sign-in and
 * consent pages) and to get her token (its curl, run as written through `sh -c`); the token is hers at the
 * provider, the audit trail shows the exchange, and SIGINT stops every process the demo started.
 *
 * Custos runs from source here (CUSTOS_DEMO_FROM_SOURCE=1), not from the build `npm run demo` makes first:
 * a build would cost this file half a minute and race with other files that build. npm-start.test.ts covers
 * the built entry point.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { descendantsOf, listening } from '../support/processes.js';

const ROOT = path.join(__dirname, '../..');

/** The user-facing pieces of the demo's output. */
interface Guide {
  connectLink: string;
  tokenCurl: string;
  userinfoCurl: string;
  auditCurl: string;
}

/** Whether a process runs (a zombie counts as gone). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Runs a printed command exactly as a user pastes it into a shell. */
function sh(command: string): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile('sh', ['-c', command], { timeout: 20_000 }, (err, stdout, stderr) =>
      err
        ? reject(new Error(`${command.slice(0, 80)}... failed: ${stderr || err.message}`))
        : resolve(stdout),
    ),
  );
}

/** A printed command: the first line starting with `start` and containing `containing`, and its `\` lines. */
function command(output: string, start: string, containing: string): string {
  const lines = output.split('\n');
  const first = lines.findIndex((l) => l.startsWith(start) && l.includes(containing));
  if (first < 0) throw new Error(`no "${start}...${containing}" command in the demo's output:\n${output}`);
  const taken: string[] = [];
  for (let i = first; i < lines.length; i++) {
    taken.push(lines[i]);
    if (!lines[i].endsWith('\\')) break;
  }
  return taken.join('\n');
}

function parseGuide(output: string): Guide {
  const link = /http:\/\/127\.0\.0\.1:\d+\/connect\/cst_[A-Za-z0-9_-]+/.exec(output);
  if (!link) throw new Error(`no connect link in the demo's output:\n${output}`);
  return {
    connectLink: link[0],
    tokenCurl: command(output, 'curl ', '/oauth/token'),
    userinfoCurl: command(output, 'curl ', 'PASTE_ACCESS_TOKEN_HERE'),
    auditCurl: command(output, 'curl ', '/audit/events'),
  };
}

/** Cookies as a browser keeps them for one host: ports share them, Max-Age=0 removes one. */
class Browser {
  private readonly cookies = new Map<string, string>();

  /** Opens `url` and, like a person clicking the main button of each page, submits its first form. */
  async clickThrough(url: string): Promise<{ url: string; status: number; html: string; visited: string[] }> {
    const visited: string[] = [];
    let next: { url: string; form?: URLSearchParams } = { url };
    for (let step = 0; step < 20; step++) {
      visited.push(next.url);
      const res = await fetch(next.url, {
        method: next.form ? 'POST' : 'GET',
        redirect: 'manual',
        headers: {
          cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '),
          ...(next.form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        },
        body: next.form,
      });
      this.keep(res);
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        await res.body?.cancel();
        next = { url: new URL(location, next.url).href };
        continue;
      }
      const html = await res.text();
      const form = firstForm(html);
      if (res.status !== 200 || !form) return { url: next.url, status: res.status, html, visited };
      next = { url: new URL(form.action, next.url).href, form: form.fields };
    }
    throw new Error(`still clicking after 20 pages: ${visited.join(' -> ')}`);
  }

  private keep(res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      if (/;\s*max-age=0\b/i.test(line)) this.cookies.delete(name);
      else this.cookies.set(name, pair.slice(eq + 1).trim());
    }
  }
}

const unescapeHtml = (s: string) =>
  s.replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n))).replace(/&amp;/g, '&');

/** A page's first POST form: where it goes and what it sends (inputs with their values, as filled in). */
function firstForm(html: string): { action: string; fields: URLSearchParams } | null {
  const m = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
  if (!m || !/method="post"/i.test(m[1])) return null;
  const action = /action="([^"]*)"/i.exec(m[1])?.[1];
  if (action === undefined) return null;
  const fields = new URLSearchParams();
  for (const [input] of m[2].matchAll(/<input\b[^>]*>/gi)) {
    const name = /\bname="([^"]*)"/i.exec(input)?.[1];
    if (name) fields.set(unescapeHtml(name), unescapeHtml(/\bvalue="([^"]*)"/i.exec(input)?.[1] ?? ''));
  }
  return { action: unescapeHtml(action), fields };
}

describe('npm run demo', () => {
  let dataDir: string;
  let demo: ChildProcess;
  let output = '';
  let guide: Guide;
  const processes: number[] = [];

  /** Resolves once the output matches, or fails with what was printed. */
  async function printed(match: RegExp, ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (!match.test(output)) {
      if (demo.exitCode !== null || Date.now() > until) {
        throw new Error(`the demo never printed ${match} (exit ${demo.exitCode}):\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  beforeAll(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-demo-'));
    demo = spawn(process.execPath, ['--import', 'tsx', 'examples/demo/main.ts'], {
      cwd: ROOT,
      env: {
        ...process.env,
        CUSTOS_DEMO_DIR: dataDir,
        CUSTOS_DEMO_FROM_SOURCE: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    demo.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    demo.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    await printed(/Press Ctrl-C to stop everything/, 120_000);
    processes.push(...descendantsOf(demo.pid!));
    guide = parseGuide(output);
  }, 150_000);

  afterAll(() => {
    for (const pid of [demo?.pid, ...processes]) {
      if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('prints a connect link and curl commands for loopback addresses only, and neither the platform nor the tenant admin key', () => {
    for (const url of output.match(/https?:\/\/[^\s'"]+/g) ?? []) {
      expect(new URL(url).hostname).toBe('127.0.0.1');
    }
    expect(guide.tokenCurl).toContain('subject_token_type=urn:ietf:params:oauth:token-type:jwt');
    // The demo's Custos runs on the embedded default, with PostgreSQL in the demo's folder, and its own key.
    const custos = processes.find((pid) =>
      /src\/main\.[jt]s\0/.test(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')),
    );
    expect(custos).toBeDefined();
    const env = fs.readFileSync(`/proc/${custos}/environ`, 'utf8').split('\0');
    const platformKey = env.find((e) => e.startsWith('CUSTOS_BOOTSTRAP_ADMIN_KEY='))!.split('=')[1];
    expect(platformKey.length).toBeGreaterThanOrEqual(32);
    expect(output).not.toContain(platformKey);
    // The tenant admin key is in a file of the demo's folder that only its owner reads, not on the screen.
    const adminKeyFile = path.join(dataDir, 'tenant-admin-key');
    expect(fs.statSync(adminKeyFile).mode & 0o777).toBe(0o600);
    expect(output).not.toContain(fs.readFileSync(adminKeyFile, 'utf8').trim());
    expect(env.some((e) => e.startsWith('DATABASE_URL=') || e.startsWith('REDIS_URL='))).toBe(false);
    expect(fs.existsSync(path.join(dataDir, 'embedded-postgres.json'))).toBe(true);
  });

  it('answers the printed curl with consent_required and a connect link before alice has connected', async () => {
    const answer = JSON.parse(await sh(guide.tokenCurl)) as Record<string, unknown>;
    expect(answer).toMatchObject({ error: 'consent_required', consent_reason: 'not_connected' });
    expect(String(answer.connect_uri)).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/connect\/cst_/);
  });

  it('connects alice by following the printed link through the provider’s sign-in and consent pages', async () => {
    const browser = new Browser();
    const end = await browser.clickThrough(guide.connectLink);
    const custos = new URL(guide.connectLink).origin;
    // Custos's page, the provider's sign-in and consent, back to Custos's callback, which says it is done.
    expect(end.visited.some((u) => u.includes('/interaction/'))).toBe(true);
    expect(end.url.startsWith(`${custos}/connect/callback/demo?`)).toBe(true);
    expect(end.status).toBe(200);
    expect(end.html).toMatch(/connected/i);
    await printed(/alice connected her Demo Provider account/, 10_000);
  });

  it('answers the printed curl, run as written, with alice’s own access token at the provider', async () => {
    const answer = JSON.parse(await sh(guide.tokenCurl)) as Record<string, unknown>;
    expect(answer).toMatchObject({
      token_type: 'Bearer',
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    });
    const accessToken = String(answer.access_token);
    expect(accessToken.length).toBeGreaterThan(20);
    // The provider knows this token as alice's: the source system sees the real user.
    const me = JSON.parse(await sh(guide.userinfoCurl.replace('PASTE_ACCESS_TOKEN_HERE', accessToken))) as {
      sub?: string;
    };
    expect(me.sub).toBe('alice');
  });

  it('shows the connection and the token exchange in the audit trail read with the printed auditor key', async () => {
    const { items } = JSON.parse(await sh(guide.auditCurl)) as {
      items: {
        action: string;
        outcome: string;
        subject: { userId: string | null };
        details: Record<string, unknown>;
      }[];
    };
    const actions = items.map((e) => e.action);
    expect(actions).toContain('connect_session.completed');
    const exchanges = items.filter((e) => e.action === 'token.exchange' && e.subject.userId === 'alice');
    // Newest first: the released token, naming the agent application of alice's JWT; then consent_required.
    expect(exchanges).toHaveLength(2);
    expect(exchanges[0]).toMatchObject({ outcome: 'allowed', details: { agentClientId: 'demo-agent-app' } });
    expect(exchanges[1].outcome).not.toBe('allowed');
    // The auditor key reads and nothing else.
    const key = /Bearer ([^']+)'/.exec(guide.auditCurl)![1];
    const res = await fetch(
      guide.auditCurl.match(/'(http[^']+)'/)![1].replace(/\/audit\/events.*$/, '/connectors'),
      {
        headers: { authorization: `Bearer ${key}` },
      },
    );
    expect(res.status).toBe(403);
  });

  it('stops Custos, its PostgreSQL and both providers on SIGINT, leaving no process behind', async () => {
    // Custos, the OAuth provider and the identity provider, as printed, and the embedded PostgreSQL.
    const ports = [
      ...new Set((output.match(/http:\/\/127\.0\.0\.1:\d+/g) ?? []).map((u) => Number(new URL(u).port))),
    ];
    expect(ports).toHaveLength(3);
    const pg = JSON.parse(fs.readFileSync(path.join(dataDir, 'embedded-postgres.json'), 'utf8')) as {
      port: number;
    };
    ports.push(pg.port);
    for (const port of ports) expect(await listening(port)).toBe(true);
    // Custos (Node) and PostgreSQL's server processes at least.
    expect(processes.length).toBeGreaterThanOrEqual(2);

    const exited = new Promise<number | null>((resolve) => demo.once('exit', (code) => resolve(code)));
    demo.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(processes.filter(alive)).toEqual([]);
    for (const port of ports) expect(await listening(port)).toBe(false);
    expect(output).toMatch(/Stopped\.\n$/);
  }, 60_000);
});
