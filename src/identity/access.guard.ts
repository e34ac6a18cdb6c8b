/**
 * The one guard in front of every route (registered as APP_GUARD): a route declares what it needs with
 * `@Access(...)` (and `@AcceptsConnectors()`) from common/admin-access.ts, and this guard enforces it, so no
 * controller imports identity/ to be protected. A route that declares nothing is open: the token endpoint (its
 * own RFC 6749 client authentication), the probes and the hosted pages. Two metadata reads per request; no I/O
 * for an open route.
 */
import { type CanActivate, type ExecutionContext, Inject, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { ACCEPTS_CONNECTORS } from '../common/admin-access.js';
import { AdminAuthGuard } from './admin-auth.guard.js';
import { ConnectorOrAdminGuard } from './connector-auth.guard.js';

@Injectable()
export class AccessGuard implements CanActivate {
  constructor(
    @Inject(Reflector) private readonly reflector: Reflector,
    @Inject(AdminAuthGuard) private readonly admin: AdminAuthGuard,
    @Inject(ConnectorOrAdminGuard) private readonly connectorOrAdmin: ConnectorOrAdminGuard,
  ) {}

  canActivate(context: ExecutionContext): Promise<boolean> {
    const connectors = this.reflector.getAllAndOverride<boolean | undefined>(ACCEPTS_CONNECTORS, [
      context.getHandler(),
      context.getClass(),
    ]);
    return connectors ? this.connectorOrAdmin.canActivate(context) : this.admin.canActivate(context);
  }
}
