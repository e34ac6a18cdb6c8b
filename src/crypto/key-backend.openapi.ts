/** What the key-backend API answers, for the OpenAPI document: response schemas and examples. */
import { z } from 'zod';
import { EXAMPLE } from '../common/openapi.js';

const isoTime = z.iso.datetime({ offset: true });

export const keyBackendViewSchema = z.looseObject({
  type: z.enum(['managed', 'aws-kms', 'vault-transit']),
  settings: z
    .record(z.string(), z.string())
    .describe(
      'The configuration without its credentials (key id, region, endpoint; address, mount, key name…).',
    ),
  status: z
    .enum(['active', 'migrating', 'migration_failed'])
    .describe('`migrating` while data keys are still wrapped by the previous backend.'),
  dataKeys: z.looseObject({ total: z.number().int(), onCurrentBackend: z.number().int() }),
  configuredAt: isoTime.nullable(),
  migration: z
    .looseObject({
      startedAt: isoTime.nullable(),
      attempts: z.number().int(),
      failingSince: isoTime.nullable(),
      lastAttemptAt: isoTime.nullable(),
      nextAttemptAt: isoTime.nullable(),
      lastError: z
        .looseObject({
          code: z.string(),
          reason: z.string(),
          side: z.enum(['source', 'target']),
          message: z.string(),
        })
        .nullable(),
    })
    .nullable()
    .describe('Present while data keys remain on another configuration.'),
  awsExternalId: z
    .string()
    .describe(
      'The external id Custos presents when it assumes this tenant’s AWS role: put it in the trust policy.',
    ),
});

export const rotationSchema = z.looseObject({
  epoch: z.number().int().describe('The new data-key epoch new secrets are sealed under.'),
  rewrapped: z.number().int().describe('Data keys rewrapped under the newest key version.'),
  keyVersion: z.number().int().optional().describe('Vault: the transit key’s new version.'),
});

export const flushSchema = z.looseObject({
  flushed: z.literal(true),
  replicasNotified: z.boolean().describe('Whether other Custos processes were told (through Redis).'),
});

export const keyBackendViewExample = {
  type: 'aws-kms',
  settings: {
    keyId: 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab',
    region: 'eu-west-1',
    identity: 'assume-role',
    roleArn: 'arn:aws:iam::111122223333:role/custos-kms',
    externalId: `custos:${EXAMPLE.tenantId}`,
  },
  status: 'active',
  dataKeys: { total: 3, onCurrentBackend: 3 },
  configuredAt: EXAMPLE.time,
  migration: null,
  awsExternalId: `custos:${EXAMPLE.tenantId}`,
};

export const managedViewExample = {
  type: 'managed',
  settings: {},
  status: 'active',
  dataKeys: { total: 1, onCurrentBackend: 1 },
  configuredAt: null,
  migration: null,
  awsExternalId: `custos:${EXAMPLE.tenantId}`,
};

export const migratingViewExample = {
  ...keyBackendViewExample,
  status: 'migration_failed',
  dataKeys: { total: 3, onCurrentBackend: 1 },
  migration: {
    startedAt: EXAMPLE.time,
    attempts: 2,
    failingSince: EXAMPLE.time,
    lastAttemptAt: '2026-12-03T10:16:30.000Z',
    nextAttemptAt: '2026-12-03T10:17:30.000Z',
    lastError: {
      code: 'key_unavailable',
      reason: 'unreachable',
      side: 'target',
      message: 'AWS KMS could not be reached',
    },
  },
};
