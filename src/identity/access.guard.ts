/**
 * The one guard in front of every route (registered as APP_GUARD): a route declares what it needs with
 * `@Access(...)` (and `@AcceptsConnectors()`) from common/admin-access.ts, and this guard enforces it, so no
 * controller imports identity/ to be protected. A route that declares no @Access is open: the token endpoint
 * (its own RFC 6749 client authentication), the probes and the hosted pages. For those this guard is one
 * metadata read and a synchronous `true`: no passport, no I/O.
 *
 * Otherwise: a connector's credentials on a route that accepts connectors go to ConnectorAuthGuard; anything
 * else is an admin key's business: authentication (AdminKeyAuthGuard, passport's `admin-key` strategy), then
 * authorization (AdminAccessGuard: tenant scope and role).
 */
import { type CanActivate, type ExecutionContext, Inject, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { FastifyRequest } from 'fastify';
import { ACCEPTS_CONNECTORS, ACCESS, type AccessLevel } from '../common/admin-access.js';
import { AdminAccessGuard } from './admin-access.guard.js';
import { AdminKeyAuthGuard } from './admin-auth.guard.js';
import { ConnectorAuthGuard, presentsConnectorCredentials } from './connector-auth.guard.js';

@Injectable()
export class AccessGuard implements CanActivate {
  constructor(
    @Inject(Reflector) private readonly reflector: Reflector,
    @Inject(AdminKeyAuthGuard) private readonly authenticate: AdminKeyAuthGuard,
    @Inject(AdminAccessGuard) private readonly authorize: AdminAccessGuard,
    @Inject(ConnectorAuthGuard) private readonly connectors: ConnectorAuthGuard,
  ) {}

  canActivate(context: ExecutionContext): boolean | Promise<boolean> {
    const targets = [context.getHandler(), context.getClass()];
    const level = this.reflector.getAllAndOverride<AccessLevel | undefined>(ACCESS, targets);
    if (!level) return true;
    if (
      this.reflector.getAllAndOverride<boolean | undefined>(ACCEPTS_CONNECTORS, targets) &&
      presentsConnectorCredentials(context.switchToHttp().getRequest<FastifyRequest>().headers)
    ) {
      return this.connectors.canActivate(context);
    }
    return this.adminKey(context, level);
  }

  private async adminKey(context: ExecutionContext, level: AccessLevel): Promise<boolean> {
    await this.authenticate.canActivate(context);
    return this.authorize.authorize(context, level);
  }
}
