import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Least privilege per tool: a token whose stored grant is wider than a connector's allowed scopes, for a provider
 * that cannot mint a narrower one, is refused unless the tenant opts in to pass the whole grant through.
 */
export class ScopePassThrough1795550000000 implements MigrationInterface {
  name = 'ScopePassThrough1795550000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "tenants" ADD "scope_pass_through" boolean NOT NULL DEFAULT false`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "tenants" DROP COLUMN "scope_pass_through"`);
  }
}
