/**
 * Authenticates admin API keys through passport (the `admin-key` strategy, AdminKeyStrategy, a
 * @nestjs/passport PassportStrategy), with Custos's own answers around it. Failed authentications are
 * throttled per source address and per presented key (see DenialThrottle): over the limit, 429 `rate_limited` with Retry-After, before any key lookup. A
 * missing or unknown key is 401 `unauthenticated` (never passport's own 401), counted, and audited as
 * `access.denied` while the throttle says to. What the key may then do is AdminAccessGuard's.
 */
import { type ExecutionContext, Inject, Injectable } from '@nestjs/common';
import passport from 'passport';
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
export class AdminKeyAuthGuard {
  constructor(
    @Inject(DenialThrottle) private readonly throttle: DenialThrottle,
    @Inject(AccessDenials) private readonly denials: AccessDenials,
  ) {}

  /** Sets `req.principal`, or throws 429 `rate_limited` / 401 `unauthenticated`. */
  async canActivate(context: ExecutionContext): Promise<boolean> {
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
    const principal = await runAdminKeyStrategy(adminKeyCredential(key));
    if (principal) {
      req.principal = principal;
      return true;
    }

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
}

/**
 * Runs passport's `admin-key` strategy on the presented key alone (never the body, the query string or
 * Fastify's request itself): the principal, or false for no or an unknown key; an error (the key store
 * failing) rejects as it is. Called directly rather than through @nestjs/passport's AuthGuard mixin: with
 * the mixin, the token endpoint (which never runs this guard) measured about twice the p99 latency after the
 * admin API had been used (bench/README.md, "passport at the edge"); the strategy itself is unchanged.
 */
function runAdminKeyStrategy(credential: AdminKeyCredential): Promise<AdminPrincipal | false> {
  return new Promise((resolve, reject) => {
    const authenticate = passport.authenticate(
      ADMIN_KEY_STRATEGY,
      { session: false },
      (err: Error | null, principal: AdminPrincipal | false) => (err ? reject(err) : resolve(principal)),
    ) as (req: AdminKeyCredential, res: object, next: (err?: unknown) => void) => void;
    authenticate(credential, {}, (err) =>
      err ? reject(err instanceof Error ? err : new Error('the admin-key strategy failed')) : resolve(false),
    );
  });
}
