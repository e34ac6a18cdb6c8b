/**
 * What the tests of the hosted pages need to act as a browser without one: a cookie jar, the local part of a
 * redirect to Custos, and reading a request body in the stand-in providers they start.
 */
import type http from 'node:http';

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
