/** The key-backend configuration a tenant sends: managed, its AWS KMS key, or its Vault Transit key. */
import { z } from 'zod';
import { text } from '../common/validation.js';

const httpUrl = text({ max: 2048 }).refine((raw) => {
  try {
    const u = new URL(raw);
    return (u.protocol === 'https:' || u.protocol === 'http:') && !u.username && !u.password;
  } catch {
    return false;
  }
}, 'must be an absolute http(s) URL without credentials');

const vaultPath = text({ max: 128 }).regex(
  /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/,
  'must be a Vault path segment',
);

const secretString = (max: number) =>
  text({ max }).regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces');

export const keyBackendInputSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('managed') }),
  z
    .strictObject({
      type: z.literal('aws-kms'),
      keyId: text({ max: 2048 }).regex(/^[\x21-\x7e]+$/, 'must be a key id, key ARN, alias or alias ARN'),
      region: text({ max: 32 }).regex(
        /^[a-z]{2}(-[a-z]+)+-\d{1,2}$/,
        'must be an AWS region such as eu-west-1',
      ),
      /** Only with `credentials`: Custos's identity, or a role it assumes, never goes to a tenant's endpoint. */
      endpoint: httpUrl.optional(),
      credentials: z
        .strictObject({
          accessKeyId: text({ max: 128 }).regex(/^[A-Z0-9]{16,128}$/, 'must be an AWS access key id'),
          secretAccessKey: secretString(256),
          sessionToken: secretString(4096).optional(),
        })
        .optional(),
      /** A role in the tenant's account that Custos assumes; the external id is Custos's (see GET). */
      assumeRole: z
        .strictObject({
          roleArn: text({ max: 2048 }).regex(
            /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/,
            'must be an IAM role ARN',
          ),
        })
        .optional(),
    })
    .refine((v) => v.credentials === undefined || v.assumeRole === undefined, {
      message: 'give credentials or assumeRole, not both',
    }),
  z
    .strictObject({
      type: z.literal('vault-transit'),
      address: httpUrl,
      mount: vaultPath.default('transit'),
      keyName: vaultPath,
      token: secretString(1024).optional(),
      appRole: z
        .strictObject({
          roleId: secretString(256),
          secretId: secretString(256),
          mount: vaultPath.optional(),
        })
        .optional(),
      namespace: vaultPath.optional(),
    })
    .refine((v) => (v.token === undefined) !== (v.appRole === undefined), {
      message: 'exactly one of token or appRole is required',
    }),
]);
export type KeyBackendInput = z.output<typeof keyBackendInputSchema>;
