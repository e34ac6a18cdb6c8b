/**
 * The "my connections" portal's pages (no admin key: the link, then the browser session it starts, is the
 * capability). Under /connect, so every failure outside the portal's own pages is a hosted error page too.
 * Every page carries the hosted pages' security headers (no-store, no-referrer, a strict CSP, DENY framing).
 */
import { Controller, Get, Inject, Param, Post, Req, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { FlowPageError, cookie } from './browser-binding.js';
import { outcomePage, pageHeaders, type PageAction, type PageBranding } from './connect-pages.js';
import { disconnectConfirmPage, portalLinkPage, portalPage, portalSignInPage } from './portal-pages.js';
import { PORTAL_COOKIE, PortalService } from './portal.service.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function cookieOf(req: FastifyRequest, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

function formField(req: FastifyRequest, name: string): string | undefined {
  const v = ((req.body ?? {}) as Record<string, unknown>)[name];
  return typeof v === 'string' ? v : undefined;
}

/** A redirect's query as single strings; a parameter sent twice is a malformed response (RFC 6749 §3.1). */
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
@Controller('connect/portal')
export class PortalController {
  constructor(@Inject(PortalService) private readonly portal: PortalService) {}

  /** The page: the person's connections, or the sign-in step first. */
  @Get()
  async show(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    await this.answer(reply, async () => {
      const session = cookieOf(req, PORTAL_COOKIE);
      const view = await this.portal.view(session);
      const csrfToken = this.portal.csrfToken(session!);
      if (view.kind === 'sign_in') {
        await this.html(
          reply,
          portalSignInPage({
            brand: view.brand,
            identityProviderName: view.identityProviderName,
            action: `${this.portal.home}/login`,
            csrfToken,
          }),
          view.brand,
          [view.identityProviderOrigin],
        );
        return;
      }
      await this.html(
        reply,
        portalPage({
          brand: view.brand,
          userId: view.userId,
          connections: view.connections,
          base: this.portal.home,
          csrfToken,
          back: view.back,
        }),
        view.brand,
      );
    });
  }

  /** The identity provider's answer to the portal's sign-in. */
  @Get('login/callback')
  async loginCallback(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    const rawQuery = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '';
    await this.answer(reply, async () => {
      const { setCookie } = await this.portal.completeSignIn(
        singleValued(req),
        rawQuery,
        cookieOf(req, PORTAL_COOKIE),
      );
      await this.redirect(reply, this.portal.home, setCookie);
    });
  }

  /** The link's page: a button that opens it (fetching the address, as a link preview does, uses nothing). */
  @Get(':token')
  async link(@Res() reply: FastifyReply, @Param('token') token: string) {
    await this.answer(reply, async () => {
      const { brand } = await this.portal.linkPage(token);
      await this.html(reply, portalLinkPage({ brand, action: `${this.portal.home}/${token}` }), brand);
    });
  }

  /** Opening the link, once: it becomes this browser's session, and the address loses the token. */
  @Post(':token')
  async open(@Res() reply: FastifyReply, @Param('token') token: string) {
    await this.answer(reply, async () => {
      const { setCookie } = await this.portal.openLink(token);
      await this.redirect(reply, this.portal.home, setCookie);
    });
  }

  @Post('login')
  async login(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    await this.answer(reply, async () => {
      const session = this.checkedForm(req);
      await this.redirect(reply, await this.portal.beginSignIn(session));
    });
  }

  @Post('logout')
  async logout(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    await this.answer(reply, async () => {
      const { brand, back } = await this.portal.signOut(this.checkedForm(req));
      await reply
        .status(200)
        .headers(pageHeaders([], brand))
        .header('set-cookie', cookie(PORTAL_COOKIE, '', 0, 'Lax'))
        .send(
          outcomePage({
            title: 'Signed out',
            message:
              'You are signed out of this page. To see your connections again, open them from the app.',
            actions: back,
            brand,
          }),
        );
    });
  }

  /** Disconnecting: the first post asks for confirmation, the second (with `confirm=yes`) disconnects. */
  @Post('connections/:id/disconnect')
  async disconnect(@Req() req: FastifyRequest, @Res() reply: FastifyReply, @Param('id') id: string) {
    await this.answer(reply, async () => {
      const session = this.checkedForm(req);
      const connectionId = this.connectionId(id);
      const result = await this.portal.disconnect(session, connectionId, formField(req, 'confirm') === 'yes');
      if (!result.done) {
        await this.html(
          reply,
          disconnectConfirmPage({
            brand: result.brand,
            providerName: result.providerName,
            action: `${this.portal.home}/connections/${connectionId}/disconnect`,
            csrfToken: this.portal.csrfToken(session),
            back: this.portal.home,
          }),
          result.brand,
        );
        return;
      }
      await this.html(
        reply,
        outcomePage({
          title: 'Disconnected',
          message: result.atProvider
            ? `Your ${result.providerName} account is disconnected: the stored credential was deleted, and ${result.providerName} is being asked to revoke it.`
            : `Your ${result.providerName} account is disconnected: the stored credential was deleted.`,
          actions: [{ href: this.portal.home, label: 'Back to your connections' }],
          brand: result.brand,
        }),
        result.brand,
      );
    });
  }

  /** Reconnecting: a new connect link for the same provider, where the browser goes at once. */
  @Post('connections/:id/reconnect')
  async reconnect(@Req() req: FastifyRequest, @Res() reply: FastifyReply, @Param('id') id: string) {
    await this.answer(reply, async () => {
      const session = this.checkedForm(req);
      await this.redirect(reply, await this.portal.reconnect(session, this.connectionId(id)));
    });
  }

  /** The session cookie of a form whose CSRF token matches it; else a page saying nothing was done. */
  private checkedForm(req: FastifyRequest): string {
    const session = cookieOf(req, PORTAL_COOKIE);
    if (!this.portal.csrfValid(session, formField(req, 'csrf'))) {
      throw new FlowPageError(
        403,
        'Please try again',
        'This form has expired or was sent from somewhere else, so nothing was done. Open your connections again and try once more.',
        { actions: [{ href: this.portal.home, label: 'Open your connections' }] },
      );
    }
    return session!;
  }

  private connectionId(id: string): string {
    if (!UUID.test(id)) {
      throw new FlowPageError(
        404,
        'Connection not found',
        'There is no such connection. Nothing was changed.',
        {
          actions: [{ href: this.portal.home, label: 'Back to your connections' }],
        },
      );
    }
    return id.toLowerCase();
  }

  private async html(reply: FastifyReply, body: string, brand: PageBranding, formTargets: string[] = []) {
    await reply.status(200).headers(pageHeaders(formTargets, brand)).send(body);
  }

  private async redirect(reply: FastifyReply, location: string, setCookie?: string): Promise<void> {
    await reply
      .status(303)
      .headers({ ...pageHeaders(), location, ...(setCookie ? { 'set-cookie': setCookie } : {}) })
      .send();
  }

  /**
   * Runs a step and renders the page it ended with. Anything else (an outage, a bug) goes on to the global
   * exception filter, which answers every /connect address with a page too.
   */
  private async answer(reply: FastifyReply, run: () => Promise<void>): Promise<void> {
    try {
      await run();
    } catch (err) {
      if (!(err instanceof FlowPageError)) throw err;
      const actions: PageAction[] | undefined = err.more.actions;
      await reply
        .status(err.status)
        .headers(pageHeaders([], err.more.brand))
        .send(
          outcomePage({
            title: err.title,
            message: err.message,
            isError: err.status >= 400,
            actions,
            brand: err.more.brand,
          }),
        );
    }
  }
}
