/**
 * What the tests of the hosted pages need to act as a browser without one: a cookie jar, the local part of a
 * redirect to Custos, and reading a request body in the stand-in providers they start. And what the Chromium
 * tests share: where Debian's Chromium is, a `describe` that requires it in CI, and a colour comparison.
 */
import fs from 'node:fs';
import type http from 'node:http';

/** Debian's Chromium (`apt-get install -y chromium`), or CHROMIUM_PATH. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** `describe` for tests that drive Chromium: skipped (with a note) where it is missing, an error in CI. */
export function describeBrowser(name: string, fn: () => void): void {
  if (fs.existsSync(CHROMIUM)) {
    describe(name, fn);
    return;
  }
  if (process.env.CI === 'true') {
    throw new Error(
      `Chromium is required in CI: ${CHROMIUM} not found (install it with apt-get install -y chromium)`,
    );
  }
  process.stderr.write(`browser tests skipped: ${CHROMIUM} not found (apt-get install -y chromium)\n`);
  describe.skip(name, fn);
}

/** A pixel's colour within 3 of each channel of `expected`: `expected` itself, else what was found. */
export const near = (actual: number[], expected: number[]) =>
  actual.slice(0, 3).every((v, i) => Math.abs(v - expected[i]) <= 3) ? expected : actual.slice(0, 3);

/** Cookies as a browser keeps them: set by Set-Cookie, removed by Max-Age=0, sent back in one header. */
export function cookieJar() {
  const jar = new Map<string, string>();
  return {
    take(setCookie: string | string[] | number | undefined) {
      for (const c of Array.isArray(setCookie) ? setCookie : setCookie ? [String(setCookie)] : []) {
        const [pair] = c.split(';');
        const i = pair.indexOf('=');
        if (/Max-Age=0/i.test(c)) jar.delete(pair.slice(0, i));
        else jar.set(pair.slice(0, i), pair.slice(i + 1));
      }
    },
    header: () => [...jar].map(([k, v]) => `${k}=${v}`).join('; '),
    get: (name: string) => jar.get(name),
  };
}

/** Path and query of a URL on Custos, to request in-process; with `origin`, the URL must be on it. */
export function localPath(url: string, origin?: string): string {
  const u = new URL(url);
  if (origin !== undefined && u.origin !== origin) {
    throw new Error(`expected a URL on ${origin}, got one on ${u.origin}`);
  }
  return u.pathname + u.search;
}

export async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
