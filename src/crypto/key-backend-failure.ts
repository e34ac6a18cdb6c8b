/**
 * What a BYOK key backend's failure means to whoever configured it: one stable code per cause — unreachable,
 * denied, not found, or a configuration that cannot work — and a message that names where it failed and what to
 * do about it. Used when a configuration is verified (the 400 answers of PUT .../key-backend) and by
 * `custos doctor`. Messages carry the tenant's own settings (key id, region, role, address; never a credential)
 * and endpoints as scheme://host[:port] only.
 */
import { CustosException } from '../common/errors.js';
import { awsRegionalEndpoint } from './aws-identity.js';
import { originOf } from './guarded-http-handler.js';
import type { ExternalType, KeyBackendSettings } from './key-backend.js';

export type KeyBackendFailureCode =
  'key_backend_unreachable' | 'key_backend_denied' | 'key_backend_not_found' | 'key_backend_invalid';

export interface KeyBackendDiagnosis {
  code: KeyBackendFailureCode;
  /** The adapter's reason (`unreachable`, `denied`, `disabled`, `not_found`, …): finer than the code. */
  reason: string;
  /** One or two sentences: what failed, where, and what to check. */
  message: string;
  /** scheme://host[:port] of the service that failed, when known. */
  endpoint?: string;
  /** Below the protocol: `dns`, `refused`, `reset`, `no_route` or `timeout`, when that is what failed. */
  connection?: string;
}

/** The code of each adapter reason; any other reason is a configuration that cannot work. */
const CODES: Record<string, KeyBackendFailureCode> = {
  unreachable: 'key_backend_unreachable',
  throttled: 'key_backend_unreachable',
  denied: 'key_backend_denied',
  unauthenticated: 'key_backend_denied',
  disabled: 'key_backend_denied',
  pending_deletion: 'key_backend_denied',
  not_found: 'key_backend_not_found',
};

const CONNECTION: Record<string, string> = {
  dns: 'its host name does not resolve',
  refused: 'the connection was refused (nothing listens there)',
  reset: 'the connection was reset before an answer',
  no_route: 'there is no network route to it',
  timeout: 'no answer within the deadline (CUSTOS_KEY_BACKEND_TIMEOUT_MS)',
};

/** A tenant's value in a message: printable already (validated on input), and bounded. */
function shown(value: string | undefined, fallback: string): string {
  if (value === undefined || value === '') return fallback;
  return value.length > 200 ? `${value.slice(0, 200)}…` : value;
}

function defaultEndpoint(type: ExternalType, s: KeyBackendSettings): string {
  if (type === 'vault-transit') return (s.address ? originOf(s.address) : undefined) ?? 'Vault';
  return (
    (s.endpoint ? originOf(s.endpoint) : undefined) ?? awsRegionalEndpoint('kms', s.region ?? 'us-east-1')
  );
}

function stringDetail(err: unknown, name: string): string | undefined {
  if (!(err instanceof CustosException)) return undefined;
  const value = err.details?.[name];
  return typeof value === 'string' ? value : undefined;
}

/**
 * The code and message for a key backend's failure. `reason` is the adapter's classification (from the error's
 * details, or from classifyKmsError / classifyVaultError for an error the adapter did not wrap); `settings` are
 * the configuration's displayable settings (splitConfig), so the message can name the key, region or role.
 */
export function diagnoseKeyBackendFailure(
  type: ExternalType,
  reason: string,
  err: unknown,
  settings: KeyBackendSettings = {},
): KeyBackendDiagnosis {
  const code = CODES[reason] ?? 'key_backend_invalid';
  const sts = stringDetail(err, 'service') === 'sts';
  const endpoint = stringDetail(err, 'endpoint') ?? defaultEndpoint(type, settings);
  const connection = stringDetail(err, 'connection');
  const status = err instanceof CustosException ? err.details?.status : undefined;
  const service = type === 'vault-transit' ? 'Vault' : sts ? 'AWS STS' : 'AWS KMS';
  const keyId = shown(settings.keyId, 'the configured key');
  const vaultKey = `${shown(settings.mount, 'transit')}/keys/${shown(settings.keyName, '<keyName>')}`;
  const roleArn = shown(settings.roleArn, 'the configured role');
  const result = (message: string): KeyBackendDiagnosis => ({
    code,
    reason,
    message,
    endpoint,
    ...(connection ? { connection } : {}),
  });

  switch (reason) {
    case 'unreachable': {
      const how =
        (connection && CONNECTION[connection]) ??
        (typeof status === 'number' && status >= 500
          ? `it answered HTTP ${status}${status === 503 && type === 'vault-transit' ? ' (sealed or on standby?)' : ''}`
          : 'no usable answer');
      const what = type === 'vault-transit' ? 'address' : sts ? 'STS endpoint' : 'KMS endpoint';
      const check =
        type === 'vault-transit'
          ? 'Check `address`'
          : sts
            ? 'Check CUSTOS_AWS_STS_ENDPOINT (or the network path to AWS STS)'
            : settings.endpoint
              ? 'Check `endpoint`'
              : 'Check `region` (the endpoint is AWS’s own for it) and the network path to AWS';
      return result(
        `Cannot reach the ${what} ${endpoint}: ${how}. ${check}, and that this Custos can reach it ` +
          '(firewall, proxy; a loopback or private address must be listed in CUSTOS_OUTBOUND_ALLOW_HOSTS).',
      );
    }
    case 'throttled':
      return result(`${service} at ${endpoint} is throttling requests: try again in a moment.`);
    case 'denied':
      if (type === 'vault-transit') {
        const mount = shown(settings.mount, 'transit');
        const key = shown(settings.keyName, '<keyName>');
        const token = settings.auth === 'approle' ? "the AppRole's token" : '`token`';
        // Vault answers an unknown token and a missing policy alike (403 permission denied).
        return result(
          `Vault at ${endpoint} denied access to the transit key ${vaultKey} (permission denied): check that ` +
            `${token} is valid (not expired or revoked) and that its policy allows "update" on ` +
            `${mount}/encrypt/${key} and ${mount}/decrypt/${key}.`,
        );
      }
      if (sts) {
        return result(
          `AWS STS at ${endpoint} refused to let Custos assume the role ${roleArn} (AccessDenied): the role's ` +
            `trust policy must allow Custos's AWS identity with the condition sts:ExternalId = "${shown(settings.externalId, 'custos:<tenant id>')}".`,
        );
      }
      return result(
        `AWS KMS at ${endpoint} denied access to the key ${keyId} (AccessDenied): the key policy or IAM policy ` +
          'must allow kms:GenerateDataKey, kms:Encrypt, kms:Decrypt and kms:ReEncrypt* for the credentials Custos uses.',
      );
    case 'unauthenticated':
      if (type === 'vault-transit') {
        const which = settings.auth === 'approle' ? 'AppRole role id and secret id' : 'token';
        return result(
          `Vault at ${endpoint} did not accept the ${which} (unknown, expired or revoked): check ` +
            `\`${settings.auth === 'approle' ? 'appRole' : 'token'}\`.`,
        );
      }
      if (sts) {
        return result(
          `AWS STS at ${endpoint} did not accept Custos's own AWS identity (invalid or expired), so it cannot ` +
            `assume ${roleArn}: the operator must renew the identity Custos runs with.`,
        );
      }
      return result(
        `AWS KMS at ${endpoint} did not accept the credentials (an unknown access key id, a wrong secret ` +
          'access key or an expired session token): check `credentials`.',
      );
    case 'disabled':
      return result(`The AWS KMS key ${keyId} is disabled: enable it (kms:EnableKey) and try again.`);
    case 'pending_deletion':
      return result(
        `The AWS KMS key ${keyId} is pending deletion: cancel the deletion (kms:CancelKeyDeletion) and enable ` +
          'it, or choose another key.',
      );
    case 'not_found':
      if (type === 'vault-transit') {
        return result(
          `Vault at ${endpoint} has no transit key "${shown(settings.keyName, '<keyName>')}" at mount ` +
            `"${shown(settings.mount, 'transit')}"${settings.namespace ? ` in namespace "${shown(settings.namespace, '')}"` : ''}: ` +
            `create it (vault write -f ${vaultKey}) or correct \`keyName\` and \`mount\`.`,
        );
      }
      return result(
        `AWS KMS at ${endpoint} has no key ${keyId} in region ${shown(settings.region, '(unknown)')}: check ` +
          '`keyId` (a key id, key ARN, alias name such as alias/custos, or alias ARN) and `region`.',
      );
    case 'no_identity':
      return result(
        `Custos has no AWS identity of its own, so it cannot ${settings.identity === 'assume-role' ? `assume the role ${roleArn}` : 'sign for this key'}: ` +
          "give the tenant's own `credentials` instead, or have the operator give Custos an AWS identity " +
          '(environment, profile, web identity, or an instance or task role).',
      );
    default: {
      const detail =
        err instanceof CustosException ? err.message.replace(/\.$/, '') : `${service} rejected the request`;
      return result(`The key backend rejected this configuration (${reason}): ${detail}.`);
    }
  }
}
