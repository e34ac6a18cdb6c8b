/**
 * How a checkpoint signing key's private part is kept: sealed by the chain's key backend, like every other
 * key. audit/ sits below crypto/ (crypto records its key operations in the audit trail), so audit/ names what
 * it needs here and crypto/ registers the implementation at start-up (AuditSigningKeyProtector), keeping the
 * imports pointing down.
 */
import { Injectable } from '@nestjs/common';

export interface SigningKeyProtector {
  /**
   * Whose key backend protects a new key of this tenant's chain: the tenant's (its id) while the tenant exists
   * and is not being deleted, else the platform's (null). A deleted tenant's chain stays sealable with no keys
   * of the tenant left.
   */
  protectorOf(tenantId: string): Promise<string | null>;
  /** Seals a 32-byte Ed25519 seed for a chain's key (tenant: the tenant's key backend; null: the platform's). */
  seal(tenantId: string | null, kid: string, seed: Buffer): Promise<Buffer>;
  /** Opens what `seal` returned for the same tenant and kid. */
  open(tenantId: string | null, kid: string, sealed: Buffer): Promise<Buffer>;
}

@Injectable()
export class SigningKeyProtection implements SigningKeyProtector {
  private impl?: SigningKeyProtector;

  register(impl: SigningKeyProtector): void {
    this.impl = impl;
  }

  private get protector(): SigningKeyProtector {
    // Fails closed: without a key backend nothing is signed (the events stay linked and wait).
    if (!this.impl) throw new Error('no signing key protector is registered');
    return this.impl;
  }

  protectorOf(tenantId: string): Promise<string | null> {
    return this.protector.protectorOf(tenantId);
  }

  seal(tenantId: string | null, kid: string, seed: Buffer): Promise<Buffer> {
    return this.protector.seal(tenantId, kid, seed);
  }

  open(tenantId: string | null, kid: string, sealed: Buffer): Promise<Buffer> {
    return this.protector.open(tenantId, kid, sealed);
  }
}
