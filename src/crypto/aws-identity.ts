/**
 * Whose AWS identity signs a tenant's KMS calls. Three answers, each explicit (the SDK is never left to fall back
 * to its default chain, which ends at the instance-metadata service):
 *
 * - `static`: the tenant's own access key, sealed with the configuration.
 * - `assume-role`: a role in the tenant's account that Custos assumes with STS AssumeRole, signing that one call
 *   with its own identity, at the operator's STS endpoint. The external id is Custos's choice, bound to the tenant
 *   (`custos:<tenant id>`): a tenant that names another tenant's role cannot make Custos present that tenant's id,
 *   which is what the external id is for (the confused-deputy problem).
 * - `ambient`: Custos's own identity, only for key ARNs the operator allow-listed.
 *
 * Custos's identity (directly or through a role) only ever goes to AWS's endpoints or the operator's: never to an
 * endpoint a tenant chose (refused at configure time and again when a configuration is loaded).
 */
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { CustosException } from '../common/errors.js';
import type { OutboundHttpClient } from '../common/outbound-http.js';
import {
  GuardedHttpHandler,
  KeyBackendTransportError,
  originOf,
  type ConnectionFailure,
} from './guarded-http-handler.js';
import { CryptoException } from './crypto.errors.js';

export type AwsIdentityKind = 'static' | 'assume-role' | 'ambient';

/**
 * Why an identity could not be had; the KMS adapter maps it like its own failures. `no_identity`: Custos itself has
 * no AWS identity (the SDK's default chain found none), so it cannot assume a role or sign for an allow-listed key.
 */
export type AwsIdentityFailureReason =
  'denied' | 'unauthenticated' | 'unreachable' | 'misconfigured' | 'no_identity';

export class AwsIdentityError extends Error {
  override readonly name = 'AwsIdentityError';
  constructor(
    readonly reason: AwsIdentityFailureReason,
    message: string,
    /** Where it failed: STS's scheme://host[:port] (nothing for a missing identity of Custos's own). */
    readonly endpoint?: string,
    readonly connection?: ConnectionFailure,
  ) {
    super(message);
  }
}

/** The external id Custos presents when it assumes a tenant's role: the tenant's to put in its trust policy. */
export function awsExternalIdFor(tenantId: string): string {
  return `custos:${tenantId}`;
}

/** What the operator configured for identities other than the tenant's own. */
export interface AwsOperatorSettings {
  ambientKeyArns: readonly string[];
  /** KMS endpoint for configurations that name none (`{region}` is replaced). */
  kmsEndpoint?: string;
  /** STS endpoint for role assumption (`{region}` is replaced). */
  stsEndpoint?: string;
  /** Region STS calls are signed for; default the key's region. */
  stsRegion?: string;
}

export interface AwsIdentityRefusal {
  reason: 'operator_identity_with_endpoint' | 'ambient_identity_not_allowed';
  message: string;
}

/**
 * The rules, for configure time and load time alike: an identity that is not the tenant's own never goes to an
 * endpoint the tenant chose, and Custos's own identity only serves allow-listed key ARNs.
 */
export function awsIdentityRefusal(
  identity: AwsIdentityKind,
  settings: { keyId: string; endpoint?: string },
  operator: Pick<AwsOperatorSettings, 'ambientKeyArns'>,
): AwsIdentityRefusal | null {
  if (identity === 'static') return null;
  if (settings.endpoint !== undefined) {
    return {
      reason: 'operator_identity_with_endpoint',
      message:
        'An endpoint of your choosing needs credentials of your own: Custos never signs for it with its own identity or an assumed role',
    };
  }
  if (identity === 'ambient' && !operator.ambientKeyArns.includes(settings.keyId)) {
    return {
      reason: 'ambient_identity_not_allowed',
      message:
        'Give credentials or a role to assume: this key is not one the operator allows Custos to use with its own AWS identity',
    };
  }
  return null;
}

export function endpointFor(template: string | undefined, region: string): string | undefined {
  return template?.replaceAll('{region}', region);
}

/** Custos's own identity: the SDK's default chain (environment, files, web identity, container or instance). */
export async function operatorIdentity(): Promise<AwsCredentialIdentityProvider> {
  const { defaultProvider } = await import('@aws-sdk/credential-provider-node');
  const chain = defaultProvider();
  return async () => {
    try {
      return await chain();
    } catch {
      // The chain's errors describe the host's files and environment: not for a tenant's eyes.
      throw new AwsIdentityError('no_identity', 'Custos has no AWS identity of its own to use');
    }
  };
}

export interface AssumeRoleOptions {
  roleArn: string;
  externalId: string;
  /** The tenant, for the role session name (seen in the tenant's CloudTrail). */
  tenantId: string;
  region: string;
  operator: AwsOperatorSettings;
  operatorIdentity: AwsCredentialIdentityProvider;
  http: OutboundHttpClient;
  timeoutMs: number;
}

const STS_DENIED = new Set(['AccessDenied', 'AccessDeniedException']);
const STS_UNAUTHENTICATED = new Set([
  'ExpiredToken',
  'ExpiredTokenException',
  'InvalidClientTokenId',
  'SignatureDoesNotMatch',
  'IncompleteSignature',
  'MissingAuthenticationToken',
]);
const STS_MISCONFIGURED = new Set([
  'RegionDisabled',
  'RegionDisabledException',
  'ValidationError',
  'MalformedPolicyDocument',
  'MalformedPolicyDocumentException',
  'PackedPolicyTooLarge',
]);

function classifyStsError(error: unknown, endpoint: string): AwsIdentityError {
  if (error instanceof AwsIdentityError) return error;
  if (error instanceof KeyBackendTransportError) {
    return new AwsIdentityError(
      error.reason === 'timeout' || error.reason === 'unreachable' ? 'unreachable' : 'misconfigured',
      `AWS STS: ${error.message}`,
      error.origin ?? endpoint,
      error.connection,
    );
  }
  const name = typeof error === 'object' && error !== null ? (error as { name?: unknown }).name : undefined;
  const status = (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
  if (typeof name === 'string' && STS_DENIED.has(name)) {
    return new AwsIdentityError('denied', 'AWS STS refused to let Custos assume the role', endpoint);
  }
  if (typeof name === 'string' && STS_UNAUTHENTICATED.has(name)) {
    return new AwsIdentityError('unauthenticated', 'AWS STS did not accept Custos’s own identity', endpoint);
  }
  if (typeof name === 'string' && STS_MISCONFIGURED.has(name)) {
    return new AwsIdentityError('misconfigured', 'AWS STS rejected the role assumption', endpoint);
  }
  if (status !== undefined && status >= 400 && status < 500 && status !== 429) {
    return new AwsIdentityError('misconfigured', 'AWS STS rejected the role assumption', endpoint);
  }
  const timedOut = name === 'AbortError' || name === 'TimeoutError';
  return new AwsIdentityError(
    'unreachable',
    'AWS STS could not be reached',
    endpoint,
    timedOut ? 'timeout' : undefined,
  );
}

/** AWS's own endpoint of a service in a region (the SDK's default when none is configured). */
export function awsRegionalEndpoint(service: 'kms' | 'sts', region: string): string {
  return `https://${service}.${region}.amazonaws.com${region.startsWith('cn-') ? '.cn' : ''}`;
}

/**
 * Temporary credentials of the tenant's role, from AssumeRole signed with Custos's own identity. The SDK caches
 * them and asks again shortly before they expire.
 */
export async function assumeRoleIdentity(opts: AssumeRoleOptions): Promise<AwsCredentialIdentityProvider> {
  const { STSClient, AssumeRoleCommand } = await import('@aws-sdk/client-sts');
  const region = opts.operator.stsRegion ?? opts.region;
  const endpoint = endpointFor(opts.operator.stsEndpoint, region);
  const where = (endpoint ? originOf(endpoint) : undefined) ?? awsRegionalEndpoint('sts', region);
  const client = new STSClient({
    region,
    ...(endpoint ? { endpoint } : {}),
    credentials: opts.operatorIdentity,
    maxAttempts: 2,
    requestHandler: new GuardedHttpHandler(opts.http, opts.timeoutMs),
  });
  return async (): Promise<AwsCredentialIdentity> => {
    try {
      const output = await client.send(
        new AssumeRoleCommand({
          RoleArn: opts.roleArn,
          RoleSessionName: `custos-${opts.tenantId}`.slice(0, 64),
          ExternalId: opts.externalId,
        }),
        { abortSignal: AbortSignal.timeout(opts.timeoutMs) },
      );
      const c = output.Credentials;
      if (!c?.AccessKeyId || !c.SecretAccessKey || !c.SessionToken) {
        throw new AwsIdentityError('unreachable', 'AWS STS returned incomplete credentials', where);
      }
      return {
        accessKeyId: c.AccessKeyId,
        secretAccessKey: c.SecretAccessKey,
        sessionToken: c.SessionToken,
        ...(c.Expiration ? { expiration: c.Expiration } : {}),
      };
    } catch (error) {
      throw classifyStsError(error, where);
    }
  };
}

/** A loaded configuration that breaks the rules (saved before they existed, or the allow-list changed since). */
export function refusedOnLoad(refusal: AwsIdentityRefusal): CustosException {
  return new CryptoException('key_unavailable', refusal.message, {
    backend: 'aws-kms',
    reason: 'misconfigured',
    refusal: refusal.reason,
  });
}
