/**
 * Authenticates admin API keys through passport (the `admin-key` strategy, AdminKeyStrategy), with Custos's
 * own answers around it. Failed authentications are throttled per source address and per presented key
 * (see DenialThrottle): over the limit, 429 `rate_limited` with Retry-After, before any key lookup. A
 * missing or unknown key is 401 `unauthenticated` (never passport's own 401), counted, and audited as
 * `access.denied` while the throttle says to. What the key may then do is AdminAccessGuard's.
 */
import { type ExecutionContext, Inject, Injectable } from '@nestjs/common';
import { AuthGuard } from '@nestjs/passport';
import { DenialThrottle } from '../audit/denial-throttle.js';
import type { AdminPrincipal, AuthedRequest } from '../common/admin-access.js';
import { CommonException, RateLimitedException } from '../common/errors.js';
import { addressKey, adminKeyKey, sourceAddress, type LimitKey } from '../common/rate-limit.js';
import { AccessDenials, routeOf } from './access-denials.js';
import {
  ADMIN_KEY_STRATEGY,
  adminKeyCredential,
  presentedAdminKey,
  type AdminKeyCredential,
} from './admin-key.strategy.js';

@Injectable()
export class AdminKeyAuthGuard extends AuthGuard(ADMIN_KEY_STRATEGY) {
  constructor(
    @Inject(DenialThrottle) private readonly throttle: DenialThrottle,
    @Inject(AccessDenials) private readonly denials: AccessDenials,
  ) {
    super();
  }

  /** Sets `req.principal`, or throws 429 `rate_limited` / 401 `unauthenticated`. */
  override async canActivate(context: ExecutionContext): Promise<boolean> {
    const req = context.switchToHttp().getRequest<AuthedRequest>();
    const key = presentedAdminKey(req.headers);
    const address = addressKey(req.ip);
    // From memory only: a throttled request costs no key lookup.
    const checked: LimitKey[] =
      key !== undefined && this.throttle.credentialsMayBeBlocked() ? [adminKeyKey(key), address] : [address];
    const block = this.throttle.gate(checked, 'admin');
    if (block) {
      throw new RateLimitedException('Too many failed authentications; retry later', block.retryAfterSeconds);
    }
    // Passport runs the strategy on what getRequest shows it; handleRequest puts the principal on req.
    await super.canActivate(context);
    if (req.principal) return true;

    const reason = key !== undefined ? 'invalid_key' : 'missing_key';
    const verdict = await this.throttle.failed(key !== undefined ? [adminKeyKey(key), address] : [address], {
      endpoint: 'admin',
      tenantId: null,
      actor: { type: 'admin_key', id: null },
      reason,
    });
    if (verdict === 'audit') {
      await this.denials.record({
        tenantId: null,
        actor: { type: 'admin_key', id: null },
        reason,
        route: routeOf(req),
        sourceAddress: sourceAddress(req.ip)?.address,
      });
    }
    throw new CommonException(
      'unauthenticated',
      'A valid admin API key is required (Authorization: Bearer <key>)',
    );
  }

  /** Passport sees the presented key only: never the body, the query string or Fastify's request itself. */
  override getRequest(context: ExecutionContext): AdminKeyCredential {
    return adminKeyCredential(presentedAdminKey(context.switchToHttp().getRequest<AuthedRequest>().headers));
  }

  /**
   * Passport's verdict: an error (the key store failing) propagates as it is; a principal goes on the request;
   * a failure (no key, unknown key) is answered by canActivate, never with passport's UnauthorizedException.
   */
  override handleRequest<TUser = AdminPrincipal | null>(
    err: Error | null | undefined,
    principal: AdminPrincipal | false | null,
    _info: unknown,
    context: ExecutionContext,
  ): TUser {
    if (err) throw err;
    if (principal) context.switchToHttp().getRequest<AuthedRequest>().principal = principal;
    return (principal || null) as TUser;
  }
}
