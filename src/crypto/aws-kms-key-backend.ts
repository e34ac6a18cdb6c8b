/**
 * The AWS KMS key backend (BYOK): data keys are generated and wrapped by a tenant's own KMS key, so Custos never
 * holds the key that protects them. Only data keys pass through here, never credentials.
 *
 * Each data key is bound to where it belongs through the KMS encryption context
 *
 *   {"custos:purpose": "data-key", "custos:tenant": tenantId, "custos:data-key": dataKeyId}
 *
 * which KMS requires to match exactly on Decrypt, so a wrapped key copied to another tenant or row does not unwrap
 * (InvalidCiphertextException → key_invalid). The wrapped form is KMS's own ciphertext blob; keyRef is the ARN of
 * the key that wrapped it (KMS rotation keeps the ARN and is invisible in the blob).
 *
 * Every call has a hard deadline (`timeoutMs`, default 5 s, covering retries) and at most `maxAttempts` (default 2)
 * attempts. SDK errors are mapped to CustosException by classifyKmsError; messages never carry credentials, and
 * the SDK error itself is not attached (its message can name IAM principals).
 *
 * The SDK sends through the guarded client (GuardedHttpHandler): checked addresses, no redirect followed. Its
 * credentials are always given explicitly (see aws-identity.ts): the SDK never falls back to its default chain.
 */
import crypto from 'node:crypto';
import {
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  KMSClient,
  ReEncryptCommand,
  RotateKeyOnDemandCommand,
  type KeyState,
} from '@aws-sdk/client-kms';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { CommonException, CustosException } from '../common/errors.js';
import type { OutboundHttpClient } from '../common/outbound-http.js';
import { AwsIdentityError, awsRegionalEndpoint } from './aws-identity.js';
import { bindingStringProblem } from './envelope.js';
import {
  GuardedHttpHandler,
  KeyBackendTransportError,
  originOf,
  type ConnectionFailure,
} from './guarded-http-handler.js';
import type {
  DataKeyContext,
  GeneratedDataKey,
  KeyBackend,
  KeyBackendType,
  WrappedDataKey,
} from './key-backend.js';
import { CryptoException } from './crypto.errors.js';

export interface AwsKmsKeyBackendOptions {
  /** Key id, key ARN, alias name ("alias/custos") or alias ARN. */
  keyId: string;
  region: string;
  /** Only for emulators and VPC endpoints; default is the regional AWS endpoint. */
  endpoint?: string;
  /** Always explicit: static credentials or a provider (an assumed role, or an allow-listed ambient identity). */
  credentials: AwsCredentialIdentity | AwsCredentialIdentityProvider;
  /** The guarded client every request goes through. */
  http: OutboundHttpClient;
  /** Deadline for one backend call, retries included. Default 5000. */
  timeoutMs?: number;
  /** Attempts per call (retries on throttling, 5xx and network errors). Default 2. */
  maxAttempts?: number;
}

export type KmsFailureReason =
  | 'disabled'
  | 'pending_deletion'
  | 'invalid_state'
  | 'denied'
  | 'not_found'
  | 'unauthenticated'
  | 'unreachable'
  | 'throttled'
  | 'misconfigured'
  | 'no_identity'
  | 'invalid_ciphertext'
  | 'wrong_key';

export interface KeyBackendFailure<R extends string> {
  code: 'key_unavailable' | 'key_invalid';
  reason: R;
}

const DATA_KEY_BYTES = 32;
const DEFAULT_TIMEOUT_MS = 5000;
const DEFAULT_MAX_ATTEMPTS = 2;

const PROBE_CONTEXT: DataKeyContext = {
  tenantId: 'custos-readiness-probe',
  dataKeyId: '00000000-0000-0000-0000-000000000000',
};

const UNAUTHENTICATED_ERRORS = new Set([
  'UnrecognizedClientException',
  'InvalidSignatureException',
  'IncompleteSignatureException',
  'MissingAuthenticationTokenException',
  'InvalidClientTokenId',
  'ExpiredTokenException',
  'CredentialsProviderError',
]);
const NETWORK_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'EPIPE',
]);

const MESSAGES: Record<KmsFailureReason, string> = {
  disabled: 'the AWS KMS key is disabled',
  pending_deletion: 'the AWS KMS key is pending deletion',
  invalid_state: 'the AWS KMS key is not in a usable state',
  denied: 'AWS KMS denied access to the key',
  not_found: 'the AWS KMS key does not exist',
  unauthenticated: 'AWS KMS did not accept the configured credentials',
  unreachable: 'AWS KMS could not be reached',
  throttled: 'AWS KMS throttled the request',
  misconfigured: 'AWS KMS rejected the request',
  no_identity: 'Custos has no AWS identity of its own to use',
  invalid_ciphertext: 'the data key could not be unwrapped',
  wrong_key: 'the data key was wrapped by a different AWS KMS key',
};

/**
 * Maps an error from @aws-sdk/client-kms (or the network beneath it) to a CustosException code and a reason
 * that config verification can turn into a precise 400.
 */
export function classifyKmsError(error: unknown): KeyBackendFailure<KmsFailureReason> {
  if (error instanceof KeyBackendTransportError) {
    return {
      code: 'key_unavailable',
      reason: error.reason === 'timeout' || error.reason === 'unreachable' ? 'unreachable' : 'misconfigured',
    };
  }
  if (error instanceof AwsIdentityError) return { code: 'key_unavailable', reason: error.reason };
  const name = errorName(error);
  const code = errorCode(error);
  const status = httpStatus(error);
  const unavailable = (reason: KmsFailureReason) => ({ code: 'key_unavailable' as const, reason });
  switch (name) {
    case 'InvalidCiphertextException':
      return { code: 'key_invalid', reason: 'invalid_ciphertext' };
    case 'IncorrectKeyException':
      return { code: 'key_invalid', reason: 'wrong_key' };
    case 'DisabledException':
      return unavailable('disabled');
    case 'KMSInvalidStateException':
      return unavailable(
        /pending deletion/i.test(errorMessage(error)) ? 'pending_deletion' : 'invalid_state',
      );
    case 'AccessDeniedException':
      return unavailable('denied');
    case 'NotFoundException':
      return unavailable('not_found');
    case 'ThrottlingException':
    case 'LimitExceededException':
    case 'TooManyRequestsException':
    case 'RequestLimitExceeded':
      return unavailable('throttled');
    case 'TimeoutError':
    case 'AbortError':
    case 'KMSInternalException':
    case 'DependencyTimeoutException':
    case 'KeyUnavailableException':
      return unavailable('unreachable');
    default:
      break;
  }
  if (UNAUTHENTICATED_ERRORS.has(name)) return unavailable('unauthenticated');
  if ((code !== undefined && NETWORK_ERROR_CODES.has(code)) || (status !== undefined && status >= 500)) {
    return unavailable('unreachable');
  }
  if (status === 429) return unavailable('throttled');
  if (status !== undefined && status >= 400) return unavailable('misconfigured');
  // No HTTP status: the request never got an answer (socket errors the SDK wraps in other names).
  return unavailable('unreachable');
}

export class AwsKmsKeyBackend implements KeyBackend {
  readonly type: KeyBackendType = 'aws-kms';
  readonly keyId: string;
  /** scheme://host[:port] the calls go to, for messages (the SDK's regional default when none is given). */
  readonly endpoint: string;
  readonly #client: KMSClient;
  readonly #timeoutMs: number;

  constructor(options: AwsKmsKeyBackendOptions) {
    this.keyId = options.keyId;
    this.endpoint =
      (options.endpoint ? originOf(options.endpoint) : undefined) ??
      awsRegionalEndpoint('kms', options.region);
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (options.credentials === undefined) {
      // Defence in depth: without them the SDK would use Custos's own identity.
      throw new CommonException('internal_error', 'aws-kms key backend: credentials are required');
    }
    this.#client = new KMSClient({
      region: options.region,
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      credentials: options.credentials,
      maxAttempts: options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      requestHandler: new GuardedHttpHandler(options.http, this.#timeoutMs),
    });
  }

  async generateDataKey(ctx: DataKeyContext): Promise<GeneratedDataKey> {
    const encryptionContext = toEncryptionContext(ctx, 'internal_error');
    const output = await this.call((client, options) =>
      client.send(
        new GenerateDataKeyCommand({
          KeyId: this.keyId,
          KeySpec: 'AES_256',
          EncryptionContext: encryptionContext,
        }),
        options,
      ),
    );
    if (!output.Plaintext || !output.CiphertextBlob || !output.KeyId) {
      throw new CryptoException('key_unavailable', 'AWS KMS returned an incomplete data key', {
        backend: this.type,
        reason: 'unreachable',
      });
    }
    const plaintext = Buffer.from(output.Plaintext);
    output.Plaintext.fill(0);
    if (plaintext.length !== DATA_KEY_BYTES) {
      plaintext.fill(0);
      throw new CryptoException('key_unavailable', 'AWS KMS returned a data key of the wrong size', {
        backend: this.type,
        reason: 'misconfigured',
      });
    }
    return { plaintext, wrapped: Buffer.from(output.CiphertextBlob), keyRef: output.KeyId };
  }

  async unwrapDataKey(wrapped: Buffer, ctx: DataKeyContext): Promise<Buffer> {
    const encryptionContext = toEncryptionContext(ctx, 'key_invalid');
    if (!Buffer.isBuffer(wrapped) || wrapped.length === 0) throw keyInvalid('invalid_ciphertext');
    const output = await this.call((client, options) =>
      client.send(
        new DecryptCommand({
          CiphertextBlob: wrapped,
          KeyId: this.keyId,
          EncryptionContext: encryptionContext,
        }),
        options,
      ),
    );
    if (!output.Plaintext) throw keyInvalid('invalid_ciphertext');
    const plaintext = Buffer.from(output.Plaintext);
    output.Plaintext.fill(0);
    if (plaintext.length !== DATA_KEY_BYTES) {
      plaintext.fill(0);
      throw keyInvalid('invalid_ciphertext');
    }
    return plaintext;
  }

  /** Wraps an existing data key with Encrypt under the same encryption context (moving keys to this backend). */
  async wrapDataKey(plaintext: Buffer, ctx: DataKeyContext): Promise<WrappedDataKey> {
    if (!Buffer.isBuffer(plaintext) || plaintext.length !== DATA_KEY_BYTES) {
      throw new CommonException('internal_error', 'aws-kms key backend: a data key is 32 bytes');
    }
    const encryptionContext = toEncryptionContext(ctx, 'internal_error');
    const output = await this.call((client, options) =>
      client.send(
        new EncryptCommand({ KeyId: this.keyId, Plaintext: plaintext, EncryptionContext: encryptionContext }),
        options,
      ),
    );
    if (!output.CiphertextBlob || !output.KeyId) {
      throw new CryptoException('key_unavailable', 'AWS KMS returned an incomplete ciphertext', {
        backend: this.type,
        reason: 'unreachable',
      });
    }
    return { wrapped: Buffer.from(output.CiphertextBlob), keyRef: output.KeyId };
  }

  /**
   * Rewraps a data key under the configured key's current material with ReEncrypt: the plaintext never leaves
   * KMS. `sourceKeyId` (default: the configured key) names the key that wrapped it, so a tenant moving to a new
   * KMS key can rewrap blobs of the old one by passing the old keyRef; KMS refuses a blob of any other key.
   */
  async rewrapDataKey(
    wrapped: Buffer,
    ctx: DataKeyContext,
    sourceKeyId = this.keyId,
  ): Promise<WrappedDataKey> {
    const encryptionContext = toEncryptionContext(ctx, 'key_invalid');
    if (!Buffer.isBuffer(wrapped) || wrapped.length === 0) throw keyInvalid('invalid_ciphertext');
    const output = await this.call((client, options) =>
      client.send(
        new ReEncryptCommand({
          CiphertextBlob: wrapped,
          SourceKeyId: sourceKeyId,
          SourceEncryptionContext: encryptionContext,
          DestinationKeyId: this.keyId,
          DestinationEncryptionContext: encryptionContext,
        }),
        options,
      ),
    );
    if (!output.CiphertextBlob || !output.KeyId) throw keyInvalid('invalid_ciphertext');
    return { wrapped: Buffer.from(output.CiphertextBlob), keyRef: output.KeyId };
  }

  /** A real GenerateDataKey + Decrypt round trip under a probe context. */
  async check(): Promise<void> {
    const generated = await this.generateDataKey(PROBE_CONTEXT);
    const unwrapped = await this.unwrapDataKey(generated.wrapped, PROBE_CONTEXT);
    try {
      if (!crypto.timingSafeEqual(generated.plaintext, unwrapped)) {
        throw new CryptoException('key_unavailable', 'the AWS KMS key failed its round trip check', {
          backend: this.type,
          reason: 'misconfigured',
        });
      }
    } finally {
      generated.plaintext.fill(0);
      unwrapped.fill(0);
    }
  }

  /** The key's ARN and state, for showing a configuration; also needs kms:DescribeKey. */
  async describeKey(): Promise<{
    arn: string;
    keyId: string;
    state: KeyState | undefined;
    enabled: boolean;
  }> {
    const output = await this.call((client, options) =>
      client.send(new DescribeKeyCommand({ KeyId: this.keyId }), options),
    );
    const metadata = output.KeyMetadata;
    if (!metadata?.Arn || !metadata.KeyId) throw unavailable('not_found');
    return {
      arn: metadata.Arn,
      keyId: metadata.KeyId,
      state: metadata.KeyState,
      enabled: metadata.Enabled === true,
    };
  }

  /**
   * Rotates the key's material now (RotateKeyOnDemand; needs kms:RotateKeyOnDemand, limited by AWS to a few
   * rotations per key). Existing blobs keep unwrapping; rewrapDataKey moves them to the new material.
   */
  async rotateKey(): Promise<void> {
    await this.call((client, options) =>
      client.send(new RotateKeyOnDemandCommand({ KeyId: this.keyId }), options),
    );
  }

  /** Releases the SDK's sockets. */
  close(): void {
    this.#client.destroy();
  }

  toString(): string {
    return `[AwsKmsKeyBackend ${this.keyId}]`;
  }

  /** Sends one command under the deadline and turns any failure into a CustosException. */
  private async call<T>(
    send: (client: KMSClient, options: { abortSignal: AbortSignal }) => Promise<T>,
  ): Promise<T> {
    try {
      return await send(this.#client, { abortSignal: AbortSignal.timeout(this.#timeoutMs) });
    } catch (error) {
      const { code, reason } = classifyKmsError(error);
      // Transport and identity failures say which (redirect, refused address, STS); they name no secret.
      const message =
        error instanceof KeyBackendTransportError || error instanceof AwsIdentityError
          ? error.message
          : MESSAGES[reason];
      // Where it failed (KMS, or STS while assuming a role) and, below the protocol, how: for a message that
      // says what to check (key-backend-failure.ts). Origins only: no path, query or credentials.
      const where = failedAt(error);
      throw new CryptoException(code, message, {
        backend: this.type,
        reason,
        error: errorName(error),
        endpoint: where.endpoint ?? this.endpoint,
        ...(where.service ? { service: where.service } : {}),
        ...(where.connection ? { connection: where.connection } : {}),
      });
    }
  }
}

/** The endpoint and connection failure an error names, if any (STS's when assuming a role failed). */
function failedAt(error: unknown): {
  endpoint?: string;
  service?: 'sts';
  connection?: ConnectionFailure;
} {
  if (error instanceof KeyBackendTransportError) {
    return { ...(error.origin ? { endpoint: error.origin } : {}), connection: error.connection };
  }
  if (error instanceof AwsIdentityError) {
    return error.endpoint
      ? { endpoint: error.endpoint, service: 'sts', connection: error.connection }
      : { connection: error.connection };
  }
  const name = errorName(error);
  if (name === 'AbortError' || name === 'TimeoutError') return { connection: 'timeout' };
  const code = errorCode(error);
  if (code === 'ECONNREFUSED') return { connection: 'refused' };
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return { connection: 'dns' };
  return {};
}

function toEncryptionContext(
  ctx: DataKeyContext,
  onInvalid: 'internal_error' | 'key_invalid',
): Record<string, string> {
  if (typeof ctx !== 'object' || ctx === null) {
    const message = 'aws-kms key backend: context must be an object';
    throw onInvalid === 'key_invalid'
      ? new CryptoException(onInvalid, message)
      : new CommonException(onInvalid, message);
  }
  for (const name of ['tenantId', 'dataKeyId'] as const) {
    const problem = bindingStringProblem(ctx[name]);
    if (problem) {
      throw onInvalid === 'key_invalid'
        ? keyInvalid('invalid_ciphertext')
        : new CommonException('internal_error', `aws-kms key backend: context.${name} ${problem}`);
    }
  }
  return {
    'custos:purpose': 'data-key',
    'custos:tenant': ctx.tenantId,
    'custos:data-key': ctx.dataKeyId,
  };
}

function keyInvalid(reason: 'invalid_ciphertext' | 'wrong_key'): CustosException {
  return new CryptoException('key_invalid', MESSAGES[reason], { backend: 'aws-kms', reason });
}

function unavailable(reason: KmsFailureReason): CustosException {
  return new CryptoException('key_unavailable', MESSAGES[reason], { backend: 'aws-kms', reason });
}

function errorName(error: unknown): string {
  if (typeof error !== 'object' || error === null) return 'unknown';
  const name = (error as { name?: unknown }).name;
  return typeof name === 'string' ? name : 'unknown';
}

function errorMessage(error: unknown): string {
  const message =
    typeof error === 'object' && error !== null ? (error as { message?: unknown }).message : undefined;
  return typeof message === 'string' ? message : '';
}

/** The Node error code, also when the SDK wrapped the socket error as the cause. */
function errorCode(error: unknown): string | undefined {
  for (
    let current = error, depth = 0;
    depth < 4 && typeof current === 'object' && current !== null;
    depth++
  ) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

function httpStatus(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const status = (error as { $metadata?: { httpStatusCode?: unknown } }).$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}
