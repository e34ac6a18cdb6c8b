/**
 * What a domain above tenants/ does when a tenant is deleted, as TenantDeletionService asks it.
 *
 * Why an interface: tenants/ sits below the domains that keep a tenant's credentials (identity's connectors,
 * connections and their queued revocations import tenants/, never the reverse), yet a deletion request must stop
 * those credentials and queue the tokens for revocation in the request's own transaction, each statement on a
 * table by that table's repository. So tenants/ names what it needs here and each of those domains registers an
 * implementation at start-up (TenantDeletionService.registerParticipant), keeping the imports pointing down.
 * Rows that name the tenant by a foreign key go with the tenant's row (ON DELETE CASCADE); a participant
 * removes only what does not cascade.
 */
import type { EntityManager } from 'typeorm';

/** The participants a deletion needs: without both registered, nothing is deleted (fails closed). */
export type TenantDeletionParticipantName = 'identity' | 'connections';

export interface TenantDeletionParticipant {
  readonly name: TenantDeletionParticipantName;
  /**
   * Inside the deletion request's transaction (the tenant's row locked and marked): makes the domain's
   * credentials of the tenant stop working at once, on every replica. Returns counts by the name the
   * `tenant.deletion_requested` event gives them. Run again before shredding, for anything written meanwhile.
   */
  requested(m: EntityManager, tenantId: string): Promise<Record<string, number>>;
  /** Work that must be done before the tenant's keys go (tokens to revoke at providers): how many items wait. */
  outstanding?(tenantId: string): Promise<number>;
  /**
   * Inside the shredding transaction, before the tenant's row (and all that cascades from it) is deleted:
   * removes the domain's rows of the tenant that do not cascade, and counts what goes. Returns counts by the
   * name the `tenant.deleted` event gives them.
   */
  shredding?(m: EntityManager, tenantId: string): Promise<Record<string, number>>;
}
