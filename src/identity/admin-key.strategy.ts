/**
 * The admin API's bearer keys as a passport strategy, `admin-key`: `Authorization: Bearer <key>` resolves to
 * the key's AdminPrincipal through AdminKeysService. Passport only ever sees the credential (see
 * `adminKeyCredential`), and everything around the lookup (the throttle gate before it, the counting and
 * auditing of failures, Custos's own error answers) is the guard's, AdminKeyAuthGuard.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Inject, Injectable, type OnModuleDestroy } from '@nestjs/common';
import { PassportStrategy } from '@nestjs/passport';
import passport from 'passport';
import { Strategy as BearerStrategy } from 'passport-http-bearer';
import type { AdminPrincipal } from '../common/admin-access.js';
import { AdminKeysService } from './admin-keys.service.js';

export const ADMIN_KEY_STRATEGY = 'admin-key';

/** Where an admin key is presented: the Authorization header only, one token of printable ASCII. */
const BEARER = /^Bearer ([\x21-\x7e]+)$/i;

/** The admin key a request presents, or undefined. The one place this rule is written. */
export function presentedAdminKey(headers: IncomingHttpHeaders): string | undefined {
  const header = headers.authorization;
  return typeof header === 'string' ? BEARER.exec(header)?.[1] : undefined;
}

/**
 * What passport is shown of a request: its admin key as the only header, and nothing else. The bearer
 * strategy would also take a token from a body's or query string's `access_token` (and refuse a request
 * that has both); Custos takes admin keys from the header only, as `presentedAdminKey` says. Passport's
 * additions to a request (`logIn`, `authInfo`, `user`, …) land on this object, not on Fastify's request.
 */
export interface AdminKeyCredential {
  headers: { authorization?: string };
  user?: AdminPrincipal | null;
}

export function adminKeyCredential(key: string | undefined): AdminKeyCredential {
  return { headers: key === undefined ? {} : { authorization: `Bearer ${key}` } };
}

/**
 * Passport's registry of strategies is one per process, and AdminKeyAuthGuard's passport.authenticate looks
 * the strategy up there by name, while a process may run several Custos apps (tests do, one after another
 * and side by side on the same database). The name belongs to the newest app still running: when an app
 * closes, the one started before it gets the name back, so that a closed app's database is never asked.
 */
const running: AdminKeyStrategy[] = [];

@Injectable()
export class AdminKeyStrategy
  extends PassportStrategy(BearerStrategy, ADMIN_KEY_STRATEGY)
  implements OnModuleDestroy
{
  constructor(@Inject(AdminKeysService) private readonly keys: AdminKeysService) {
    // The mixin passes validate() as the verify callback and registers this instance as 'admin-key'.
    super({});
    running.push(this);
  }

  /** The key's principal, or false: passport then fails the attempt, and the guard answers for it. */
  async validate(key: string): Promise<AdminPrincipal | false> {
    return (await this.keys.authenticate(key)) ?? false;
  }

  onModuleDestroy(): void {
    const i = running.indexOf(this);
    if (i >= 0) running.splice(i, 1);
    const newest = running.at(-1);
    if (newest) passport.use(ADMIN_KEY_STRATEGY, newest);
    else passport.unuse(ADMIN_KEY_STRATEGY);
  }
}
