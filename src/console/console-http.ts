/**
 * What every console route shares: the security headers (a strict CSP that allows the console's own script and
 * stylesheet and nothing else, no framing, no caching), the session cookie, and the two ways a request is run:
 * a page (the session is resolved, its scope checked, the page rendered) and an action (also the Origin, the
 * session's CSRF token and the role checked before the form is read). Whatever fails becomes a page that says
 * what happened and what to do next: never JSON, never a stack; a session that has ended leads back to sign-in.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { AuditService } from '../audit/audit.service.js';
import { RateLimitedException } from '../common/errors.js';
import { LOGGER } from '../common/logger.js';
import { CONFIG, type Config } from '../config/config.js';
import { mapError } from '../http/exception.filter.js';
import { TenantsService } from '../tenants/tenants.service.js';
import { parseFields } from './console.dto.js';
import { errorPage, layout, type Notice, type Viewer } from './console-pages.js';
import {
  ConsoleSessionsService,
  csrfTokenFor,
  sameSecret,
  SESSION_COOKIE,
  type ConsoleUser,
} from './console-sessions.service.js';
import type { Html } from './html.js';

export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

/** The headers of every console page and redirect. */
export const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'content-security-policy': CONSOLE_CSP,
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  // Same-origin requests keep their Origin (a POST under `no-referrer` would say `Origin: null`).
  'referrer-policy': 'same-origin',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), payment=()',
};

/** A `__Host-` cookie: Secure, HttpOnly, host-only, the whole site, SameSite=Strict. */
export function hostCookie(name: string, value: string, maxAgeSeconds: number): string {
  return `${name}=${value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}`;
}

export function cookies(req: FastifyRequest): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

/** Which users a page is for: a tenant's admins and auditors, or the platform's admins. */
export type Scope = 'tenant' | 'platform';

export interface Signed {
  user: ConsoleUser;
  /** The session's cookie token (its CSRF token is derived from it). */
  token: string;
  viewer: Viewer;
}

export interface TenantSigned extends Signed {
  tenantId: string;
}

export interface PageOut {
  title: string;
  path: string;
  body: Html;
  status?: number;
  notice?: Notice;
}

/** An answer that is not a page: a redirect (303) with optional cookies. */
export class Redirect {
  constructor(
    readonly location: string,
    readonly setCookies: string[] = [],
  ) {}
}

const SIGN_IN = '/console/sign-in';

/** A message as a sentence: with its full stop. */
const sentence = (m: string) => (/[.!?]$/.test(m) ? m : `${m}.`);

@Injectable()
export class ConsoleHttp {
  private readonly origin: string;

  constructor(
    @Inject(ConsoleSessionsService) private readonly sessions: ConsoleSessionsService,
    @Inject(TenantsService) private readonly tenants: TenantsService,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(CONFIG) config: Config,
    @Inject(LOGGER) private readonly log: Logger,
  ) {
    this.origin = new URL(config.publicUrl).origin;
  }

  /** The console's origin: where its forms must come from (CUSTOS_PUBLIC_URL). */
  get publicOrigin(): string {
    return this.origin;
  }

  async send(reply: FastifyReply, status: number, page: string, extra: Record<string, string> = {}) {
    await reply
      .status(status)
      .headers({ ...PAGE_HEADERS, ...extra })
      .send(page);
  }

  async redirect(reply: FastifyReply, r: Redirect): Promise<void> {
    void reply.status(303).headers({ ...PAGE_HEADERS, location: r.location });
    if (r.setCookies.length > 0) void reply.header('set-cookie', r.setCookies);
    await reply.send();
  }

  /** The signed-in user of the request, or null (no cookie, or no live session for it). */
  async signedIn(req: FastifyRequest): Promise<Signed | null> {
    const token = cookies(req)[SESSION_COOKIE];
    const user = await this.sessions.resolve(token);
    if (!user || token === undefined) return null;
    let tenantName: string | undefined;
    if (user.principal.tenantId !== null) {
      const t = await this.tenants.getTenant(user.principal.tenantId);
      tenantName = t.displayName ?? t.name;
    }
    return {
      user,
      token,
      viewer: {
        keyName: user.principal.name,
        role: user.principal.role,
        tenantName,
        csrf: csrfTokenFor(token),
      },
    };
  }

  /** Where a request without a live session goes: sign-in, and a stale cookie is cleared. */
  private signInAgain(req: FastifyRequest): Redirect {
    const stale = cookies(req)[SESSION_COOKIE] !== undefined;
    return new Redirect(
      stale ? `${SIGN_IN}?ended=expired` : SIGN_IN,
      stale ? [hostCookie(SESSION_COOKIE, '', 0)] : [],
    );
  }

  /** Checks a signed-in user against a scope: a redirect or refusal page, or null when they may go on. */
  private scopeProblem(
    s: Signed,
    scope: Scope,
  ): Redirect | { status: number; title: string; message: string } | null {
    const role = s.user.principal.role;
    if (scope === 'tenant' && role === 'platform_admin') return new Redirect('/console/platform');
    if (scope === 'platform' && role !== 'platform_admin') {
      return {
        status: 403,
        title: 'Not for this key',
        message: 'The platform view is for platform admin keys. Your key works on its own tenant’s pages.',
      };
    }
    return null;
  }

  /** Runs a page: its session, scope and query checked, then `render`. */
  async page<Q extends z.ZodType>(
    req: FastifyRequest,
    reply: FastifyReply,
    scope: Scope,
    querySchema: Q,
    render: (s: TenantSigned, q: z.output<Q>) => Promise<PageOut | Redirect>,
  ): Promise<void> {
    let signed: Signed | null = null;
    try {
      signed = await this.signedIn(req);
      if (!signed) return await this.redirect(reply, this.signInAgain(req));
      const problem = this.scopeProblem(signed, scope);
      if (problem instanceof Redirect) return await this.redirect(reply, problem);
      if (problem) {
        return await this.send(reply, problem.status, errorPage({ ...problem, viewer: signed.viewer }));
      }
      const q = parseFields(querySchema, req.query);
      const out = await render({ ...signed, tenantId: signed.user.principal.tenantId ?? '' }, q);
      if (out instanceof Redirect) return await this.redirect(reply, out);
      await this.send(
        reply,
        out.status ?? 200,
        layout({ title: out.title, path: out.path, viewer: signed.viewer, notice: out.notice }, out.body),
      );
    } catch (err) {
      await this.fail(req, reply, err, signed);
    }
  }

  /**
   * Runs an action (a POST): the Origin must be the console's own, the session live, the form's CSRF token the
   * session's, and for `admin` actions the role a tenant admin's (an auditor is refused, and the refusal is
   * audited). Then the form is validated and `run` does the work through the owning service; its redirect
   * (303) or page is the answer.
   */
  async action<F extends z.ZodType>(
    req: FastifyRequest,
    reply: FastifyReply,
    needs: 'admin' | 'read',
    formSchema: F,
    run: (s: TenantSigned, form: z.output<F>) => Promise<Redirect | PageOut>,
  ): Promise<void> {
    let signed: Signed | null = null;
    try {
      signed = await this.signedIn(req);
      if (!this.sameOrigin(req)) {
        if (signed) await this.deny(req, signed, 'origin');
        return await this.send(reply, 403, this.formRefusedPage(signed));
      }
      if (!signed) return await this.redirect(reply, this.signInAgain(req));
      const problem = this.scopeProblem(signed, 'tenant');
      if (problem instanceof Redirect) return await this.redirect(reply, problem);
      if (problem)
        return await this.send(reply, problem.status, errorPage({ ...problem, viewer: signed.viewer }));
      const given = (req.body as Record<string, unknown> | undefined)?.csrf;
      if (!sameSecret(signed.viewer.csrf, typeof given === 'string' ? given : undefined)) {
        await this.deny(req, signed, 'csrf');
        return await this.send(reply, 403, this.formRefusedPage(signed));
      }
      if (needs === 'admin' && signed.user.principal.role !== 'admin') {
        await this.deny(req, signed, 'role');
        return await this.send(
          reply,
          403,
          errorPage({
            title: 'Not allowed',
            message:
              'Your key is an auditor’s: it can read everything here but change nothing. Nothing was done.',
            viewer: signed.viewer,
          }),
        );
      }
      const form = parseFields(formSchema, req.body);
      const out = await run({ ...signed, tenantId: signed.user.principal.tenantId ?? '' }, form);
      if (out instanceof Redirect) return await this.redirect(reply, out);
      await this.send(
        reply,
        out.status ?? 200,
        layout({ title: out.title, path: out.path, viewer: signed.viewer, notice: out.notice }, out.body),
      );
    } catch (err) {
      await this.fail(req, reply, err, signed);
    }
  }

  /** Whether the request's Origin is the console's own (a browser sends it with every POST). */
  sameOrigin(req: FastifyRequest): boolean {
    const origin = req.headers.origin;
    return typeof origin === 'string' && origin === this.origin;
  }

  formRefusedPage(signed: Signed | null): string {
    return errorPage({
      title: 'Please try again',
      message: `This form has expired or was sent from somewhere else, so nothing was done. Open the console at ${this.origin}/console and repeat the action.`,
      viewer: signed?.viewer,
    });
  }

  /** A refused console action, audited as the admin API's refusals are (`access.denied`). */
  private async deny(req: FastifyRequest, s: Signed, reason: 'origin' | 'csrf' | 'role'): Promise<void> {
    try {
      await this.audit.record({
        tenantId: s.user.principal.tenantId,
        action: 'access.denied',
        outcome: 'denied',
        actor: s.user.actor,
        details: { reason, route: `${req.method} ${req.routeOptions?.url ?? ''}`, via: 'console' },
      });
    } catch (err) {
      this.log.error({ err: { name: (err as Error).name } }, 'could not write a denial audit event');
    }
  }

  /** Any failure, as a page with its status (a 401 means the session is gone: back to sign-in). */
  async fail(req: FastifyRequest, reply: FastifyReply, err: unknown, signed: Signed | null): Promise<void> {
    const mapped = mapError(err);
    if (mapped.status === 401) return this.redirect(reply, this.signInAgain(req));
    if (mapped.status >= 500) {
      const e = err as { name?: string; code?: unknown; stack?: string };
      if (mapped.status !== 503) {
        this.log.error({ err: { name: e?.name, code: e?.code, stack: e?.stack } }, 'console request failed');
      } else {
        this.log.warn({ err: { name: e?.name, code: e?.code } }, 'console request could not be served');
      }
    }
    const extra: Record<string, string> = {};
    if (mapped.status === 503) extra['retry-after'] = '5';
    if (err instanceof RateLimitedException) extra['retry-after'] = String(err.retryAfterSeconds);
    const said = sentence(mapped.message);
    const shown =
      mapped.status === 503
        ? { title: 'Temporarily unavailable', message: `${said} Nothing was changed; try again in a minute.` }
        : mapped.status >= 500
          ? {
              title: 'Something went wrong',
              message: 'An unexpected error stopped this request. Nothing was changed.',
            }
          : mapped.status === 404
            ? { title: 'Not found', message: `${said} It may have been deleted, or the address is wrong.` }
            : mapped.status === 429
              ? { title: 'Too many attempts', message: `${said} Wait a little, then try again.` }
              : { title: 'Request not accepted', message: `${said} Nothing was changed.` };
    await this.send(
      reply,
      mapped.status,
      errorPage({
        ...shown,
        viewer: signed?.viewer,
        reference: mapped.status >= 500 && mapped.status !== 503 ? req.id : undefined,
      }),
      extra,
    );
  }
}
