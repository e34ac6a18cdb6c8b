/**
 * What a domain above providers/ keeps under a tenant's custom provider key, as TenantProvidersService
 * asks about it when the provider is deleted or changes its auth mode.
 *
 * Why an interface: providers/ sits below the domains that name a provider (identity's connectors, connect's
 * sessions, connections and their queued revocations import providers/, never the reverse), yet deleting a
 * custom provider must count its live connections and remove every reference to it in the same transaction
 * as the delete, each statement on a table by that table's repository. So providers/ names what it needs
 * here and each of those domains registers an implementation at start-up
 * (TenantProvidersService.registerUsage), keeping the imports pointing down.
 */
import type { EntityManager } from 'typeorm';

export interface ProviderUsage {
  /** How many live (non-revoked) records use the provider; any blocks a delete or an auth-mode change. */
  liveConnections?(m: EntityManager, tenantId: string, provider: string): Promise<number>;
  /**
   * Inside the delete's transaction: removes the domain's references to the deleted provider; returns how
   * many of each kind, by the name the `provider.deleted` audit event gives them (e.g. `connectorsUpdated`).
   */
  forget(m: EntityManager, tenantId: string, provider: string): Promise<Record<string, number>>;
}
