/**
 * Each tenant's key backends. The managed root keyring serves every tenant that has not brought its own
 * key; a BYOK configuration (AWS KMS or Vault Transit) is an immutable row of `tenant_key_backends`, and every
 * data key records the configuration that wrapped it, so keys wrapped before a switch stay readable while the
 * migration job moves them. Built clients are cached by configuration id.
 *
 * Credentials of a configuration are sealed under a data key wrapped by the managed root keyring (never by
 * the tenant's own backend: they are what reaches it).
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable, type OnModuleDestroy } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { CustosException } from '../common/errors.js';
import { CONFIG, type Config } from '../config/config.js';
import { openField, sealField, type FieldBinding } from './envelope.js';
import type { KeyBackend, KeyBackendType } from './key-backend.js';
import type { KeyBackendInput } from './key-backend.dto.js';

export const MANAGED_KEY_BACKEND = Symbol('MANAGED_KEY_BACKEND');

type ExternalType = Exclude<KeyBackendType, 'managed'>;

/** What may be shown: everything but credentials. */
export type KeyBackendSettings = Record<string, string>;

interface Secrets {
  secretAccessKey?: string;
  sessionToken?: string;
  token?: string;
  secretId?: string;
}

interface ConfigRow {
  id: string;
  tenant_id: string;
  type: ExternalType;
  settings: KeyBackendSettings;
  secret_wrapped_key: Buffer | null;
  secret: Buffer | null;
  retired_at: Date | null;
}

/** A configuration split into what is stored in the clear and what is sealed. */
export function splitConfig(input: Exclude<KeyBackendInput, { type: 'managed' }>): {
  type: ExternalType;
  settings: KeyBackendSettings;
  secrets: Secrets | null;
} {
  if (input.type === 'aws-kms') {
    const settings: KeyBackendSettings = { keyId: input.keyId, region: input.region };
    if (input.endpoint) settings.endpoint = input.endpoint;
    if (input.credentials) settings.accessKeyId = input.credentials.accessKeyId;
    const secrets = input.credentials
      ? {
          secretAccessKey: input.credentials.secretAccessKey,
          ...(input.credentials.sessionToken ? { sessionToken: input.credentials.sessionToken } : {}),
        }
      : null;
    return { type: 'aws-kms', settings, secrets };
  }
  const settings: KeyBackendSettings = {
    address: input.address,
    mount: input.mount,
    keyName: input.keyName,
    auth: input.token ? 'token' : 'approle',
  };
  if (input.namespace) settings.namespace = input.namespace;
  if (input.appRole) {
    settings.roleId = input.appRole.roleId;
    if (input.appRole.mount) settings.appRoleMount = input.appRole.mount;
  }
  const secrets = input.token ? { token: input.token } : { secretId: input.appRole!.secretId };
  return { type: 'vault-transit', settings, secrets };
}

/**
 * Builds a client for a configuration. The AWS SDK and node-vault are loaded on first use: most deployments
 * use the managed keyring, and the two clients cost tens of MiB of memory.
 */
export async function buildBackend(
  type: ExternalType,
  s: KeyBackendSettings,
  secrets: Secrets | null,
  timeoutMs?: number,
): Promise<KeyBackend> {
  if (type === 'aws-kms') {
    const { AwsKmsKeyBackend } = await import('./aws-kms-key-backend.js');
    return new AwsKmsKeyBackend({
      ...(timeoutMs ? { timeoutMs } : {}),
      keyId: s.keyId,
      region: s.region,
      ...(s.endpoint ? { endpoint: s.endpoint } : {}),
      ...(s.accessKeyId && secrets?.secretAccessKey
        ? {
            credentials: {
              accessKeyId: s.accessKeyId,
              secretAccessKey: secrets.secretAccessKey,
              ...(secrets.sessionToken ? { sessionToken: secrets.sessionToken } : {}),
            },
          }
        : {}),
    });
  }
  const { VaultTransitKeyBackend } = await import('./vault-transit-key-backend.js');
  return new VaultTransitKeyBackend({
    ...(timeoutMs ? { timeoutMs } : {}),
    address: s.address,
    mount: s.mount,
    keyName: s.keyName,
    ...(s.namespace ? { namespace: s.namespace } : {}),
    ...(s.auth === 'token'
      ? { token: secrets?.token ?? '' }
      : {
          appRole: {
            roleId: s.roleId,
            secretId: secrets?.secretId ?? '',
            ...(s.appRoleMount ? { mount: s.appRoleMount } : {}),
          },
        }),
  });
}

/** The 400 code for a configuration that failed its round trip, from the adapter's classification. */
export async function verificationFailure(type: ExternalType, err: unknown): Promise<CustosException> {
  // The adapters have already classified their failures; raw errors are classified here.
  const given = err instanceof CustosException ? err.details?.reason : undefined;
  const reason =
    typeof given === 'string'
      ? given
      : type === 'aws-kms'
        ? (await import('./aws-kms-key-backend.js')).classifyKmsError(err).reason
        : (await import('./vault-transit-key-backend.js')).classifyVaultError(err).reason;
  const code =
    reason === 'unreachable' || reason === 'throttled'
      ? 'key_backend_unreachable'
      : reason === 'denied' || reason === 'unauthenticated'
        ? 'key_backend_denied'
        : 'key_backend_invalid';
  const what = {
    key_backend_unreachable: 'The key backend could not be reached',
    key_backend_denied: 'The key backend refused these credentials or this key',
    key_backend_invalid: 'The key backend rejected this configuration',
  }[code];
  return new CustosException(code, `${what} (${reason})`, { reason });
}

const secretsBinding = (tenantId: string, configId: string): FieldBinding => ({
  tenantId,
  scope: 'key_backend',
  recordId: configId,
  field: 'credentials',
  dataKeyId: configId,
});

@Injectable()
export class KeyBackends implements OnModuleDestroy {
  private readonly built = new Map<string, Promise<KeyBackend>>();

  constructor(
    @Inject(MANAGED_KEY_BACKEND) private readonly managed: KeyBackend,
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(CONFIG) private readonly config: Config,
  ) {}

  get timeoutMs(): number {
    return this.config.keyBackendTimeoutMs;
  }

  /** The backend new data keys of this tenant are wrapped by, and its configuration id (null: managed). */
  async current(tenantId: string): Promise<{ backend: KeyBackend; backendId: string | null }> {
    const rows: { key_backend_id: string | null }[] = await this.db.query(
      'SELECT key_backend_id FROM tenants WHERE id = $1',
      [tenantId],
    );
    const backendId = rows[0]?.key_backend_id ?? null;
    return { backend: await this.byId(tenantId, backendId), backendId };
  }

  async forTenant(tenantId: string): Promise<KeyBackend> {
    return (await this.current(tenantId)).backend;
  }

  /** The backend of one configuration of this tenant (null: managed). */
  byId(tenantId: string, backendId: string | null): Promise<KeyBackend> {
    if (backendId === null) return Promise.resolve(this.managed);
    let pending = this.built.get(backendId);
    if (!pending) {
      pending = this.load(tenantId, backendId);
      this.built.set(backendId, pending);
      pending.catch(() => this.built.delete(backendId));
    }
    return pending;
  }

  /** The backend probed by /readyz. */
  platformBackend(): KeyBackend {
    return this.managed;
  }

  /** Seals a configuration's credentials under a fresh key wrapped by the managed root keyring. */
  async sealSecrets(
    tenantId: string,
    configId: string,
    secrets: Secrets,
  ): Promise<{ wrappedKey: Buffer; envelope: Buffer }> {
    const key = await this.managed.generateDataKey({ tenantId, dataKeyId: configId });
    try {
      const envelope = sealField(
        key.plaintext,
        secretsBinding(tenantId, configId),
        Buffer.from(JSON.stringify(secrets), 'utf8'),
      );
      return { wrappedKey: key.wrapped, envelope };
    } finally {
      key.plaintext.fill(0);
    }
  }

  /** Forgets a built client (its configuration was retired). */
  evict(backendId: string): void {
    this.built.delete(backendId);
  }

  newConfigId(): string {
    return randomUUID();
  }

  onModuleDestroy(): void {
    for (const pending of this.built.values()) {
      void pending.then((b) => (b as { close?: () => void }).close?.()).catch(() => undefined);
    }
    this.built.clear();
  }

  private async load(tenantId: string, backendId: string): Promise<KeyBackend> {
    const rows: ConfigRow[] = await this.db.query(
      `SELECT id, tenant_id, type, settings, secret_wrapped_key, secret, retired_at
         FROM tenant_key_backends WHERE id = $1 AND tenant_id = $2`,
      [backendId, tenantId],
    );
    const row = rows[0];
    if (!row) throw new CustosException('key_unavailable', 'Unknown key-backend configuration');
    let secrets: Secrets | null = null;
    if (row.secret && row.secret_wrapped_key) {
      const key = await this.managed.unwrapDataKey(row.secret_wrapped_key, { tenantId, dataKeyId: row.id });
      try {
        secrets = JSON.parse(
          openField(key, secretsBinding(tenantId, row.id), row.secret).toString('utf8'),
        ) as Secrets;
      } finally {
        key.fill(0);
      }
    }
    return await buildBackend(row.type, row.settings, secrets, this.config.keyBackendTimeoutMs);
  }
}
