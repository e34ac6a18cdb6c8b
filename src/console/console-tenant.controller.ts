/**
 * The console's tenant pages and actions. The tenant is always the signed-in key's own (never taken from the
 * address), so a page can only ever show that tenant's data. Reads go through the domains' services (and the
 * console's read views); every action goes through the service that owns it, which applies its rules and
 * audits it with the signed-in admin key as the actor. Auditors see every page, with no action on it, and the
 * server refuses their actions.
 */
import { Controller, Get, Inject, Param, Post, Req, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { CommonException } from '../common/errors.js';
import { UuidParam } from '../common/validation.js';
import { KeyBackendService } from '../crypto/key-backend.service.js';
import { ConnectorsService } from '../identity/connectors.service.js';
import { IdentityProvidersService } from '../identity/identity-providers.service.js';
import { ProviderAppsService, type ProviderAppView } from '../providers/provider-apps.service.js';
import { TenantProvidersService } from '../providers/tenant-providers.service.js';
import { TenantsService } from '../tenants/tenants.service.js';
import { ConsoleAuditService } from './console-audit.service.js';
import { ConsoleConnectionsService } from './console-connections.service.js';
import { ConsoleHttp, Redirect, type PageOut, type TenantSigned } from './console-http.js';
import {
  auditBody,
  connectionsBody,
  connectorsBody,
  identityProvidersBody,
  keyBackendBody,
  providersBody,
  type Notice,
  type VerifyModel,
} from './console-pages.js';
import {
  auditQuerySchema,
  connectionsQuerySchema,
  connectorsQuerySchema,
  connectorStateFormSchema,
  csrfFormSchema,
  decodeConnectionsCursor,
  emptyQuerySchema,
  encodeConnectionsCursor,
  keyBackendQuerySchema,
  verifyFormSchema,
  type AuditQuery,
} from './console.dto.js';
import { query } from './html.js';

const actorOf = (s: TenantSigned) => s.user.actor;

@ApiExcludeController()
@Controller('console')
export class ConsoleTenantController {
  constructor(
    @Inject(ConsoleHttp) private readonly http: ConsoleHttp,
    @Inject(ConsoleConnectionsService) private readonly connections: ConsoleConnectionsService,
    @Inject(ConsoleAuditService) private readonly audit: ConsoleAuditService,
    @Inject(ConnectorsService) private readonly connectors: ConnectorsService,
    @Inject(TenantProvidersService) private readonly providers: TenantProvidersService,
    @Inject(ProviderAppsService) private readonly apps: ProviderAppsService,
    @Inject(IdentityProvidersService) private readonly identityProviders: IdentityProvidersService,
    @Inject(KeyBackendService) private readonly keyBackend: KeyBackendService,
    @Inject(TenantsService) private readonly tenants: TenantsService,
  ) {}

  private async providerNames(tenantId: string): Promise<{ key: string; name: string }[]> {
    return (await this.providers.listProviders(tenantId)).map((p) => ({ key: p.key, name: p.name }));
  }

  @Get('connections')
  connectionsPage(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    return this.http.page(req, reply, 'tenant', connectionsQuerySchema, async (s, q) => {
      const filter = { userPrefix: q.user, provider: q.provider, status: q.status };
      const [data, providers] = await Promise.all([
        this.connections.page(
          actorOf(s),
          s.tenantId,
          filter,
          q.after ? decodeConnectionsCursor(q.after) : undefined,
        ),
        this.providerNames(s.tenantId),
      ]);
      const nextHref = data.next
        ? `/console/connections${query({
            user: q.user,
            provider: q.provider,
            status: q.status === 'live' ? undefined : q.status,
            after: encodeConnectionsCursor(data.next),
          })}`
        : undefined;
      return {
        title: 'Connections',
        path: '/console/connections',
        body: connectionsBody({
          rows: data.rows,
          counts: data.counts,
          filter: { user: q.user, provider: q.provider, status: q.status },
          providers,
          nextHref,
          isFirstPage: q.after === undefined,
        }),
      };
    });
  }

  @Get('connectors')
  connectorsPage(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    return this.http.page(req, reply, 'tenant', connectorsQuerySchema, async (s, q) => {
      const [connectors, providers] = await Promise.all([
        this.connectors.listConnectors(s.tenantId),
        this.providerNames(s.tenantId),
      ]);
      const changed = q.id ? connectors.find((c) => c.id === q.id) : undefined;
      const notice: Notice | undefined =
        q.done && changed ? { kind: 'ok', text: `Connector “${changed.name}” ${q.done}.` } : undefined;
      return {
        title: 'Connectors',
        path: '/console/connectors',
        notice,
        body: connectorsBody({
          connectors,
          providers,
          viewer: s.viewer,
          canAct: s.user.principal.role === 'admin',
        }),
      };
    });
  }

  /** The disable/enable switch: through ConnectorsService.updateConnector, which audits it. */
  @Post('connectors/:connectorId/state')
  setConnectorState(
    @Req() req: FastifyRequest,
    @Res() reply: FastifyReply,
    @Param('connectorId') connectorId: string,
  ) {
    return this.http.action(req, reply, 'admin', connectorStateFormSchema, async (s, form) => {
      const id = new UuidParam().transform(connectorId);
      const disabled = form.enabled === 'false';
      await this.connectors.updateConnector(actorOf(s), s.tenantId, id, { disabled });
      return new Redirect(`/console/connectors${query({ done: disabled ? 'disabled' : 'enabled', id })}`);
    });
  }

  @Get('providers')
  providersPage(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    return this.http.page(req, reply, 'tenant', emptyQuerySchema, async (s) => {
      const list = await this.providers.listProviders(s.tenantId);
      const providers = await Promise.all(
        list.map(async (summary) => ({
          summary,
          app: summary.authMode === 'oauth2' ? await this.appOf(s.tenantId, summary.key) : undefined,
        })),
      );
      return { title: 'Providers', path: '/console/providers', body: providersBody({ providers }) };
    });
  }

  /** The tenant's OAuth app at a provider, or null when it has none. */
  private async appOf(tenantId: string, provider: string): Promise<ProviderAppView | null> {
    try {
      return await this.apps.get(tenantId, provider);
    } catch (err) {
      if (err instanceof CommonException && err.code === 'not_found') return null;
      throw err;
    }
  }

  @Get('identity-providers')
  identityProvidersPage(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    return this.http.page(req, reply, 'tenant', emptyQuerySchema, async (s) => {
      const [identityProviders, tenant] = await Promise.all([
        this.identityProviders.listIdentityProviders(s.tenantId),
        this.tenants.getTenant(s.tenantId),
      ]);
      return {
        title: 'Identity providers',
        path: '/console/identity-providers',
        body: identityProvidersBody({
          identityProviders,
          connectLogin: tenant.connectLogin,
          consoleLogin: tenant.consoleLogin,
        }),
      };
    });
  }

  @Get('key-backend')
  keyBackendPage(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    return this.http.page(req, reply, 'tenant', keyBackendQuerySchema, async (s, q) => {
      const notice: Notice | undefined =
        q.done === 'rotated'
          ? {
              kind: 'ok',
              text: `Key rotated: new secrets use data-key epoch ${q.epoch ?? '?'}; ${q.rewrapped ?? 0} data key(s) rewrapped.`,
            }
          : q.done === 'flushed'
            ? {
                kind: 'ok',
                text: `Cached data keys flushed${q.notified === '1' ? ' in every process' : ' in this process (no other process could be told)'}.`,
              }
            : undefined;
      return this.keyBackendOut(s, notice);
    });
  }

  private async keyBackendOut(s: TenantSigned, notice?: Notice, status?: number): Promise<PageOut> {
    return {
      title: 'Key backend',
      path: '/console/key-backend',
      notice,
      status,
      body: keyBackendBody({
        view: await this.keyBackend.view(s.tenantId),
        viewer: s.viewer,
        canAct: s.user.principal.role === 'admin',
      }),
    };
  }

  /** Rotation through KeyBackendService.rotateTenantKey (audited there); a backend failure is shown on the page. */
  @Post('key-backend/rotate')
  rotate(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    return this.http.action(req, reply, 'admin', csrfFormSchema, async (s) => {
      const r = await this.keyBackend.rotateTenantKey(actorOf(s), s.tenantId);
      return new Redirect(
        `/console/key-backend${query({ done: 'rotated', epoch: r.epoch, rewrapped: r.rewrapped })}`,
      );
    });
  }

  @Post('key-backend/flush')
  flush(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    return this.http.action(req, reply, 'admin', csrfFormSchema, async (s) => {
      const r = await this.keyBackend.flush(actorOf(s), s.tenantId);
      return new Redirect(
        `/console/key-backend${query({ done: 'flushed', notified: r.replicasNotified ? 1 : 0 })}`,
      );
    });
  }

  @Get('audit')
  auditPage(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    return this.http.page(req, reply, 'tenant', auditQuerySchema, (s, q) => this.auditOut(s, q));
  }

  private async auditOut(s: TenantSigned, q: AuditQuery, verify?: VerifyModel): Promise<PageOut> {
    const data = await this.audit.page(s.tenantId, q);
    const filter = {
      action: q.action,
      outcome: q.outcome,
      user: q.user,
      connector: q.connector,
      provider: q.provider,
      from: q.from,
      to: q.to,
    };
    return {
      title: 'Audit',
      path: '/console/audit',
      body: auditBody({
        events: data.events,
        filter,
        connectors: data.connectors,
        providers: data.providers,
        actorName: data.actorName,
        seal: data.seal,
        charts: data.charts,
        chartRange: data.chartRange,
        verify,
        viewer: s.viewer,
        nextHref: data.nextBefore
          ? `/console/audit${query({ ...filter, before: data.nextBefore })}`
          : undefined,
        isFirstPage: q.before === undefined,
      }),
    };
  }

  /** Verification of the sealed trail: for auditors as much as admins (it changes nothing; it is audited). */
  @Post('audit/verify')
  verify(@Req() req: FastifyRequest, @Res() reply: FastifyReply) {
    return this.http.action(req, reply, 'read', verifyFormSchema, async (s, form) => {
      const result = await this.audit.verify(actorOf(s), s.tenantId, form.from, form.to);
      return this.auditOut(s, { from: form.from, to: form.to }, result);
    });
  }
}
