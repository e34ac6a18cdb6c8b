/** What the audit API answers, for the OpenAPI document: response schemas and examples. */
import { z } from 'zod';
import { EXAMPLE } from '../common/openapi.js';

const isoTime = z.iso.datetime({ offset: true });

export const auditEventViewSchema = z.looseObject({
  id: z.string().describe('Increasing with commit order within the trail.'),
  occurredAt: isoTime,
  action: z.string().describe('What happened, e.g. `connection.created`, `token.exchange`, `access.denied`.'),
  outcome: z.enum(['allowed', 'denied', 'failed']),
  actor: z.looseObject({
    type: z.enum(['admin_key', 'connector', 'user', 'system']),
    id: z.string().nullable(),
  }),
  subject: z.looseObject({ userId: z.string().nullable() }),
  connectionId: z.string().nullable(),
  provider: z.string().nullable(),
  requestId: z.string().nullable(),
  details: z.record(z.string(), z.unknown()).describe('Per action; never a secret.'),
});

export const auditEventPageSchema = z.looseObject({
  items: z.array(auditEventViewSchema).describe('Newest first.'),
  nextCursor: z.string().nullable().describe('Pass as `cursor` for the next (older) page; null on the last.'),
});

export const auditJwksSchema = z.looseObject({
  keys: z.array(
    z.looseObject({
      kty: z.literal('OKP'),
      crv: z.literal('Ed25519'),
      x: z.string(),
      kid: z.string(),
      alg: z.literal('EdDSA'),
      use: z.literal('sig'),
      validFrom: isoTime.describe('Checkpoints sealed from then on are signed with this key…'),
      validUntil: isoTime.optional().describe('…until it was replaced.'),
    }),
  ),
});

export const auditEventExample = {
  id: '5017',
  occurredAt: EXAMPLE.time,
  action: 'token.exchange',
  outcome: 'allowed',
  actor: { type: 'connector', id: EXAMPLE.connectorId },
  subject: { userId: EXAMPLE.userId },
  connectionId: EXAMPLE.connectionId,
  provider: EXAMPLE.provider,
  requestId: EXAMPLE.requestId,
  details: { grantType: 'token-exchange', requestedScopes: ['repo'], refreshed: false, expiresIn: 3600 },
};

export const platformEventExample = {
  id: '812',
  occurredAt: EXAMPLE.time,
  action: 'access.denied',
  outcome: 'denied',
  actor: { type: 'admin_key', id: null },
  subject: { userId: null },
  connectionId: null,
  provider: null,
  requestId: EXAMPLE.requestId,
  details: { reason: 'invalid_key', route: 'GET /v1/tenants/:tenantId', sourceAddress: '203.0.113.7' },
};

export const auditJwksExample = {
  keys: [
    {
      kty: 'OKP',
      crv: 'Ed25519',
      x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo',
      kid: '9b2e4c7a-1f3d-4e8b-a6c5-0d9f8e7b6a51',
      alg: 'EdDSA',
      use: 'sig',
      validFrom: EXAMPLE.time,
    },
  ],
};

/** An export: a header line, then the events of each checkpoint followed by the checkpoint (docs/audit-format.md). */
export const auditExportExample = [
  {
    kind: 'export',
    format: 'custos-audit/1',
    chain: `tenant:${EXAMPLE.tenantId}`,
    from: null,
    to: null,
    exportedAt: '2026-12-03T11:00:00.000Z',
  },
  {
    kind: 'event',
    chain: `tenant:${EXAMPLE.tenantId}`,
    pos: 1,
    id: '5017',
    occurredAt: '2026-12-03T10:15:30.123456Z',
    action: 'token.exchange',
    outcome: 'allowed',
    actor: { type: 'connector', id: EXAMPLE.connectorId },
    subjectUserId: EXAMPLE.userId,
    connectionId: EXAMPLE.connectionId,
    provider: EXAMPLE.provider,
    requestId: EXAMPLE.requestId,
    details: { grantType: 'token-exchange', requestedScopes: ['repo'], refreshed: false, expiresIn: 3600 },
    head: '40e635b5ed7a7d70570db2126aebb7cee3afcbb1f526247a995c8c698ce2c146',
  },
  {
    kind: 'checkpoint',
    format: 'custos-audit/1',
    chain: `tenant:${EXAMPLE.tenantId}`,
    seq: 1,
    firstPos: 1,
    lastPos: 1,
    count: 1,
    firstEventId: '5017',
    lastEventId: '5017',
    prevHead: '54c3875b703edafbb3e13f4a63e75ab60da5c01827d1390467e621050bb2f393',
    head: '40e635b5ed7a7d70570db2126aebb7cee3afcbb1f526247a995c8c698ce2c146',
    sealedAt: '2026-12-03T10:16:00.000Z',
    kid: '9b2e4c7a-1f3d-4e8b-a6c5-0d9f8e7b6a51',
    sig: 'ZYWrfbuixW8nH5lqqaZ3pakTjiNhIt-4bfSfQ-2epOnqroAWJiwSCbTXDLb_MrJZhvOcYV_VN1RIUoyGzTsiBQ',
  },
]
  .map((line) => JSON.stringify(line))
  .join('\n')
  .concat('\n');
