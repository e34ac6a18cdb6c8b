import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CommonException } from '../common/errors.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { CONFIG, type Config } from '../config/config.js';
import { DataKeyService } from '../crypto/data-key.service.js';
import type { KeyBackendType } from '../crypto/key-backend.js';
import { LogoRejected, readLogo, type LogoContentType } from './logo-image.js';
import type { UpdateTenantInput } from './tenants.dto.js';
import { TenantsRepository, type ConsoleLogin, type LogoRow, type TenantRow } from './tenants.repository.js';
import type { IdentityProviderNames } from './identity-provider-names.js';
import {
  statusOf,
  TenantDeletionService,
  type TenantDeletionView,
  type TenantStatus,
} from './tenant-deletion.service.js';

export interface TenantView {
  id: string;
  name: string;
  /** `deleting` from the deletion request until the tenant is shredded (then it is unknown: 404). */
  status: TenantStatus;
  deletionRequestedAt: string | null;
  keyBackend: { type: KeyBackendType };
  allowedReturnUrls: string[];
  webhookUrl: string | null;
  connectLogin: { identityProvider: string; clientId: string } | null;
  /** Console single sign-on (never its client secret): the identity provider, client, admins and auditors. */
  consoleLogin: ConsoleLogin | null;
  /** Whether a grant wider than a connector's allowed scopes is handed out when it cannot be narrowed. */
  scopePassThrough: boolean;
  /** The hosted pages' branding: the name they show (null: `name`), their colour and logo. */
  displayName: string | null;
  brandColor: string | null;
  logo: LogoView | null;
  createdAt: string;
}

/** A tenant's logo: where Custos serves it (no key needed: the hosted pages show it), and what it is. */
export interface LogoView {
  url: string;
  contentType: LogoContentType;
  bytes: number;
  width: number;
  height: number;
  sha256: string;
  updatedAt: string;
}

/** Where a tenant's logo is served; stable for the tenant (the hosted pages add `?v=` with its hash). */
export const logoPath = (tenantId: string) => `/connect/branding/${tenantId}/logo`;

const logoView = (r: TenantRow, publicUrl: string): LogoView | null =>
  r.logo_content_type && r.logo_sha256 && r.logo_updated_at
    ? {
        url: publicUrl + logoPath(r.id),
        contentType: r.logo_content_type,
        bytes: r.logo_bytes ?? 0,
        width: r.logo_width ?? 0,
        height: r.logo_height ?? 0,
        sha256: r.logo_sha256,
        updatedAt: r.logo_updated_at.toISOString(),
      }
    : null;

const view = (r: TenantRow, publicUrl: string): TenantView => ({
  id: r.id,
  name: r.name,
  status: statusOf(r),
  deletionRequestedAt: r.deletion_requested_at?.toISOString() ?? null,
  keyBackend: { type: r.key_backend_type },
  allowedReturnUrls: r.allowed_return_urls,
  webhookUrl: r.webhook_url,
  connectLogin: r.connect_login,
  consoleLogin: r.console_login,
  scopePassThrough: r.scope_pass_through,
  displayName: r.display_name,
  brandColor: r.brand_color,
  logo: logoView(r, publicUrl),
  createdAt: r.created_at.toISOString(),
});

/** A logo refusal as the admin API's error: 415 for what is not a PNG or JPEG, 413 too big, else 400. */
function logoError(err: LogoRejected): CommonException {
  const details = { reason: err.problem, issues: [{ path: 'logo', message: err.message }] };
  switch (err.problem) {
    case 'unsupported':
    case 'svg':
      return new CommonException('unsupported_media_type', err.message, details);
    case 'too_large':
      return new CommonException('payload_too_large', err.message, details);
    case 'malformed':
    case 'trailing_data':
    case 'dimensions':
      return new CommonException('validation_failed', err.message, details);
  }
}

@Injectable()
export class TenantsService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(TenantsRepository) private readonly tenants: TenantsRepository,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(OutboundHttpClient) private readonly outbound: OutboundHttpClient,
    @Inject(TenantDeletionService) private readonly deletion: TenantDeletionService,
    @Inject(CONFIG) private readonly config: Config,
  ) {}

  private identityProviders: IdentityProviderNames | undefined;

  /** Called by identity/ at start-up: see identity-provider-names.ts. */
  registerIdentityProviderNames(names: IdentityProviderNames): void {
    this.identityProviders = names;
  }

  async createTenant(actor: Actor, name: string): Promise<TenantView> {
    const id = randomUUID();
    return this.db.transaction(async (m) => {
      const row = await this.tenants.create(m, id, name);
      await this.audit.record(
        { tenantId: id, action: 'tenant.created', outcome: 'allowed', actor, details: { name } },
        m,
      );
      return this.view(row);
    });
  }

  /**
   * Changes a tenant's settings: name, allowed return URLs (the list is replaced, not merged), webhook,
   * connect sign-in, console single sign-on, scope pass-through, and the hosted pages' display name and colour (null removes either).
   * Setting a webhook URL for the first time, or `rotateWebhookSecret`, issues a signing secret, returned only
   * in this response (`webhookSecret`) and stored sealed.
   */
  async updateTenant(
    actor: Actor,
    id: string,
    patch: UpdateTenantInput,
  ): Promise<TenantView & { webhookSecret?: string }> {
    if (patch.webhookUrl) await this.outbound.assertUrlAllowed(patch.webhookUrl);
    if (patch.connectLogin) {
      // Fails closed: without identity/ loaded there is no way to know, and the change is refused (500).
      if (!this.identityProviders) throw new Error('no identity provider lookup is registered');
      if (!(await this.identityProviders.exists(id, patch.connectLogin.identityProvider))) {
        throw new CommonException(
          'validation_failed',
          `connectLogin names identity provider "${patch.connectLogin.identityProvider}", which this tenant does not have`,
        );
      }
    }
    if (patch.consoleLogin) {
      if (!this.identityProviders) throw new Error('no identity provider lookup is registered');
      if (!(await this.identityProviders.exists(id, patch.consoleLogin.identityProvider))) {
        throw new CommonException(
          'validation_failed',
          `consoleLogin names identity provider "${patch.consoleLogin.identityProvider}", which this tenant does not have`,
        );
      }
    }
    const consoleSecret = patch.consoleLogin
      ? await this.dataKeys.seal(
          id,
          { scope: 'tenant', recordId: id, field: 'console_login_secret' },
          patch.consoleLogin.clientSecret,
        )
      : null;
    const consoleLogin: ConsoleLogin | null = patch.consoleLogin
      ? {
          identityProvider: patch.consoleLogin.identityProvider,
          clientId: patch.consoleLogin.clientId,
          admins: patch.consoleLogin.admins,
          auditors: patch.consoleLogin.auditors,
        }
      : null;
    const loginSecret = patch.connectLogin
      ? await this.dataKeys.seal(
          id,
          { scope: 'tenant', recordId: id, field: 'connect_login_secret' },
          patch.connectLogin.clientSecret,
        )
      : null;
    const current = await this.tenants.webhookSecret(id);
    if (!current) throw new CommonException('not_found', 'Tenant not found');
    const issue = patch.rotateWebhookSecret === true || (patch.webhookUrl && current.webhook_secret === null);
    const secret = issue ? 'whsec_' + randomBytes(32).toString('base64url') : undefined;
    const sealed = secret
      ? await this.dataKeys.seal(id, { scope: 'tenant', recordId: id, field: 'webhook_secret' }, secret)
      : null;
    return this.db.transaction(async (m) => {
      const row = await this.tenants.update(m, id, {
        name: patch.name ?? null,
        allowedReturnUrls: patch.allowedReturnUrls ? [...new Set(patch.allowedReturnUrls)] : null,
        setWebhook: patch.webhookUrl !== undefined,
        webhookUrl: patch.webhookUrl ?? null,
        webhookSecret: sealed,
        setConnectLogin: patch.connectLogin !== undefined,
        connectLogin: patch.connectLogin
          ? {
              identityProvider: patch.connectLogin.identityProvider,
              clientId: patch.connectLogin.clientId,
            }
          : null,
        connectLoginSecret: loginSecret,
        setConsoleLogin: patch.consoleLogin !== undefined,
        consoleLogin,
        consoleLoginSecret: consoleSecret,
        scopePassThrough: patch.scopePassThrough ?? null,
        setDisplayName: patch.displayName !== undefined,
        displayName: patch.displayName ?? null,
        setBrandColor: patch.brandColor !== undefined,
        brandColor: patch.brandColor ?? null,
      });
      if (!row) throw new CommonException('not_found', 'Tenant not found');
      const { rotateWebhookSecret: _rotate, connectLogin, consoleLogin: _console, ...rest } = patch;
      const shown = {
        ...rest,
        ...(connectLogin !== undefined
          ? {
              connectLogin: connectLogin
                ? { identityProvider: connectLogin.identityProvider, clientId: connectLogin.clientId }
                : null,
            }
          : {}),
        // Without its client secret.
        ...(patch.consoleLogin !== undefined ? { consoleLogin } : {}),
      };
      await this.audit.record(
        {
          tenantId: id,
          action: 'tenant.updated',
          outcome: 'allowed',
          actor,
          details: {
            changed: Object.keys(patch).sort(),
            ...shown,
            webhookSecretIssued: secret !== undefined,
          },
        },
        m,
      );
      return secret ? { ...this.view(row), webhookSecret: secret } : this.view(row);
    });
  }

  async listTenants(): Promise<TenantView[]> {
    const rows = await this.tenants.list();
    return rows.map((r) => this.view(r));
  }

  async getTenant(id: string): Promise<TenantView> {
    const row = await this.tenants.get(id);
    if (!row) throw new CommonException('not_found', 'Tenant not found');
    return this.view(row);
  }

  /**
   * Sets the tenant's logo from the uploaded bytes, whatever type they were sent as: a PNG or JPEG of at most
   * 64 KiB and 512×512 pixels, read and rewritten by logo-image.ts (metadata and anything after the image
   * dropped or refused). 415 `unsupported_media_type` for anything else (SVG included), 413 when too big, 400
   * `validation_failed` for a malformed image or one too large in pixels; `details.reason` says which.
   * Audited as `tenant.logo_set` (type, size, pixels, SHA-256).
   */
  async setLogo(
    actor: Actor,
    id: string,
    upload: Buffer,
    declaredType: string | undefined,
  ): Promise<LogoView> {
    let logo;
    try {
      logo = readLogo(upload);
    } catch (err) {
      if (err instanceof LogoRejected) throw logoError(err);
      throw err;
    }
    const sha256 = createHash('sha256').update(logo.bytes).digest();
    return this.db.transaction(async (m) => {
      const row = await this.tenants.setLogo(m, id, { ...logo, sha256 });
      if (!row) throw new CommonException('not_found', 'Tenant not found');
      await this.audit.record(
        {
          tenantId: id,
          action: 'tenant.logo_set',
          outcome: 'allowed',
          actor,
          details: {
            contentType: logo.contentType,
            // What the upload said it was, when it said something sensible (the bytes decided).
            ...(declaredType && /^[a-z]+\/[a-z0-9.+-]{1,64}$/.test(declaredType) ? { declaredType } : {}),
            bytes: logo.bytes.length,
            uploadedBytes: upload.length,
            width: logo.width,
            height: logo.height,
            sha256: sha256.toString('hex'),
          },
        },
        m,
      );
      return logoView(row, this.config.publicUrl)!;
    });
  }

  /** Removes the tenant's logo (404 when it has none); audited as `tenant.logo_removed`. */
  async removeLogo(actor: Actor, id: string): Promise<void> {
    await this.db.transaction(async (m) => {
      if (!(await this.tenants.removeLogo(m, id))) {
        throw new CommonException('not_found', 'This tenant has no logo');
      }
      await this.audit.record(
        { tenantId: id, action: 'tenant.logo_removed', outcome: 'allowed', actor, details: {} },
        m,
      );
    });
  }

  /** The tenant's logo to serve, or undefined (none, or the tenant is unknown or being deleted). */
  logo(id: string): Promise<LogoRow | undefined> {
    return this.tenants.logo(id);
  }

  private view(r: TenantRow): TenantView {
    return view(r, this.config.publicUrl);
  }

  /**
   * Deletes a tenant (platform admin): its credentials stop working at once and its tokens are queued for
   * revocation at their providers; a worker job then crypto-shreds it (tenant-deletion.service.ts).
   * `confirmName` must be the tenant's current name (else 400 validation_failed on `confirm`); unknown: 404.
   * Asking again while it is being deleted changes nothing and answers its status.
   */
  deleteTenant(actor: Actor, tenantId: string, opts: { confirmName: string }): Promise<TenantDeletionView> {
    return this.deletion.requestDeletion(actor, tenantId, opts.confirmName);
  }

  /** Where a tenant's deletion stands (`active` when none was requested); 404 once it has been shredded. */
  deletionStatus(tenantId: string): Promise<TenantDeletionView> {
    return this.deletion.status(tenantId);
  }
}
