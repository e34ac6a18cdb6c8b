import { Check, Column, CreateDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';
import type { KeyBackendType } from '../crypto/key-backend.js';

@Entity('tenants')
@Check('ck_tenants_brand_color', `"brand_color" ~ '^#[0-9a-f]{6}$'`)
@Check(
  'ck_tenants_logo',
  `("logo" IS NULL AND "logo_content_type" IS NULL) OR ("logo_content_type" IN ('image/png', 'image/jpeg') AND octet_length("logo") <= 65536)`,
)
export class Tenant {
  @PrimaryColumn('uuid')
  id!: string;

  @Column('text')
  name!: string;

  @Column('text', { name: 'key_backend_type', default: 'managed' })
  keyBackendType!: KeyBackendType;

  /** The current tenant_key_backends row; null for the managed backend (no foreign key: the two tables refer to each other). */
  @Column('uuid', { name: 'key_backend_id', nullable: true })
  keyBackendId!: string | null;

  /** Where a connect flow may send the browser back to: exact matches only. */
  @Column('text', { name: 'allowed_return_urls', array: true, default: () => "'{}'" })
  allowedReturnUrls!: string[];

  /** Where signed event notifications go (connection.created, …); null for none. */
  @Column('text', { name: 'webhook_url', nullable: true })
  webhookUrl!: string | null;

  /** The HMAC-SHA256 signing secret of those notifications, sealed under the tenant's data key. */
  @Column('bytea', { name: 'webhook_secret', nullable: true })
  webhookSecret!: Buffer | null;

  /** Sign-in at one of the tenant's identity providers before connecting: `{identityProvider, clientId}`. */
  @Column('jsonb', { name: 'connect_login', nullable: true })
  connectLogin!: { identityProvider: string; clientId: string } | null;

  /** That OIDC client's secret, sealed under the tenant's data key. */
  @Column('bytea', { name: 'connect_login_secret', nullable: true })
  connectLoginSecret!: Buffer | null;

  /**
   * Console single sign-on: `{identityProvider, clientId, admins, auditors}` (user ids as the identity
   * provider's user claim gives them); null for none.
   */
  @Column('jsonb', { name: 'console_login', nullable: true })
  consoleLogin!: { identityProvider: string; clientId: string; admins: string[]; auditors: string[] } | null;

  /** That OIDC client's secret, sealed under the tenant's data key. */
  @Column('bytea', { name: 'console_login_secret', nullable: true })
  consoleLoginSecret!: Buffer | null;

  /** Hand out a stored grant wider than a connector's allowed scopes when the provider cannot narrow it. */
  @Column('boolean', { name: 'scope_pass_through', default: false })
  scopePassThrough!: boolean;

  /** The name the hosted pages show (clean text, at most 100 characters); null: the tenant's name. */
  @Column('text', { name: 'display_name', nullable: true })
  displayName!: string | null;

  /** The hosted pages' accent colour, `#rrggbb` in lower case. */
  @Column('text', { name: 'brand_color', nullable: true })
  brandColor!: string | null;

  /**
   * The hosted pages' logo: a PNG or JPEG of at most 64 KiB and 512×512, as Custos rewrote it (only the
   * chunks or segments an image needs), served at /connect/branding/{tenantId}/logo.
   */
  @Column('bytea', { nullable: true })
  logo!: Buffer | null;

  @Column('text', { name: 'logo_content_type', nullable: true })
  logoContentType!: 'image/png' | 'image/jpeg' | null;

  @Column('bytea', { name: 'logo_sha256', nullable: true })
  logoSha256!: Buffer | null;

  @Column('integer', { name: 'logo_width', nullable: true })
  logoWidth!: number | null;

  @Column('integer', { name: 'logo_height', nullable: true })
  logoHeight!: number | null;

  @Column('timestamptz', { name: 'logo_updated_at', nullable: true })
  logoUpdatedAt!: Date | null;

  /**
   * When a platform admin asked for the tenant's deletion; null while it is active. From then on its
   * credentials are refused, and the shredding job deletes the row (tenant-deletion.service.ts).
   */
  @Column('timestamptz', { name: 'deletion_requested_at', nullable: true })
  deletionRequestedAt!: Date | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;
}
