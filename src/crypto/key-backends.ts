/**
 * Each tenant's key backends. The managed root keyring serves every tenant that has not brought its own
 * key; a BYOK configuration (AWS KMS or Vault Transit) is an immutable row of `tenant_key_backends`, and every
 * data key records the configuration that wrapped it, so keys wrapped before a switch stay readable while the
 * migration job moves them. Built clients are cached by configuration id.
 *
 * Credentials of a configuration are sealed under a data key wrapped by the managed root keyring (never by
 * the tenant's own backend: they are what reaches it). Every client sends through the guarded outbound client,
 * and each configuration's client sits behind its own circuit breaker (key-backend-breaker.ts).
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable, type OnModuleDestroy } from '@nestjs/common';
import type { AwsCredentialIdentityProvider } from '@smithy/types';
import { Counter } from 'prom-client';
import { CustosException } from '../common/errors.js';
import { Metrics } from '../common/metrics.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { CONFIG, type Config } from '../config/config.js';
import type { AwsKmsKeyBackendOptions } from './aws-kms-key-backend.js';
import {
  assumeRoleIdentity,
  awsExternalIdFor,
  awsIdentityRefusal,
  endpointFor,
  operatorIdentity,
  refusedOnLoad,
  type AwsIdentityKind,
  type AwsOperatorSettings,
} from './aws-identity.js';
import { openField, sealField, type FieldBinding } from './envelope.js';
import type { ExternalType, KeyBackend, KeyBackendSettings } from './key-backend.js';
import { CircuitBreakerKeyBackend } from './key-backend-breaker.js';
import { keyBackendLatency, TimedKeyBackend, type KeyBackendLatency } from './key-backend-metrics.js';
import type { KeyBackendInput } from './key-backend.dto.js';
import { diagnoseKeyBackendFailure, type KeyBackendDiagnosis } from './key-backend-failure.js';
import { KeyBackendsRepository } from './key-backends.repository.js';
import { CryptoException } from './crypto.errors.js';

export const MANAGED_KEY_BACKEND = Symbol('MANAGED_KEY_BACKEND');

export type { ExternalType, KeyBackendSettings };

interface Secrets {
  secretAccessKey?: string;
  sessionToken?: string;
  token?: string;
  secretId?: string;
}

/** A configuration split into what is stored in the clear and what is sealed. */
export function splitConfig(
  tenantId: string,
  input: Exclude<KeyBackendInput, { type: 'managed' }>,
): {
  type: ExternalType;
  settings: KeyBackendSettings;
  secrets: Secrets | null;
} {
  if (input.type === 'aws-kms') {
    const identity: AwsIdentityKind = input.credentials
      ? 'static'
      : input.assumeRole
        ? 'assume-role'
        : 'ambient';
    const settings: KeyBackendSettings = { keyId: input.keyId, region: input.region, identity };
    if (input.endpoint) settings.endpoint = input.endpoint;
    if (input.credentials) settings.accessKeyId = input.credentials.accessKeyId;
    if (input.assumeRole) {
      settings.roleArn = input.assumeRole.roleArn;
      settings.externalId = awsExternalIdFor(tenantId);
    }
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

/** Whose identity signs for an AWS KMS configuration (rows saved before `identity` existed: by their fields). */
function awsIdentityOf(s: KeyBackendSettings): AwsIdentityKind {
  if (s.identity === 'static' || s.identity === 'assume-role' || s.identity === 'ambient') return s.identity;
  return s.accessKeyId ? 'static' : 'ambient';
}

/**
 * Refuses, before anything is sent, an AWS KMS configuration that would use an identity other than the tenant's
 * own where it must not (400 key_backend_invalid with a stable `reason`).
 */
export function assertAwsIdentityAllowed(
  s: KeyBackendSettings,
  operator: Pick<AwsOperatorSettings, 'ambientKeyArns'>,
): void {
  const refusal = awsIdentityRefusal(awsIdentityOf(s), { keyId: s.keyId, endpoint: s.endpoint }, operator);
  if (refusal) throw new CryptoException('key_backend_invalid', refusal.message, { reason: refusal.reason });
}

/** What building a client needs besides the configuration. */
export interface BackendDeps {
  http: OutboundHttpClient;
  timeoutMs: number;
  aws: AwsOperatorSettings;
  /** Custos's own AWS identity, asked for only when a configuration is allowed to use it. */
  operatorIdentity: () => Promise<AwsCredentialIdentityProvider>;
}

/**
 * Builds a client for a configuration. The AWS SDK and node-vault are loaded on first use: most deployments
 * use the managed keyring, and the two clients cost tens of MiB of memory.
 */
export async function buildBackend(
  type: ExternalType,
  tenantId: string,
  s: KeyBackendSettings,
  secrets: Secrets | null,
  deps: BackendDeps,
): Promise<KeyBackend> {
  if (type === 'aws-kms') {
    const identity = awsIdentityOf(s);
    // Checked again here: a configuration saved before the rules, or an ARN since taken off the allow-list.
    const refusal = awsIdentityRefusal(identity, { keyId: s.keyId, endpoint: s.endpoint }, deps.aws);
    if (refusal) throw refusedOnLoad(refusal);
    let credentials: AwsKmsKeyBackendOptions['credentials'];
    if (identity === 'static') {
      if (!s.accessKeyId || !secrets?.secretAccessKey) {
        throw new CryptoException('key_unavailable', 'The AWS KMS configuration has no credentials', {
          backend: 'aws-kms',
          reason: 'misconfigured',
        });
      }
      credentials = {
        accessKeyId: s.accessKeyId,
        secretAccessKey: secrets.secretAccessKey,
        ...(secrets.sessionToken ? { sessionToken: secrets.sessionToken } : {}),
      };
    } else if (identity === 'assume-role') {
      credentials = await assumeRoleIdentity({
        roleArn: s.roleArn,
        externalId: awsExternalIdFor(tenantId),
        tenantId,
        region: s.region,
        operator: deps.aws,
        operatorIdentity: await deps.operatorIdentity(),
        http: deps.http,
        timeoutMs: deps.timeoutMs,
      });
    } else {
      credentials = await deps.operatorIdentity();
    }
    const endpoint = s.endpoint ?? endpointFor(deps.aws.kmsEndpoint, s.region);
    const { AwsKmsKeyBackend } = await import('./aws-kms-key-backend.js');
    return new AwsKmsKeyBackend({
      timeoutMs: deps.timeoutMs,
      keyId: s.keyId,
      region: s.region,
      ...(endpoint ? { endpoint } : {}),
      credentials,
      http: deps.http,
    });
  }
  const { VaultTransitKeyBackend } = await import('./vault-transit-key-backend.js');
  return new VaultTransitKeyBackend({
    timeoutMs: deps.timeoutMs,
    http: deps.http,
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

/**
 * What a BYOK backend's failure means (key-backend-failure.ts): the adapter's classification when it gave one,
 * else the error classified here.
 */
export async function diagnoseFailure(
  type: ExternalType,
  err: unknown,
  settings?: KeyBackendSettings,
): Promise<KeyBackendDiagnosis> {
  const given = err instanceof CustosException ? err.details?.reason : undefined;
  const reason =
    typeof given === 'string'
      ? given
      : type === 'aws-kms'
        ? (await import('./aws-kms-key-backend.js')).classifyKmsError(err).reason
        : (await import('./vault-transit-key-backend.js')).classifyVaultError(err).reason;
  return diagnoseKeyBackendFailure(type, reason, err, settings);
}

/**
 * The 400 answer for a configuration that failed its round trip: a code per cause and a message that says where
 * it failed and what to check.
 */
export async function verificationFailure(
  type: ExternalType,
  err: unknown,
  settings?: KeyBackendSettings,
): Promise<CryptoException> {
  const d = await diagnoseFailure(type, err, settings);
  return new CryptoException(d.code, `${d.message} Nothing was saved.`, {
    reason: d.reason,
    ...(d.endpoint ? { endpoint: d.endpoint } : {}),
    ...(d.connection ? { connection: d.connection } : {}),
  });
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
  private operator?: Promise<AwsCredentialIdentityProvider>;
  private readonly fastFailures: Counter<'backend'>;
  private readonly latency: KeyBackendLatency;
  /** The managed keyring, timed like every other backend. */
  private readonly managed: KeyBackend;

  constructor(
    @Inject(MANAGED_KEY_BACKEND) managed: KeyBackend,
    @Inject(KeyBackendsRepository) private readonly configs: KeyBackendsRepository,
    @Inject(CONFIG) private readonly config: Config,
    @Inject(OutboundHttpClient) private readonly http: OutboundHttpClient,
    @Inject(Metrics) metrics: Metrics,
  ) {
    this.fastFailures = new Counter({
      name: 'custos_key_backend_fast_failures_total',
      help: 'Key-backend calls answered key_unavailable at once because the configuration was unreachable moments before (circuit open), by backend type.',
      labelNames: ['backend'] as const,
      registers: [metrics.registry],
    });
    this.latency = keyBackendLatency(metrics.registry);
    this.managed = new TimedKeyBackend(managed, this.latency);
  }

  get timeoutMs(): number {
    return this.config.keyBackendTimeoutMs;
  }

  /** The operator's AWS settings (what Custos's own identity may serve, and where). */
  get awsOperator(): AwsOperatorSettings {
    return {
      ambientKeyArns: this.config.awsAmbientKeyArns,
      ...(this.config.awsKmsEndpoint ? { kmsEndpoint: this.config.awsKmsEndpoint } : {}),
      ...(this.config.awsStsEndpoint ? { stsEndpoint: this.config.awsStsEndpoint } : {}),
      ...(this.config.awsStsRegion ? { stsRegion: this.config.awsStsRegion } : {}),
    };
  }

  /** A client for a configuration that is not saved yet (to verify it); no breaker, the caller closes it. */
  buildCandidate(
    tenantId: string,
    split: { type: ExternalType; settings: KeyBackendSettings; secrets: Secrets | null },
  ): Promise<KeyBackend> {
    return buildBackend(split.type, tenantId, split.settings, split.secrets, this.deps());
  }

  /** The backend new data keys of this tenant are wrapped by, and its configuration id (null: managed). */
  async current(tenantId: string): Promise<{ backend: KeyBackend; backendId: string | null }> {
    const backendId = await this.configs.currentBackendId(tenantId);
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

  /** Forgets a built client (its configuration was retired, or a fresh one is wanted). */
  evict(backendId: string): void {
    const pending = this.built.get(backendId);
    this.built.delete(backendId);
    void pending?.then((b) => b.close?.()).catch(() => undefined);
  }

  newConfigId(): string {
    return randomUUID();
  }

  onModuleDestroy(): void {
    for (const pending of this.built.values()) {
      void pending.then((b) => b.close?.()).catch(() => undefined);
    }
    this.built.clear();
  }

  private async load(tenantId: string, backendId: string): Promise<KeyBackend> {
    const row = await this.configs.configuration(tenantId, backendId);
    if (!row) throw new CryptoException('key_unavailable', 'Unknown key-backend configuration');
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
    const backend = await buildBackend(row.type, tenantId, row.settings, secrets, this.deps());
    return new CircuitBreakerKeyBackend(new TimedKeyBackend(backend, this.latency), {
      openMs: this.config.keyBackendBreakerSeconds * 1000,
      onFastFail: (type) => this.fastFailures.inc({ backend: type }),
    });
  }

  private deps(): BackendDeps {
    return {
      http: this.http,
      timeoutMs: this.config.keyBackendTimeoutMs,
      aws: this.awsOperator,
      // One chain per process: it caches what it finds.
      operatorIdentity: () => (this.operator ??= operatorIdentity()),
    };
  }
}
