/**
 * Keeps the audit trail's checkpoint signing keys sealed: a tenant's under the tenant's data keys (so its
 * key backend, managed or BYOK, protects them and key migrations carry them along), the platform chain's
 * wrapped directly by the managed root keyring. A tenant being deleted (or gone) has its chain's keys wrapped
 * like the platform's, so that its chain stays sealable once its data keys are shredded (the chain keeps its
 * id). Registered with audit/'s SigningKeyProtection at start-up.
 */
import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import { SigningKeyProtection, type SigningKeyProtector } from '../audit/signing-key-protector.js';
import { DataKeyService } from './data-key.service.js';
import { KeyBackends } from './key-backends.js';

/** The managed backend's context for the platform chain's keys: a tenant id no tenant can have. */
export const PLATFORM_AUDIT_CONTEXT_TENANT = 'ffffffff-ffff-4fff-bfff-ffffffffffff';

const binding = (kid: string) => ({ scope: 'audit_signing_key', recordId: kid, field: 'seed' });

@Injectable()
export class AuditSigningKeyProtector implements SigningKeyProtector, OnModuleInit {
  constructor(
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(KeyBackends) private readonly backends: KeyBackends,
    @Inject(SigningKeyProtection) private readonly protection: SigningKeyProtection,
  ) {}

  onModuleInit(): void {
    this.protection.register(this);
  }

  async protectorOf(tenantId: string): Promise<string | null> {
    return (await this.dataKeys.acceptsNewSecrets(tenantId)) ? tenantId : null;
  }

  async seal(tenantId: string | null, kid: string, seed: Buffer): Promise<Buffer> {
    if (tenantId === null) {
      const { wrapped } = await this.backends
        .platformBackend()
        .wrapDataKey(seed, { tenantId: PLATFORM_AUDIT_CONTEXT_TENANT, dataKeyId: kid });
      return wrapped;
    }
    return this.dataKeys.seal(tenantId, binding(kid), seed.toString('base64'));
  }

  async open(tenantId: string | null, kid: string, sealed: Buffer): Promise<Buffer> {
    if (tenantId === null) {
      return this.backends
        .platformBackend()
        .unwrapDataKey(sealed, { tenantId: PLATFORM_AUDIT_CONTEXT_TENANT, dataKeyId: kid });
    }
    return Buffer.from(await this.dataKeys.open(tenantId, binding(kid), sealed), 'base64');
  }
}
