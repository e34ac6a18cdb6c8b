/**
 * Console single sign-on through one of the tenant's identity providers (the tenant's `consoleLogin`): the
 * OIDC code flow with PKCE, state and nonce that the hosted pages use (ConnectLoginService's `signInRequest` and
 * `signedInUser`: the ID token verified against the keys the tenant registered for that provider, audience the
 * console's client, this sign-in's nonce). A sign-in is bound to the browser that started it (a cookie whose
 * hash is stored), its state is taken once, and the user must be listed as one of the tenant's console admins
 * or auditors; anything else is refused and audited as `console.sign_in_refused`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CommonException } from '../common/errors.js';
import { userIdSchema } from '../common/validation.js';
import { CONFIG, type Config } from '../config/config.js';
import { ConnectLoginService, signInFailure, type LoginSettings } from '../connect/connect-login.service.js';
import { DataKeyService } from '../crypto/data-key.service.js';
import { IdentityProvidersService } from '../identity/identity-providers.service.js';
import { TenantsRepository, type ConsoleLogin } from '../tenants/tenants.repository.js';
import { ConsoleSessionsService, type ConsoleUser } from './console-sessions.service.js';
import { ConsoleSignInsRepository } from './console-sign-ins.repository.js';

/** Holds the browser's half of a pending sign-in (Lax: it must come back with the identity provider's redirect). */
export const SSO_FLOW_COOKIE = '__Host-custos_console_sso';
export const SSO_FLOW_SECONDS = 10 * 60;

/** A sign-in that did not open a session: the page's status and words, already audited. */
export class SsoRefused extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly text: string,
  ) {
    super(title);
  }
}

interface SignInSecrets {
  nonce: string;
  codeVerifier: string;
}

const sha256 = (v: string): Buffer => createHash('sha256').update(v, 'utf8').digest();
const secretsField = (stateHash: Buffer) => ({
  scope: 'console_sign_in',
  recordId: stateHash.toString('hex'),
  field: 'secrets',
});

@Injectable()
export class ConsoleSsoService {
  constructor(
    @Inject(ConsoleSignInsRepository) private readonly signIns: ConsoleSignInsRepository,
    @Inject(TenantsRepository) private readonly tenants: TenantsRepository,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(IdentityProvidersService) private readonly identityProviders: IdentityProvidersService,
    @Inject(ConnectLoginService) private readonly login: ConnectLoginService,
    @Inject(ConsoleSessionsService) private readonly sessions: ConsoleSessionsService,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(CONFIG) private readonly config: Config,
  ) {}

  get redirectUri(): string {
    return `${this.config.publicUrl}/console/sso/callback`;
  }

  /**
   * The tenant's console sign-in: its mapping and the OIDC client at its identity provider. A tenant without
   * one, an unknown tenant or one being deleted all answer 404 alike.
   */
  async settings(tenantId: string): Promise<{ login: ConsoleLogin; oidc: LoginSettings }> {
    const row = await this.tenants.consoleLogin(tenantId);
    const login = row?.console_login;
    if (!login || !row.console_login_secret) {
      throw new CommonException('not_found', 'There is no single sign-on for this tenant');
    }
    const idp = await this.identityProviders
      .getIdentityProvider(tenantId, login.identityProvider)
      .catch(() => {
        throw new CommonException('not_found', 'There is no single sign-on for this tenant');
      });
    const clientSecret = await this.dataKeys.open(
      tenantId,
      { scope: 'tenant', recordId: tenantId, field: 'console_login_secret' },
      row.console_login_secret,
    );
    return { login, oidc: { idp, clientId: login.clientId, clientSecret } };
  }

  /** Starts a sign-in: where to send the browser, and the value of the cookie that binds it. */
  async begin(tenantId: string): Promise<{ location: string; browser: string }> {
    const { oidc } = await this.settings(tenantId);
    const request = await this.login.signInRequest(oidc, this.redirectUri);
    const browser = randomBytes(32).toString('base64url');
    const stateHash = sha256(request.state);
    const secrets: SignInSecrets = { nonce: request.nonce, codeVerifier: request.codeVerifier };
    const sealed = await this.dataKeys.seal(tenantId, secretsField(stateHash), JSON.stringify(secrets));
    await this.signIns.insert(stateHash, tenantId, sha256(browser), sealed, SSO_FLOW_SECONDS);
    return { location: request.url, browser };
  }

  /**
   * The identity provider's answer: the pending sign-in is taken (once) by its state and must belong to this
   * browser; the code is exchanged and the ID token verified; the user must be one of the tenant's console
   * admins or auditors. Then a session opens for them with that role.
   */
  async complete(
    query: Record<string, string | undefined>,
    rawQuery: string,
    browser: string | undefined,
  ): Promise<{ token: string; user: ConsoleUser }> {
    const unknown = () =>
      new SsoRefused(
        400,
        'Sign-in not recognised',
        'This sign-in response is unknown, used or expired. Start again from the sign-in page.',
      );
    const state = query.state;
    if (!state || state.length > 512) throw unknown();
    const stateHash = sha256(state);
    const row = await this.signIns.take(stateHash);
    if (!row) throw unknown();
    const anonymous: Actor = { type: 'user', id: null };
    const bound = browser !== undefined && browser.length <= 200 && sha256(browser).equals(row.browser_hash);
    if (!bound) {
      await this.refused(row.tenant_id, anonymous, 'browser_mismatch');
      throw new SsoRefused(
        400,
        'Sign-in not recognised',
        'This sign-in was started in another browser or window, so for your safety it was not used. Start again from the sign-in page.',
      );
    }
    const secrets = JSON.parse(
      await this.dataKeys.open(row.tenant_id, secretsField(stateHash), row.secrets),
    ) as SignInSecrets;
    const { login, oidc } = await this.settings(row.tenant_id);
    let claimed: unknown;
    try {
      claimed = await this.login.signedInUser(oidc, this.redirectUri, rawQuery, { state, ...secrets });
    } catch (err) {
      await this.refused(row.tenant_id, anonymous, signInFailure(err), login.identityProvider);
      throw new SsoRefused(
        502,
        'Sign-in failed',
        `The sign-in at ${login.identityProvider} did not complete, so you are not signed in. Start again from the sign-in page; if it happens again, contact your administrator.`,
      );
    }
    const user = userIdSchema.safeParse(claimed);
    if (!user.success) {
      await this.refused(row.tenant_id, anonymous, 'invalid_user_claim', login.identityProvider);
      throw this.notListed(login.identityProvider);
    }
    const role = login.admins.includes(user.data)
      ? 'admin'
      : login.auditors.includes(user.data)
        ? 'auditor'
        : null;
    if (!role) {
      await this.refused(
        row.tenant_id,
        { type: 'user', id: user.data },
        'not_listed',
        login.identityProvider,
      );
      throw this.notListed(login.identityProvider);
    }
    return this.sessions.signInWithSso(row.tenant_id, user.data, login.identityProvider, role);
  }

  private notListed(idp: string): SsoRefused {
    return new SsoRefused(
      403,
      'Not allowed',
      `You signed in at ${idp}, but your account is not one of this tenant’s console admins or auditors. Ask an administrator to add you.`,
    );
  }

  private async refused(tenantId: string, actor: Actor, reason: string, identityProvider?: string) {
    await this.audit.record({
      tenantId,
      action: 'console.sign_in_refused',
      outcome: 'denied',
      actor,
      details: { reason, method: 'sso', ...(identityProvider ? { identityProvider } : {}) },
    });
  }
}
