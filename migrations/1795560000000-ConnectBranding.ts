import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The hosted pages, finished: a tenant's display name, colour and small logo (PNG or JPEG, stored here, served
 * by Custos), and the outcome of a connect session's last attempt (declined or failed, with its reason in
 * last_error) while its link stays usable.
 */
export class ConnectBranding1795560000000 implements MigrationInterface {
  name = 'ConnectBranding1795560000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "tenants" ADD "display_name" text`);
    await q.query(`ALTER TABLE "tenants" ADD "brand_color" text`);
    await q.query(`ALTER TABLE "tenants" ADD "logo" bytea`);
    await q.query(`ALTER TABLE "tenants" ADD "logo_content_type" text`);
    await q.query(`ALTER TABLE "tenants" ADD "logo_sha256" bytea`);
    await q.query(`ALTER TABLE "tenants" ADD "logo_width" integer`);
    await q.query(`ALTER TABLE "tenants" ADD "logo_height" integer`);
    await q.query(`ALTER TABLE "tenants" ADD "logo_updated_at" TIMESTAMP WITH TIME ZONE`);
    await q.query(
      `ALTER TABLE "tenants" ADD CONSTRAINT "ck_tenants_brand_color" CHECK ("brand_color" ~ '^#[0-9a-f]{6}$')`,
    );
    await q.query(
      `ALTER TABLE "tenants" ADD CONSTRAINT "ck_tenants_logo" CHECK (("logo" IS NULL AND "logo_content_type" IS NULL) OR ("logo_content_type" IN ('image/png', 'image/jpeg') AND octet_length("logo") <= 65536))`,
    );
    await q.query(`ALTER TABLE "connect_sessions" ADD "last_outcome" text`);
    await q.query(
      `ALTER TABLE "connect_sessions" ADD CONSTRAINT "ck_connect_sessions_last_outcome" CHECK ("last_outcome" IN ('declined', 'failed'))`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "connect_sessions" DROP CONSTRAINT "ck_connect_sessions_last_outcome"`);
    await q.query(`ALTER TABLE "connect_sessions" DROP COLUMN "last_outcome"`);
    await q.query(`ALTER TABLE "tenants" DROP CONSTRAINT "ck_tenants_logo"`);
    await q.query(`ALTER TABLE "tenants" DROP CONSTRAINT "ck_tenants_brand_color"`);
    for (const c of [
      'logo_updated_at',
      'logo_height',
      'logo_width',
      'logo_sha256',
      'logo_content_type',
      'logo',
      'brand_color',
      'display_name',
    ]) {
      await q.query(`ALTER TABLE "tenants" DROP COLUMN "${c}"`);
    }
  }
}
