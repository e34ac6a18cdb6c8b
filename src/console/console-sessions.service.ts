/**
 * Console sign-in with an admin key, and the sessions it opens: a random token in a `__Host-` cookie, only its
 * SHA-256 stored, an idle limit of 30 minutes and an absolute one of 8 hours, the admin key checked on every
 * request (revoking it ends its sessions at once); single sign-on sessions (console-sso.service.ts) follow the
 * same rules, their user checked against the tenant's consoleLogin on every request. The CSRF token of a session is derived from its token (an
 * HMAC), so it is bound to the session and nothing more is stored. Failed sign-ins count against the same
 * throttle as the admin API's failed authentications, and are audited the same way; sign-in and sign-out are
 * audited with the admin key as the actor.
 */
import { createHash, createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { DenialThrottle } from '../audit/denial-throttle.js';
import { adminActor, type AdminRole } from '../common/admin-access.js';
import { CommonException, RateLimitedException } from '../common/errors.js';
import { addressKey, adminKeyKey, sourceAddress, type LimitKey } from '../common/rate-limit.js';
import { AdminKeysService } from '../identity/admin-keys.service.js';
import { ConsoleSessionsRepository } from './console-sessions.repository.js';

export const SESSION_COOKIE = '__Host-custos_console';
/** Holds the sign-in form's secret between showing the form and posting it (login CSRF). */
export const SIGN_IN_COOKIE = '__Host-custos_console_signin';

export const IDLE_SECONDS = 30 * 60;
export const ABSOLUTE_SECONDS = 8 * 60 * 60;
export const SIGN_IN_FORM_SECONDS = 30 * 60;

const TOKEN = /^ccs_[A-Za-z0-9_-]{43}$/;
const FORM_SECRET = /^[A-Za-z0-9_-]{43}$/;

/** Who a console session is for: its tenant (null: the platform), role, and the name the console shows. */
export interface ConsolePrincipal {
  tenantId: string | null;
  role: AdminRole;
  name: string;
}

/**
 * Who is signed in to the console: the session, its principal, and the audit actor of what it does: the admin
 * key that signed in, or (single sign-on) the identity provider's user, `{type: 'user', id}`.
 */
export interface ConsoleUser {
  sessionId: string;
  principal: ConsolePrincipal;
  actor: Actor;
  /** How the session was opened; for single sign-on, at which identity provider. */
  method: 'admin_key' | 'sso';
  identityProvider?: string;
  expiresAt: Date;
}

const sha256 = (value: string): Buffer => createHash('sha256').update(value, 'utf8').digest();

const hmac = (secret: string, purpose: string): string =>
  createHmac('sha256', secret).update(`custos-console/${purpose}`).digest('base64url');

/** Constant-time comparison of two presented strings (any lengths). */
export function sameSecret(expected: string, given: string | undefined): boolean {
  if (given === undefined || given.length === 0 || given.length > 200) return false;
  const [a, b] = [Buffer.from(expected), Buffer.from(given)];
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The CSRF token of the session whose cookie holds `token`. */
export function csrfTokenFor(token: string): string {
  return hmac(token, 'csrf');
}

/** A new sign-in form: the secret for its cookie, and the token its hidden field carries. */
export function newSignInForm(): { secret: string; token: string } {
  const secret = randomBytes(32).toString('base64url');
  return { secret, token: hmac(secret, 'sign-in') };
}

/** Whether a posted sign-in form belongs to the browser holding `secret` (its cookie). */
export function signInFormOk(secret: string | undefined, given: string | undefined): boolean {
  return secret !== undefined && FORM_SECRET.test(secret) && sameSecret(hmac(secret, 'sign-in'), given);
}

@Injectable()
export class ConsoleSessionsService {
  constructor(
    @Inject(ConsoleSessionsRepository) private readonly sessions: ConsoleSessionsRepository,
    @Inject(AdminKeysService) private readonly adminKeys: AdminKeysService,
    @Inject(DenialThrottle) private readonly throttle: DenialThrottle,
    @Inject(AuditService) private readonly audit: AuditService,
  ) {}

  /**
   * Signs in with an admin key: the new session's cookie token and who it is for. A key the throttle has
   * blocked is refused before any lookup (429); an unknown, revoked or missing key is 401, counted and audited
   * as `access.denied`.
   */
  async signIn(presented: string, ip: string | undefined): Promise<{ token: string; user: ConsoleUser }> {
    const key = presented.length > 0 ? presented : undefined;
    const address = addressKey(ip);
    const checked: LimitKey[] =
      key !== undefined && this.throttle.credentialsMayBeBlocked() ? [adminKeyKey(key), address] : [address];
    const block = this.throttle.gate(checked, 'admin');
    if (block) {
      throw new RateLimitedException('Too many failed sign-ins; retry later', block.retryAfterSeconds);
    }
    const principal = key !== undefined ? await this.adminKeys.authenticate(key) : null;
    if (!principal) {
      const reason = key !== undefined ? 'invalid_key' : 'missing_key';
      const keys = key !== undefined ? [adminKeyKey(key), address] : [address];
      const actor = { type: 'admin_key' as const, id: null };
      const verdict = await this.throttle.failed(keys, { endpoint: 'admin', tenantId: null, actor, reason });
      if (verdict === 'audit') {
        const from = sourceAddress(ip)?.address;
        await this.audit.record({
          tenantId: null,
          action: 'access.denied',
          outcome: 'denied',
          actor,
          details: { reason, route: 'POST /console/sign-in', ...(from ? { sourceAddress: from } : {}) },
        });
      }
      throw new CommonException('unauthenticated', 'This admin key was not accepted');
    }
    await this.sessions.deleteExpired(IDLE_SECONDS);
    const token = `ccs_${randomBytes(32).toString('base64url')}`;
    const id = randomUUID();
    await this.sessions.insert({
      id,
      tokenHash: sha256(token),
      adminKeyId: principal.keyId,
      userId: null,
      identityProvider: null,
      tenantId: principal.tenantId,
      role: principal.role,
      absoluteSeconds: ABSOLUTE_SECONDS,
    });
    await this.audit.record({
      tenantId: principal.tenantId,
      action: 'console.signed_in',
      outcome: 'allowed',
      actor: adminActor(principal),
      details: { sessionId: id, role: principal.role, method: 'admin_key' },
    });
    return {
      token,
      user: {
        sessionId: id,
        principal: { tenantId: principal.tenantId, role: principal.role, name: principal.name },
        actor: adminActor(principal),
        method: 'admin_key',
        expiresAt: new Date(Date.now() + ABSOLUTE_SECONDS * 1000),
      },
    };
  }

  /**
   * Opens a session for a user who signed in at the tenant's identity provider (console-sso.service.ts has
   * checked the ID token and found the user in the tenant's consoleLogin with `role`). Audited as
   * `console.signed_in` with the user as the actor and `method: 'sso'`.
   */
  async signInWithSso(
    tenantId: string,
    userId: string,
    identityProvider: string,
    role: 'admin' | 'auditor',
  ): Promise<{ token: string; user: ConsoleUser }> {
    await this.sessions.deleteExpired(IDLE_SECONDS);
    const token = `ccs_${randomBytes(32).toString('base64url')}`;
    const id = randomUUID();
    await this.sessions.insert({
      id,
      tokenHash: sha256(token),
      adminKeyId: null,
      userId,
      identityProvider,
      tenantId,
      role,
      absoluteSeconds: ABSOLUTE_SECONDS,
    });
    const actor: Actor = { type: 'user', id: userId };
    await this.audit.record({
      tenantId,
      action: 'console.signed_in',
      outcome: 'allowed',
      actor,
      details: { sessionId: id, role, method: 'sso', identityProvider },
    });
    return {
      token,
      user: {
        sessionId: id,
        principal: { tenantId, role, name: userId },
        actor,
        method: 'sso',
        identityProvider,
        expiresAt: new Date(Date.now() + ABSOLUTE_SECONDS * 1000),
      },
    };
  }

  /**
   * The user of a session cookie, or null when there is no live session for it (never was, signed out, idle
   * or too old, or its admin key revoked): a dead session's row is removed.
   */
  async resolve(token: string | undefined): Promise<ConsoleUser | null> {
    if (token === undefined || !TOKEN.test(token)) return null;
    const hash = sha256(token);
    const row = await this.sessions.touchLive(hash, IDLE_SECONDS);
    if (!row) {
      await this.sessions.deleteByHash(hash);
      return null;
    }
    const principal = { tenantId: row.tenant_id, role: row.role satisfies AdminRole };
    if (row.admin_key_id === null) {
      return {
        sessionId: row.id,
        principal: { ...principal, name: row.user_id ?? '' },
        actor: { type: 'user', id: row.user_id },
        method: 'sso',
        identityProvider: row.identity_provider ?? undefined,
        expiresAt: row.expires_at,
      };
    }
    return {
      sessionId: row.id,
      principal: { ...principal, name: row.key_name ?? '' },
      actor: { type: 'admin_key', id: row.admin_key_id },
      method: 'admin_key',
      expiresAt: row.expires_at,
    };
  }

  /** Ends the session (its row is deleted), audited. */
  async signOut(token: string, user: ConsoleUser): Promise<void> {
    if (!(await this.sessions.deleteByHash(sha256(token)))) return;
    await this.audit.record({
      tenantId: user.principal.tenantId,
      action: 'console.signed_out',
      outcome: 'allowed',
      actor: user.actor,
      details: { sessionId: user.sessionId, method: user.method },
    });
  }
}
