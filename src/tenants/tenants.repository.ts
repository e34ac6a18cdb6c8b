/**
 * Every statement on the tenants table outside its key backend columns (src/crypto/ owns those) and the
 * connect flow's reads of a session with its tenant (connect/connect-sessions.repository.ts, one join): the
 * admin API's create, update, list and get, the webhook settings, the hosted pages' branding (the logo's bytes
 * are read only to serve it), the connect flow's sign-in settings and return-URL allow-list, whether a tenant exists, and its deletion (the request, and the row's removal, which
 * cascades to every table of the tenant). Reads that authenticate a tenant's credentials (admin keys, connectors)
 * and crypto's sealing check read deletion_requested_at in their own statements.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import type { KeyBackendType } from '../crypto/key-backend.js';
import { returned } from '../database/sql.js';
import type { LogoContentType } from './logo-image.js';

/** The tenant's connect-flow sign-in: one of its identity providers and the OIDC client to use there. */
export interface ConnectLogin {
  identityProvider: string;
  clientId: string;
}

/** The console's single sign-on: one of the tenant's identity providers, the OIDC client, and who is whom. */
export interface ConsoleLogin {
  identityProvider: string;
  clientId: string;
  admins: string[];
  auditors: string[];
}

/** The tenant's console single sign-on settings, the client secret sealed. */
export interface ConsoleLoginRow {
  console_login: ConsoleLogin | null;
  console_login_secret: Buffer | null;
}

/** A tenant as the admin API shows it (no secret columns). */
export interface TenantRow {
  id: string;
  name: string;
  key_backend_type: KeyBackendType;
  allowed_return_urls: string[];
  webhook_url: string | null;
  connect_login: ConnectLogin | null;
  console_login: ConsoleLogin | null;
  scope_pass_through: boolean;
  display_name: string | null;
  brand_color: string | null;
  /** The logo's type, size in bytes and pixels, SHA-256 (hex) and time of upload; null without a logo. */
  logo_content_type: LogoContentType | null;
  logo_bytes: number | null;
  logo_width: number | null;
  logo_height: number | null;
  logo_sha256: string | null;
  logo_updated_at: Date | null;
  /** When its deletion was requested; null while it is active. */
  deletion_requested_at: Date | null;
  created_at: Date;
}

/** The columns of a TenantRow (never the logo's bytes). */
const columns =
  'id, name, key_backend_type, allowed_return_urls, webhook_url, connect_login, console_login, scope_pass_through, ' +
  'display_name, brand_color, logo_content_type, octet_length(logo) AS logo_bytes, logo_width, logo_height, ' +
  "encode(logo_sha256, 'hex') AS logo_sha256, logo_updated_at, deletion_requested_at, created_at";

/** A logo as served: its bytes, type and SHA-256. */
export interface LogoRow {
  logo: Buffer;
  logo_content_type: LogoContentType;
  logo_sha256: Buffer;
}

/** A logo as stored, already checked and rewritten (logo-image.ts). */
export interface StoredLogo {
  bytes: Buffer;
  contentType: LogoContentType;
  sha256: Buffer;
  width: number;
  height: number;
}

/** Where a tenant's notifications go, and their signing secret (sealed). */
export interface WebhookRow {
  webhook_url: string | null;
  webhook_secret: Buffer | null;
}

/** The tenant's connect-flow sign-in settings, the client secret sealed. */
export interface ConnectLoginRow {
  connect_login: ConnectLogin | null;
  connect_login_secret: Buffer | null;
}

/** What a settings update writes; null (or a false `set…`) leaves a column as it is. */
export interface TenantChanges {
  name: string | null;
  allowedReturnUrls: string[] | null;
  /** Whether to write webhook_url: to `webhookUrl`, or (null) to none, which also drops the secret. */
  setWebhook: boolean;
  webhookUrl: string | null;
  /** A new signing secret, already sealed. */
  webhookSecret: Buffer | null;
  /** Whether to write connect_login and its secret (null: sign-in no longer required). */
  setConnectLogin: boolean;
  connectLogin: ConnectLogin | null;
  /** The login client's secret, already sealed. */
  connectLoginSecret: Buffer | null;
  /** Whether to write console_login and its secret (null: no console single sign-on). */
  setConsoleLogin: boolean;
  consoleLogin: ConsoleLogin | null;
  /** The console client's secret, already sealed. */
  consoleLoginSecret: Buffer | null;
  scopePassThrough: boolean | null;
  /** Whether to write display_name (null: none). */
  setDisplayName: boolean;
  displayName: string | null;
  /** Whether to write brand_color (null: none). */
  setBrandColor: boolean;
  brandColor: string | null;
}

@Injectable()
export class TenantsRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** A new tenant on the managed key backend. */
  async create(m: EntityManager, id: string, name: string): Promise<TenantRow> {
    const rows: TenantRow[] = await m.query(
      `INSERT INTO tenants (id, name, key_backend_type) VALUES ($1, $2, 'managed')
         RETURNING ${columns}`,
      [id, name],
    );
    return rows[0];
  }

  /** Writes a settings update; undefined when there is no such tenant, or it is being deleted. */
  async update(m: EntityManager, id: string, c: TenantChanges): Promise<TenantRow | undefined> {
    const rows = returned<TenantRow>(
      await m.query(
        `UPDATE tenants SET name = COALESCE($2, name), allowed_return_urls = COALESCE($3, allowed_return_urls),
             webhook_url = CASE WHEN $4::boolean THEN $5 ELSE webhook_url END,
             webhook_secret = CASE WHEN $4::boolean AND $5::text IS NULL THEN NULL
                                   ELSE COALESCE($6, webhook_secret) END,
             connect_login = CASE WHEN $7::boolean THEN $8::jsonb ELSE connect_login END,
             connect_login_secret = CASE WHEN $7::boolean THEN $9 ELSE connect_login_secret END,
             scope_pass_through = COALESCE($10, scope_pass_through),
             display_name = CASE WHEN $11::boolean THEN $12 ELSE display_name END,
             brand_color = CASE WHEN $13::boolean THEN $14 ELSE brand_color END,
             console_login = CASE WHEN $15::boolean THEN $16::jsonb ELSE console_login END,
             console_login_secret = CASE WHEN $15::boolean THEN $17 ELSE console_login_secret END
            WHERE id = $1 AND deletion_requested_at IS NULL RETURNING ${columns}`,
        [
          id,
          c.name,
          c.allowedReturnUrls,
          c.setWebhook,
          c.webhookUrl,
          c.webhookSecret,
          c.setConnectLogin,
          c.connectLogin ? JSON.stringify(c.connectLogin) : null,
          c.connectLoginSecret,
          c.scopePassThrough,
          c.setDisplayName,
          c.displayName,
          c.setBrandColor,
          c.brandColor,
          c.setConsoleLogin,
          c.consoleLogin ? JSON.stringify(c.consoleLogin) : null,
          c.consoleLoginSecret,
        ],
      ),
    );
    return rows[0];
  }

  /** Whether the tenant hands out grants wider than a connector's allowed scopes that cannot be narrowed. */
  async scopePassThrough(id: string): Promise<boolean> {
    const rows: Array<{ scope_pass_through: boolean }> = await this.db.query(
      'SELECT scope_pass_through FROM tenants WHERE id = $1',
      [id],
    );
    return rows[0]?.scope_pass_through === true;
  }

  /** Every tenant, oldest first. */
  list(): Promise<TenantRow[]> {
    return this.db.query(`SELECT ${columns} FROM tenants ORDER BY created_at, id`);
  }

  async get(id: string): Promise<TenantRow | undefined> {
    const rows: TenantRow[] = await this.db.query(`SELECT ${columns} FROM tenants WHERE id = $1`, [id]);
    return rows[0];
  }

  /**
   * Whether the tenant exists and is not being deleted (in the caller's transaction when given one): a tenant
   * being deleted gets nothing new.
   */
  async exists(id: string, m?: EntityManager): Promise<boolean> {
    const rows: unknown[] = await (m ?? this.db.manager).query(
      'SELECT 1 FROM tenants WHERE id = $1 AND deletion_requested_at IS NULL',
      [id],
    );
    return rows.length > 0;
  }

  /** The tenant's row, locked until the caller's transaction ends; undefined when there is no such tenant. */
  async lockForDeletion(m: EntityManager, id: string): Promise<TenantRow | undefined> {
    const rows: TenantRow[] = await m.query(`SELECT ${columns} FROM tenants WHERE id = $1 FOR UPDATE`, [id]);
    return rows[0];
  }

  /** Records the deletion request (the caller holds the row's lock); returns its time. */
  async markDeletionRequested(m: EntityManager, id: string): Promise<Date> {
    const rows = returned<{ at: Date }>(
      await m.query(
        `UPDATE tenants SET deletion_requested_at = now(), updated_at = now() WHERE id = $1
           RETURNING deletion_requested_at AS at`,
        [id],
      ),
    );
    return rows[0].at;
  }

  /** Tenants whose deletion was requested, the oldest request first. */
  async deleting(limit: number): Promise<{ id: string; deletion_requested_at: Date }[]> {
    return this.db.query(
      `SELECT id, deletion_requested_at FROM tenants WHERE deletion_requested_at IS NOT NULL
        ORDER BY deletion_requested_at, id LIMIT $1`,
      [limit],
    );
  }

  /**
   * Deletes the tenant's row, and with it, by the foreign keys' ON DELETE CASCADE, every row of every table that
   * names the tenant (its connections before the data keys they reference, within the one statement).
   */
  async delete(m: EntityManager, id: string): Promise<boolean> {
    const rows = returned<{ id: string }>(
      await m.query('DELETE FROM tenants WHERE id = $1 RETURNING id', [id]),
    );
    return rows.length > 0;
  }

  /** The tenant's sealed webhook signing secret (null when none); undefined when there is no such tenant. */
  async webhookSecret(id: string): Promise<{ webhook_secret: Buffer | null } | undefined> {
    const rows: { webhook_secret: Buffer | null }[] = await this.db.query(
      'SELECT webhook_secret FROM tenants WHERE id = $1',
      [id],
    );
    return rows[0];
  }

  /** The tenant's webhook URL and sealed signing secret; undefined when there is no such tenant. */
  async webhook(id: string): Promise<WebhookRow | undefined> {
    const rows: WebhookRow[] = await this.db.query(
      'SELECT webhook_url, webhook_secret FROM tenants WHERE id = $1',
      [id],
    );
    return rows[0];
  }

  /** The tenant's connect-flow sign-in settings; undefined when there is no such tenant. */
  async connectLogin(id: string): Promise<ConnectLoginRow | undefined> {
    const rows: ConnectLoginRow[] = await this.db.query(
      'SELECT connect_login, connect_login_secret FROM tenants WHERE id = $1',
      [id],
    );
    return rows[0];
  }

  /** The tenant's console single sign-on settings; undefined when there is no such tenant. */
  async consoleLogin(id: string): Promise<ConsoleLoginRow | undefined> {
    const rows: ConsoleLoginRow[] = await this.db.query(
      'SELECT console_login, console_login_secret FROM tenants WHERE id = $1 AND deletion_requested_at IS NULL',
      [id],
    );
    return rows[0];
  }

  /** Stores the tenant's logo, replacing any; undefined when there is no such tenant, or it is being deleted. */
  async setLogo(m: EntityManager, id: string, logo: StoredLogo): Promise<TenantRow | undefined> {
    const rows = returned<TenantRow>(
      await m.query(
        `UPDATE tenants SET logo = $2, logo_content_type = $3, logo_sha256 = $4, logo_width = $5, logo_height = $6,
             logo_updated_at = now(), updated_at = now()
            WHERE id = $1 AND deletion_requested_at IS NULL RETURNING ${columns}`,
        [id, logo.bytes, logo.contentType, logo.sha256, logo.width, logo.height],
      ),
    );
    return rows[0];
  }

  /** Removes the tenant's logo; false when it had none (or there is no such tenant, or it is being deleted). */
  async removeLogo(m: EntityManager, id: string): Promise<boolean> {
    const rows = returned<{ id: string }>(
      await m.query(
        `UPDATE tenants SET logo = NULL, logo_content_type = NULL, logo_sha256 = NULL, logo_width = NULL,
             logo_height = NULL, logo_updated_at = NULL, updated_at = now()
            WHERE id = $1 AND deletion_requested_at IS NULL AND logo IS NOT NULL RETURNING id`,
        [id],
      ),
    );
    return rows.length > 0;
  }

  /** The tenant's logo to serve; undefined when it has none, or it is being deleted. */
  async logo(id: string): Promise<LogoRow | undefined> {
    const rows: LogoRow[] = await this.db.query(
      `SELECT logo, logo_content_type, logo_sha256 FROM tenants
        WHERE id = $1 AND deletion_requested_at IS NULL AND logo IS NOT NULL`,
      [id],
    );
    return rows[0];
  }

  /** Whether `url` is on the tenant's allowed return URLs: an exact, byte-for-byte match. */
  async allowsReturnUrl(id: string, url: string): Promise<boolean> {
    const rows: { allowed: boolean | null }[] = await this.db.query(
      'SELECT $2 = ANY(allowed_return_urls) AS allowed FROM tenants WHERE id = $1',
      [id, url],
    );
    return rows[0]?.allowed === true;
  }
}
