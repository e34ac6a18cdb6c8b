import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Connectors (registered clients of a tenant) and the identity providers a tenant trusts to prove users. */
export class ConnectorsAndIdentityProviders1795307123236 implements MigrationInterface {
  name = 'ConnectorsAndIdentityProviders1795307123236';

  async up(q: QueryRunner): Promise<void> {
    await q.query(
      `CREATE TABLE "connectors" ("id" uuid NOT NULL, "tenant_id" uuid NOT NULL, "client_id" text NOT NULL, "name" text NOT NULL, "owner" text, "delegation" text NOT NULL, "auth_method" text NOT NULL, "secret_hash" bytea, "jwks" jsonb, "jwks_uri" text, "allowed_providers" text array NOT NULL, "allowed_scopes" jsonb NOT NULL DEFAULT '{}', "version" integer NOT NULL, "disabled_at" TIMESTAMP WITH TIME ZONE, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "PK_c1334e2a68a8de86d1732a8e3fb" PRIMARY KEY ("id"))`,
    );
    await q.query(`CREATE UNIQUE INDEX "uq_connectors_client_id" ON "connectors"  ("client_id") `);
    await q.query(`CREATE INDEX "ix_connectors_tenant_id" ON "connectors"  ("tenant_id") `);
    await q.query(
      `CREATE TABLE "identity_providers" ("id" uuid NOT NULL, "tenant_id" uuid NOT NULL, "name" text NOT NULL, "issuer" text NOT NULL, "jwks" jsonb, "jwks_uri" text, "audiences" text array NOT NULL, "user_claim" text NOT NULL, "algorithms" text array NOT NULL, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "PK_3ac9e77e3690c03f7f25579c8e0" PRIMARY KEY ("id"))`,
    );
    await q.query(
      `CREATE UNIQUE INDEX "uq_identity_providers_tenant_issuer" ON "identity_providers"  ("tenant_id", "issuer") `,
    );
    await q.query(
      `CREATE UNIQUE INDEX "uq_identity_providers_tenant_name" ON "identity_providers"  ("tenant_id", "name") `,
    );
    await q.query(
      `ALTER TABLE "connectors" ADD CONSTRAINT "FK_f437c48fb77a56513e22ac16c5a" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE NO ACTION`,
    );
    await q.query(
      `ALTER TABLE "identity_providers" ADD CONSTRAINT "FK_94a7bbc0e893d99a5b316e0a6d9" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE NO ACTION`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "identity_providers"`);
    await q.query(`DROP TABLE "connectors"`);
  }
}
