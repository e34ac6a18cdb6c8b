import type { MigrationInterface, QueryRunner } from 'typeorm';

/** How far each chain's checkpoints have been forwarded to the SIEM (CUSTOS_AUDIT_FORWARD), at least once. */
export class AuditForwarding1795520000000 implements MigrationInterface {
  name = 'AuditForwarding1795520000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TABLE "audit_forward_state" ("chain" text NOT NULL, "seq" bigint NOT NULL DEFAULT 0,
      CONSTRAINT "PK_audit_forward_state" PRIMARY KEY ("chain"))`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "audit_forward_state"`);
  }
}
