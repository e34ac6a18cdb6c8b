/**
 * What tenants/ asks identity/ when a tenant's connect sign-in names an identity provider: does the tenant
 * have one of that name? identity/ sits above tenants/ (it imports tenants, never the reverse), so identity
 * registers the answer at start-up (TenantsService.registerIdentityProviderNames) and the statement stays
 * with the identity_providers table's repository.
 */
export interface IdentityProviderNames {
  exists(tenantId: string, name: string): Promise<boolean>;
}
