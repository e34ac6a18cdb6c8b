/**
 * Lets a connector call a tenant API (a route with @AcceptsConnectors) with its own client credentials
 * instead of an admin key: HTTP Basic (client_secret_basic) or `Authorization: Bearer <client assertion JWT>`
 * (private_key_jwt, RFC 7523, with the same audience and single-use rules as at the token endpoint). AccessGuard
 * sends a request here only when it presents such credentials (`presentsConnectorCredentials`); anything else,
 * an admin key included, goes the admin key's way. A connector reaches only its own tenant (another tenant's
 * path is 404), and its registration is read fresh from the database, so a disabled connector is refused at
 * once. Failed authentications are throttled per claimed client id and source address like the token
 * endpoint's (see DenialThrottle).
 */
import { type CanActivate, type ExecutionContext, Inject, Injectable } from '@nestjs/common';
import type { IncomingHttpHeaders } from 'node:http';
import { UsedAssertionsRepository } from './used-assertions.repository.js';
import type { AuthedRequest } from '../common/admin-access.js';
import { DenialThrottle } from '../audit/denial-throttle.js';
import { CommonException, RateLimitedException } from '../common/errors.js';
import { addressKey, clientKey, type LimitKey } from '../common/rate-limit.js';
import { AccessDenials, pathTenantId, routeOf } from './access-denials.js';
import {
  CLIENT_ASSERTION_TYPE,
  ClientAuthenticator,
  ClientAuthError,
  parseBasicAuth,
  type AuthenticatedClient,
} from './client-auth.js';

export interface ConnectorOrAdminRequest extends AuthedRequest {
  connector?: AuthenticatedClient;
}

const JWT = /^Bearer (ey[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/;
const BASIC = /^Basic /i;

function authorizationOf(headers: IncomingHttpHeaders): string {
  return typeof headers.authorization === 'string' ? headers.authorization : '';
}

/** Whether a request presents a connector's credentials (Basic, or a client assertion as a Bearer token). */
export function presentsConnectorCredentials(headers: IncomingHttpHeaders): boolean {
  const header = authorizationOf(headers);
  return BASIC.test(header) || JWT.test(header);
}

@Injectable()
export class ConnectorAuthGuard implements CanActivate {
  constructor(
    @Inject(ClientAuthenticator) private readonly clients: ClientAuthenticator,
    @Inject(UsedAssertionsRepository) private readonly usedAssertions: UsedAssertionsRepository,
    @Inject(AccessDenials) private readonly denials: AccessDenials,
    @Inject(DenialThrottle) private readonly throttle: DenialThrottle,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const req = context.switchToHttp().getRequest<ConnectorOrAdminRequest>();
    const header = authorizationOf(req.headers);
    const basic = BASIC.test(header);
    const jwt = JWT.exec(header)?.[1];
    if (!basic && jwt === undefined) {
      // Only reachable by calling this guard for a request without connector credentials: refuse.
      throw new CommonException('unauthenticated', 'Client authentication failed');
    }

    const route = routeOf(req);
    const claimed = this.forgetClaimed(header, jwt);
    const keys: LimitKey[] =
      claimed === undefined ? [addressKey(req.ip)] : [clientKey(claimed), addressKey(req.ip)];
    const block = this.throttle.gate(keys, 'admin');
    if (block) {
      throw new RateLimitedException('Too many failed authentications; retry later', block.retryAfterSeconds);
    }
    let client: AuthenticatedClient;
    try {
      client = await this.clients.authenticate({
        authorization: basic ? header : undefined,
        clientId: undefined,
        clientSecret: undefined,
        clientAssertion: jwt,
        clientAssertionType: jwt === undefined ? undefined : CLIENT_ASSERTION_TYPE,
      });
    } catch (err) {
      if (!(err instanceof ClientAuthError)) throw err;
      if (err.unavailable) throw new CommonException('temporarily_unavailable', 'Signing keys unavailable');
      await this.failed(
        keys,
        err.connector?.tenantId ?? null,
        err.connector?.connectorId ?? null,
        route,
        err.reason,
      );
      throw new CommonException('unauthenticated', 'Client authentication failed');
    }
    const c = client.connector;
    if (client.assertion) {
      const fresh = await this.usedAssertions.recordFresh(
        c.connectorId,
        client.assertion.jtiHash,
        client.assertion.expiresAt,
      );
      if (!fresh) {
        await this.failed(keys, c.tenantId, c.connectorId, route, 'assertion_replayed');
        throw new CommonException('unauthenticated', 'Client authentication failed');
      }
    }
    const tenantId = pathTenantId(req);
    if (tenantId !== undefined && tenantId.toLowerCase() !== c.tenantId) {
      await this.deny(c.tenantId, c.connectorId, route, 'other_tenant');
      throw new CommonException('not_found', 'Not found');
    }
    req.connector = client;
    return true;
  }

  /**
   * Off the hot path, registrations are read fresh: drop the cached copy of the claimed client. Returns
   * the claimed client id (unverified), which failures are counted against.
   */
  private forgetClaimed(header: string, jwt: string | undefined): string | undefined {
    if (jwt !== undefined) {
      try {
        const payload = JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8')) as {
          iss?: unknown;
        };
        if (typeof payload.iss === 'string') {
          this.clients.forget(payload.iss);
          return payload.iss;
        }
      } catch {
        // A malformed assertion fails authentication below.
      }
      return undefined;
    }
    const parsed = parseBasicAuth(header);
    if (parsed) this.clients.forget(parsed.clientId);
    return parsed?.clientId;
  }

  /** Counts a failed authentication; its own event is written unless it is folded into a counted one. */
  private async failed(
    keys: LimitKey[],
    tenantId: string | null,
    connectorId: string | null,
    route: string,
    reason: string,
  ): Promise<void> {
    const verdict = await this.throttle.failed(keys, {
      endpoint: 'admin',
      tenantId,
      actor: { type: 'connector', id: connectorId },
      reason,
    });
    if (verdict === 'audit') await this.deny(tenantId, connectorId, route, reason);
    const block = this.throttle.overLimit(keys);
    if (block) {
      throw new RateLimitedException('Too many failed authentications; retry later', block.retryAfterSeconds);
    }
  }

  private deny(tenantId: string | null, connectorId: string | null, route: string, reason: string) {
    return this.denials.record({ tenantId, actor: { type: 'connector', id: connectorId }, reason, route });
  }
}
