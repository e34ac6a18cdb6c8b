/**
 * The console's door and the platform view: sign-in with an admin key (a form with its own CSRF cookie, the
 * Origin checked), sign-out, the stylesheet and script, the tenant list a platform admin sees, and a page for
 * any other /console address. The tenant pages are ConsoleTenantController's.
 */
import { Controller, Get, Inject, Param, Post, Req, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { CommonException } from '../common/errors.js';
import { UuidParam } from '../common/validation.js';
import { TenantsService } from '../tenants/tenants.service.js';
import { ASSETS } from './console-assets.js';
import { CONSOLE_CSP, cookies, ConsoleHttp, hostCookie, PAGE_HEADERS, Redirect } from './console-http.js';
import { errorPage, signInPage, ssoDonePage, ssoPage, tenantBody, tenantsBody } from './console-pages.js';
import { ConsoleSsoService, SSO_FLOW_COOKIE, SSO_FLOW_SECONDS, SsoRefused } from './console-sso.service.js';
import {
  ABSOLUTE_SECONDS,
  ConsoleSessionsService,
  newSignInForm,
  sameSecret,
  SESSION_COOKIE,
  SIGN_IN_COOKIE,
  SIGN_IN_FORM_SECONDS,
  signInFormOk,
} from './console-sessions.service.js';
import {
  csrfFormSchema,
  emptyQuerySchema,
  parseFields,
  signInFormSchema,
  signInQuerySchema,
  ssoQuerySchema,
} from './console.dto.js';

@ApiExcludeController()
@Controller('console')
export class ConsoleController {
  constructor(
    @Inject(ConsoleHttp) private readonly http: ConsoleHttp,
    @Inject(ConsoleSessionsService) private readonly sessions: ConsoleSessionsService,
    @Inject(TenantsService) private readonly tenants: TenantsService,
    @Inject(ConsoleSsoService) private readonly sso: ConsoleSsoService,
  ) {}

  @Get()
  async home(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    try {
      const signed = await this.http.signedIn(req);
      const to = !signed
        ? '/console/sign-in'
        : signed.user.principal.role === 'platform_admin'
          ? '/console/platform'
          : '/console/connections';
      await this.http.redirect(reply, new Redirect(to));
    } catch (err) {
      await this.http.fail(req, reply, err, null);
    }
  }

  @Get('sign-in')
  async signInForm(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    try {
      const q = parseFields(signInQuerySchema, req.query);
      if (await this.http.signedIn(req)) return await this.http.redirect(reply, new Redirect('/console'));
      const form = newSignInForm();
      const status =
        q.ended === 'signed_out'
          ? 'You have signed out.'
          : q.ended === 'expired'
            ? 'Your session has ended. Sign in again to continue.'
            : undefined;
      await this.http.send(reply, 200, signInPage({ formToken: form.token, status }), {
        'set-cookie': hostCookie(SIGN_IN_COOKIE, form.secret, SIGN_IN_FORM_SECONDS),
      });
    } catch (err) {
      await this.http.fail(req, reply, err, null);
    }
  }

  @Post('sign-in')
  async signIn(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    try {
      const form = parseFields(signInFormSchema, req.body);
      if (!this.http.sameOrigin(req) || !signInFormOk(cookies(req)[SIGN_IN_COOKIE], form.csrf)) {
        return await this.http.send(reply, 403, this.http.formRefusedPage(null));
      }
      let session: Awaited<ReturnType<ConsoleSessionsService['signIn']>>;
      try {
        session = await this.sessions.signIn(form.key, req.ip);
      } catch (err) {
        if (err instanceof CommonException && err.code === 'unauthenticated')
          return await this.keyRefused(reply);
        throw err;
      }
      const { token, user } = session;
      await this.http.redirect(
        reply,
        new Redirect(
          user.principal.role === 'platform_admin' ? '/console/platform' : '/console/connections',
          [hostCookie(SESSION_COOKIE, token, ABSOLUTE_SECONDS), hostCookie(SIGN_IN_COOKIE, '', 0)],
        ),
      );
    } catch (err) {
      await this.http.fail(req, reply, err, null);
    }
  }

  /** The sign-in form again, with a new token and the reason. */
  private async keyRefused(reply: FastifyReply): Promise<void> {
    const again = newSignInForm();
    await this.http.send(
      reply,
      401,
      signInPage({
        formToken: again.token,
        error:
          'This admin key was not accepted. Check that you pasted the whole key and that it has not been revoked.',
      }),
      { 'set-cookie': hostCookie(SIGN_IN_COOKIE, again.secret, SIGN_IN_FORM_SECONDS) },
    );
  }

  /** The sign-in page's single sign-on form: on to the tenant's own address. */
  @Get('sso')
  async ssoByTenantId(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    try {
      const q = parseFields(ssoQuerySchema, req.query);
      await this.http.redirect(reply, new Redirect(`/console/sso/${q.tenant}`));
    } catch (err) {
      await this.http.fail(req, reply, err, null);
    }
  }

  /** The identity provider's answer: a session for a listed user, else a page that says why not (audited). */
  @Get('sso/callback')
  async ssoCallback(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    const spent = hostCookie(SSO_FLOW_COOKIE, '', 0);
    try {
      const raw = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '';
      const query = Object.fromEntries(
        Object.entries((req.query ?? {}) as Record<string, unknown>).map(([k, v]) => [
          k,
          typeof v === 'string' ? v : undefined,
        ]),
      );
      const { token, user } = await this.sso.complete(query, raw, cookies(req)[SSO_FLOW_COOKIE]);
      const to = user.principal.role === 'platform_admin' ? '/console/platform' : '/console/connections';
      void reply.header('set-cookie', [hostCookie(SESSION_COOKIE, token, ABSOLUTE_SECONDS), spent]);
      await this.http.send(reply, 200, ssoDonePage(to));
    } catch (err) {
      if (err instanceof SsoRefused) {
        return await this.http.send(
          reply,
          err.status,
          errorPage({
            title: err.title,
            message: err.text,
            back: { href: '/console/sign-in', label: 'Back to sign-in' },
          }),
          { 'set-cookie': spent },
        );
      }
      await this.http.fail(req, reply, err, null);
    }
  }

  /** A tenant's single sign-on door: "Sign in with <identity provider>". */
  @Get('sso/:tenantId')
  async ssoForm(@Req() req: FastifyRequest, @Res() reply: FastifyReply, @Param('tenantId') tenantId: string) {
    try {
      parseFields(emptyQuerySchema, req.query);
      const id = new UuidParam().transform(tenantId);
      const { login, oidc } = await this.sso.settings(id);
      const tenant = await this.tenants.getTenant(id);
      const form = newSignInForm();
      await this.http.send(
        reply,
        200,
        ssoPage({
          tenantId: id,
          tenantName: tenant.displayName ?? tenant.name,
          identityProvider: login.identityProvider,
          formToken: form.token,
        }),
        {
          // The form's redirect goes on to the identity provider, which form-action must allow.
          'content-security-policy': CONSOLE_CSP.replace(
            "form-action 'self'",
            `form-action 'self' ${new URL(oidc.idp.issuer).origin}`,
          ),
          'set-cookie': hostCookie(SIGN_IN_COOKIE, form.secret, SIGN_IN_FORM_SECONDS),
        },
      );
    } catch (err) {
      await this.http.fail(req, reply, err, null);
    }
  }

  /** Starts the sign-in at the tenant's identity provider (login CSRF: the form's token and the Origin). */
  @Post('sso/:tenantId')
  async ssoStart(
    @Req() req: FastifyRequest,
    @Res() reply: FastifyReply,
    @Param('tenantId') tenantId: string,
  ) {
    try {
      const id = new UuidParam().transform(tenantId);
      const form = parseFields(csrfFormSchema, req.body);
      if (!this.http.sameOrigin(req) || !signInFormOk(cookies(req)[SIGN_IN_COOKIE], form.csrf)) {
        return await this.http.send(reply, 403, this.http.formRefusedPage(null));
      }
      const { location, browser } = await this.sso.begin(id);
      void reply.status(303).headers({ ...PAGE_HEADERS, location });
      void reply.header('set-cookie', [
        `${SSO_FLOW_COOKIE}=${browser}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=${SSO_FLOW_SECONDS}`,
        hostCookie(SIGN_IN_COOKIE, '', 0),
      ]);
      await reply.send();
    } catch (err) {
      await this.http.fail(req, reply, err, null);
    }
  }

  @Post('sign-out')
  async signOut(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    const signed = await this.http.signedIn(req).catch(() => null);
    try {
      if (!signed) {
        return await this.http.redirect(
          reply,
          new Redirect('/console/sign-in?ended=expired', [hostCookie(SESSION_COOKIE, '', 0)]),
        );
      }
      const given = (req.body as Record<string, unknown> | undefined)?.csrf;
      if (
        !this.http.sameOrigin(req) ||
        !sameSecret(signed.viewer.csrf, typeof given === 'string' ? given : undefined)
      ) {
        return await this.http.send(reply, 403, this.http.formRefusedPage(signed));
      }
      await this.sessions.signOut(signed.token, signed.user);
      await this.http.redirect(
        reply,
        new Redirect('/console/sign-in?ended=signed_out', [hostCookie(SESSION_COOKIE, '', 0)]),
      );
    } catch (err) {
      await this.http.fail(req, reply, err, signed);
    }
  }

  /** The stylesheet and the script: public, cached for a year when asked for by their version. */
  @Get('assets/:name')
  async asset(@Req() req: FastifyRequest, @Res() reply: FastifyReply, @Param('name') name: string) {
    const asset = Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined;
    if (!asset) {
      return this.http.send(reply, 404, errorPage({ title: 'Not found', message: 'There is no such file.' }));
    }
    const version = (req.query as Record<string, unknown> | undefined)?.v;
    const etag = `"${asset.version}"`;
    const headers = {
      etag,
      'cache-control':
        version === asset.version ? 'public, max-age=31536000, immutable' : 'public, max-age=300',
      'x-content-type-options': 'nosniff',
      'cross-origin-resource-policy': 'same-origin',
      'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
    };
    if (req.headers['if-none-match'] === etag) return reply.status(304).headers(headers).send();
    await reply
      .status(200)
      .headers({ ...headers, 'content-type': asset.contentType })
      .send(asset.body);
  }

  @Get('platform')
  platform(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    return this.http.page(req, reply, 'platform', emptyQuerySchema, async () => ({
      title: 'Tenants',
      path: '/console/platform',
      body: tenantsBody({ tenants: await this.tenants.listTenants() }),
    }));
  }

  @Get('platform/tenants/:tenantId')
  platformTenant(
    @Req() req: FastifyRequest,
    @Res() reply: FastifyReply,
    @Param('tenantId') tenantId: string,
  ) {
    return this.http.page(req, reply, 'platform', emptyQuerySchema, async () => {
      const t = await this.tenants.getTenant(new UuidParam().transform(tenantId));
      return {
        title: t.displayName ?? t.name,
        path: `/console/platform/tenants/${t.id}`,
        body: tenantBody(t),
      };
    });
  }

  /** Any other address under /console: a page, not the API's JSON. */
  @Get('*')
  async notFound(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    const signed = await this.http.signedIn(req).catch(() => null);
    await reply
      .status(404)
      .headers(PAGE_HEADERS)
      .send(
        errorPage({
          title: 'Page not found',
          message: 'There is no console page at this address.',
          viewer: signed?.viewer,
        }),
      );
  }
}
