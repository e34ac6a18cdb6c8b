/**
 * The key backend port. A backend only ever wraps and unwraps data keys; no credential reaches it.
 * Adapters: managed (root keyring held by Custos), aws-kms and vault-transit (BYOK).
 */
export type KeyBackendType = 'managed' | 'aws-kms' | 'vault-transit';

/** The backends a tenant brings (a configuration row each). */
export type ExternalType = Exclude<KeyBackendType, 'managed'>;

/** What may be shown of a configuration: everything but credentials. */
export type KeyBackendSettings = Record<string, string>;

/** What a wrapped data key is bound to (KMS encryption context / Vault associated data / managed AAD). */
export interface DataKeyContext {
  tenantId: string;
  dataKeyId: string;
}

export interface WrappedDataKey {
  /** Opaque, self-describing bytes stored in PostgreSQL. */
  wrapped: Buffer;
  /** Which backend key version wrapped it (managed: "v2"; KMS: key ARN; Vault: "vault:v3"). Not secret. */
  keyRef: string;
}

export interface GeneratedDataKey extends WrappedDataKey {
  plaintext: Buffer;
}

export interface KeyBackend {
  readonly type: KeyBackendType;
  /** A fresh 32-byte data key and its wrapped form. */
  generateDataKey(ctx: DataKeyContext): Promise<GeneratedDataKey>;
  /** Unwraps a data key; throws CustosException 'key_invalid' (tampered / wrong context) or 'key_unavailable'. */
  unwrapDataKey(wrapped: Buffer, ctx: DataKeyContext): Promise<Buffer>;
  /** Wraps an existing data key (moving a tenant's keys here from another backend). */
  wrapDataKey(plaintext: Buffer, ctx: DataKeyContext): Promise<WrappedDataKey>;
  /** Rewraps one of this backend's own wrapped keys under its newest key version (rotation). */
  rewrapDataKey(wrapped: Buffer, ctx: DataKeyContext): Promise<WrappedDataKey>;
  /** A real round trip, for /readyz and for accepting a configuration. */
  check(): Promise<void>;
  /** Adds a new version of the backend's own key, where Custos may (Vault: the new version number). */
  rotateKey?(): Promise<unknown>;
  /** Releases the client's resources. */
  close?(): void;
}
