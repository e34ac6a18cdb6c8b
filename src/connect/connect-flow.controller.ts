/**
 * The hosted connect pages (no admin key: the link is the capability), and the tenant's logo they show. Every
 * page carries the page security headers (no-store, no-referrer, a strict CSP, DENY framing).
 */
import { Controller, Get, Inject, Param, Post, Req, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { timingSafeEqual } from 'node:crypto';
import { UuidParam } from '../common/validation.js';
import { CONFIG, type Config } from '../config/config.js';
import { TenantsService } from '../tenants/tenants.service.js';
import { connectPage, outcomePage, pageHeaders, signInPage } from './connect-pages.js';
import { ConnectLoginService, LOGIN_COOKIE, LOGIN_FLOW_COOKIE } from './connect-login.service.js';
import { cookie, FlowPageError } from './browser-binding.js';
import { ConnectFlowService, CSRF_COOKIE, FLOW_COOKIE, type FlowEnd } from './connect-flow.service.js';

function cookies(req: FastifyRequest): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

function form(req: FastifyRequest): Record<string, string> {
  const body = (req.body ?? {}) as Record<string, unknown>;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(body)) if (typeof v === 'string') out[k] = v;
  return out;
}

function csrfOk(req: FastifyRequest): boolean {
  const expected = cookies(req)[CSRF_COOKIE];
  const given = form(req).csrf;
  if (!expected || !given || given.length > 200) return false;
  // Compared as bytes: strings of one length can differ in UTF-8 length, which timingSafeEqual refuses.
  const [a, b] = [Buffer.from(expected), Buffer.from(given)];
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * A redirect's query as single strings. A parameter sent twice is a malformed response (RFC 6749 §3.1): the
 * page says so rather than anything reading an array where it expects a string.
 */
function singleValued(req: FastifyRequest): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries((req.query ?? {}) as Record<string, unknown>)) {
    if (typeof v !== 'string') {
      throw new FlowPageError(400, 'Sign-in not recognised', 'The sign-in response is malformed.');
    }
    out[k] = v;
  }
  return out;
}

@ApiExcludeController()
@Controller('connect')
export class ConnectFlowController {
  constructor(
    @Inject(ConnectFlowService) private readonly flow: ConnectFlowService,
    @Inject(CONFIG) private readonly config: Config,
    @Inject(ConnectLoginService) private readonly login: ConnectLoginService,
    @Inject(TenantsService) private readonly tenants: TenantsService,
  ) {}

  /**
   * The tenant's logo, for its hosted pages (and anyone: a logo is not a secret), at a stable address. Served
   * as the image it was checked to be, never sniffed, never a document: `nosniff`, a CSP that allows nothing
   * and sandboxes it, same-origin only. Cached for five minutes with an ETag, or for a year when the request
   * names the current version (`?v=`, as the pages do).
   */
  @Get('branding/:tenantId/logo')
  async logo(
    @Req() req: FastifyRequest,
    @Res() reply: FastifyReply,
    @Param('tenantId', UuidParam) tenantId: string,
  ) {
    await this.answer(reply, async () => {
      const logo = await this.tenants.logo(tenantId);
      if (!logo) throw new FlowPageError(404, 'Page not found', 'There is no logo at this address.');
      const sha = logo.logo_sha256.toString('hex');
      const etag = `"${sha}"`;
      const version = (req.query as Record<string, unknown> | undefined)?.v;
      const headers = {
        etag,
        'cache-control':
          typeof version === 'string' && version.length >= 16 && sha.startsWith(version)
            ? 'public, max-age=31536000, immutable'
            : 'public, max-age=300',
        'x-content-type-options': 'nosniff',
        'content-security-policy': "default-src 'none'; sandbox; frame-ancestors 'none'",
        'cross-origin-resource-policy': 'same-origin',
        'referrer-policy': 'no-referrer',
      };
      const given = req.headers['if-none-match'];
      if (typeof given === 'string' && given.split(',').some((t) => t.trim().replace(/^W\//, '') === etag)) {
        await reply.status(304).headers(headers).send();
        return;
      }
      await reply
        .status(200)
        .headers({
          ...headers,
          'content-type': logo.logo_content_type,
          'content-disposition': `inline; filename="logo.${logo.logo_content_type === 'image/png' ? 'png' : 'jpg'}"`,
        })
        .send(logo.logo);
    });
  }

  @Get('login/callback')
  async loginCallback(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    const rawQuery = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '';
    await this.answer(reply, async () => {
      const { location, loginCookie } = await this.login.complete(
        singleValued(req),
        rawQuery,
        cookies(req)[LOGIN_FLOW_COOKIE],
      );
      await reply
        .status(303)
        .headers({ ...pageHeaders(), location })
        .header('set-cookie', [loginCookie, cookie(LOGIN_FLOW_COOKIE, '', 0, 'Lax')])
        .send();
    });
  }

  @Post(':token/login')
  async startLogin(@Req() req: FastifyRequest, @Res() reply: FastifyReply, @Param('token') token: string) {
    await this.answer(reply, async () => {
      if (!csrfOk(req)) throw this.formExpired(token);
      const { session } = await this.flow.session(token);
      const { location, browserCookie } = await this.login.begin(session, token);
      await reply
        .status(303)
        .headers({ ...pageHeaders(), location, 'set-cookie': browserCookie })
        .send();
    });
  }

  @Get('callback/:provider')
  async callback(
    @Req() req: FastifyRequest,
    @Res() reply: FastifyReply,
    @Param('provider') provider: string,
  ) {
    const rawQuery = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '';
    await this.answer(reply, async () => {
      // The browser binding is spent whatever the answer was.
      void reply.header('set-cookie', cookie(FLOW_COOKIE, '', 0, 'Lax'));
      await this.end(
        reply,
        await this.flow.callback(provider, singleValued(req), rawQuery, cookies(req)[FLOW_COOKIE]),
      );
    });
  }

  @Get(':token')
  async show(@Req() req: FastifyRequest, @Res() reply: FastifyReply, @Param('token') token: string) {
    await this.answer(reply, async () => {
      const { session, definition, scopes, csrf } = await this.flow.open(token);
      const brand = this.flow.brand(session);
      if (!this.flow.signedIn(session, cookies(req)[LOGIN_COOKIE])) {
        const settings = await this.login.settings(session.tenant_id);
        const idpOrigin = settings ? [new URL(settings.idp.issuer).origin] : [];
        await reply
          .status(200)
          .headers({
            ...pageHeaders(idpOrigin, brand),
            'set-cookie': cookie(CSRF_COOKIE, csrf, 3600, 'Strict'),
          })
          .send(
            signInPage({
              tenantName: brand.name,
              providerName: definition.name,
              identityProviderName: settings?.idp.name ?? 'your organisation',
              action: `${this.config.publicUrl}/connect/${token}/login`,
              csrfToken: csrf,
              brand,
            }),
          );
        return;
      }
      const html = connectPage({
        tenantName: brand.name,
        providerName: definition.name,
        scopes,
        mode: definition.authMode === 'oauth2' ? 'oauth2' : 'api_key',
        action: `${this.config.publicUrl}/connect/${token}/${definition.authMode === 'oauth2' ? 'start' : 'api-key'}`,
        csrfToken: csrf,
        brand,
      });
      const origin = definition.oauth2 ? [new URL(definition.oauth2.authorizationUrl).origin] : [];
      await reply
        .status(200)
        .headers({ ...pageHeaders(origin, brand), 'set-cookie': cookie(CSRF_COOKIE, csrf, 3600, 'Strict') })
        .send(html);
    });
  }

  @Post(':token/start')
  async start(@Req() req: FastifyRequest, @Res() reply: FastifyReply, @Param('token') token: string) {
    await this.answer(reply, async () => {
      if (!csrfOk(req)) throw this.formExpired(token);
      const { location, browserCookie } = await this.flow.start(token, cookies(req)[LOGIN_COOKIE]);
      await reply
        .status(303)
        .headers({ ...pageHeaders(), location, 'set-cookie': browserCookie })
        .send();
    });
  }

  @Post(':token/api-key')
  async apiKey(@Req() req: FastifyRequest, @Res() reply: FastifyReply, @Param('token') token: string) {
    await this.answer(reply, async () => {
      if (!csrfOk(req)) throw this.formExpired(token);
      await this.end(
        reply,
        await this.flow.submitApiKey(token, form(req).apiKey ?? '', cookies(req)[LOGIN_COOKIE]),
      );
    });
  }

  /** A form whose CSRF token does not match its cookie (expired, or sent from elsewhere): back to the link. */
  private formExpired(token: string): FlowPageError {
    return new FlowPageError(
      403,
      'Please try again',
      'This form has expired or was sent from somewhere else, so nothing was done. Open your link again and try once more.',
      {
        actions: /^cst_[A-Za-z0-9_-]{43}$/.test(token)
          ? [{ href: `${this.config.publicUrl}/connect/${token}`, label: 'Open the link again' }]
          : [],
      },
    );
  }

  /** The end of a step: a 303 to where it leads (`returnTo` with the outcome), or its page. */
  private async end(reply: FastifyReply, done: FlowEnd): Promise<void> {
    if (done.location) {
      await reply
        .status(303)
        .headers({ ...pageHeaders(), location: done.location })
        .send();
      return;
    }
    await reply
      .status(200)
      .headers(pageHeaders([], done.brand))
      .send(outcomePage({ title: done.title, message: done.message, brand: done.brand }));
  }

  /**
   * Runs a step and renders the page it ended with. Any other error (an outage, a bug) goes on to the global
   * exception filter, which answers every /connect route with a page too (503 with Retry-After, 500 with the
   * request id), so this stays the flow's own pages only.
   */
  private async answer(reply: FastifyReply, run: () => Promise<void>): Promise<void> {
    try {
      await run();
    } catch (err) {
      if (!(err instanceof FlowPageError)) throw err;
      await reply
        .status(err.status)
        .headers(pageHeaders([], err.more.brand))
        .send(
          outcomePage({
            title: err.title,
            message: err.message,
            isError: err.status >= 400,
            actions: err.more.actions,
            brand: err.more.brand,
          }),
        );
    }
  }
}
