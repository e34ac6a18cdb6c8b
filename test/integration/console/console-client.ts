/**
 * A browser stand-in for the console tests: a cookie jar, the console's Origin on every POST (as a browser
 * sends it), sign-in through the real form, and the CSRF token of the pages it has read.
 */
import { cookieJar } from '../../support/browser.js';
import type { Reply, TestApp } from '../../support/app.js';

/** A console answer, and its page with the layout's whitespace folded (see `flatten`). */
export type PageReply = Reply & { flat: string };

export interface ConsoleClient {
  jar: ReturnType<typeof cookieJar>;
  /** The CSRF token on the last page read. */
  csrf: string;
  get(path: string): Promise<PageReply>;
  /** A form POST; `headers` override the Origin (or drop it with `origin: ''`). */
  post(path: string, fields: Record<string, string>, headers?: Record<string, string>): Promise<PageReply>;
}

/**
 * A page without its layout's whitespace: runs of whitespace as one space, and none next to a tag's `<` or
 * `>` (escaped text and attribute values hold neither), so that assertions do not depend on line breaks.
 */
export const flatten = (raw: string) => raw.replace(/\s+/g, ' ').replace(/ ?([<>]) ?/g, '$1');

export const originOf = (app: TestApp) => new URL(app.custos.runtime.config.publicUrl).origin;

export const csrfOf = (raw: string): string | undefined => /name="csrf" value="([^"]+)"/.exec(raw)?.[1];

export function consoleClient(app: TestApp): ConsoleClient {
  const jar = cookieJar();
  const client: ConsoleClient = {
    jar,
    csrf: '',
    async get(path) {
      const res = await app.request('GET', path, { headers: jar.header() ? { cookie: jar.header() } : {} });
      jar.take(res.headers['set-cookie']);
      client.csrf = csrfOf(res.raw) ?? client.csrf;
      return { ...res, flat: flatten(res.raw) };
    },
    async post(path, fields, headers = {}) {
      const h: Record<string, string> = {
        'content-type': 'application/x-www-form-urlencoded',
        origin: originOf(app),
        ...headers,
      };
      if (h.origin === '') delete h.origin;
      if (jar.header()) h.cookie = jar.header();
      const res = await app.request('POST', path, {
        payload: new URLSearchParams(fields).toString(),
        headers: h,
      });
      jar.take(res.headers['set-cookie']);
      return { ...res, flat: flatten(res.raw) };
    },
  };
  return client;
}

/** Signs in through the form with `key`; throws unless it led into the console. */
export async function signIn(app: TestApp, key: string): Promise<ConsoleClient> {
  const c = consoleClient(app);
  const form = await c.get('/console/sign-in');
  const res = await c.post('/console/sign-in', { csrf: c.csrf, key });
  if (res.status !== 303 || !String(res.headers.location).startsWith('/console/')) {
    throw new Error(`sign-in failed: ${res.status} ${String(res.headers.location)} ${form.status}`);
  }
  // Reads a page, for its CSRF token.
  await c.get(String(res.headers.location));
  return c;
}
