/** Chooses each tenant's key backend. Only the managed keyring exists so far; BYOK adapters plug in here. */
import { Inject, Injectable } from '@nestjs/common';
import type { KeyBackend } from './key-backend.js';

export const MANAGED_KEY_BACKEND = Symbol('MANAGED_KEY_BACKEND');

@Injectable()
export class KeyBackends {
  constructor(@Inject(MANAGED_KEY_BACKEND) private readonly managed: KeyBackend) {}

  async forTenant(_tenantId: string): Promise<KeyBackend> {
    return this.managed;
  }

  /** The backend probed by /readyz. */
  platformBackend(): KeyBackend {
    return this.managed;
  }
}
