/**
 * The token endpoint's decision read, written once: for each request, the connector's state, the version of
 * the identity provider that issued the user token, and the user's live connection to the provider. Two
 * statements place it: DecisionBatcher's, over unnest() arrays for a batch of requests, and the private_key_jwt
 * request's own, which records the assertion as used in the same round trip. It sits in connections/, whose
 * table holds the credential it reads; broker/ runs it.
 */
import type { ConnectionStatus, ConnectionType } from './connection.types.js';
import { insertUsedAssertion } from '../identity/used-assertions.repository.js';

/** What the decision read returns for one request. */
export interface DecisionRow {
  connector_version: number | null;
  connector_enabled: boolean;
  idp_updated_at: Date | null;
  id: string | null;
  type: ConnectionType | null;
  status: ConnectionStatus | null;
  scopes: string[] | null;
  expires_at: Date | null;
  refresh_due_at: Date | null;
  secret: Buffer | null;
  has_refresh: boolean | null;
}

/** The columns of a DecisionRow, over `k` (the connector) and `c` (the connection, joined by liveConnection). */
const decisionColumns = (
  issuer: string,
) => `k.version AS connector_version, (k.disabled_at IS NULL) AS connector_enabled,
    (SELECT i.updated_at FROM identity_providers i WHERE i.tenant_id = k.tenant_id AND i.issuer = ${issuer})
      AS idp_updated_at,
    c.id, c.type, c.status, c.scopes, c.expires_at, c.refresh_due_at, c.secret, c.has_refresh`;

/**
 * The user's live connection to the provider, joined to the connector `k`. LATERAL keeps the lookup a per-row
 * probe of the live-connection index on all three columns, whatever the planner believes about the table.
 */
const liveConnection = (userId: string, provider: string) => `LEFT JOIN LATERAL (
    SELECT c.id, c.type, c.status, c.scopes, c.expires_at, c.refresh_due_at, c.secret, (c.refresh_token IS NOT NULL) AS has_refresh
      FROM connections c
     WHERE c.tenant_id = k.tenant_id AND c.user_id = ${userId} AND c.provider = ${provider} AND c.revoked_at IS NULL
     LIMIT 1) c ON true`;

/** $1 connector ids, $2 user ids, $3 providers, $4 issuers (arrays); `ord` is each request's position, from 1. */
export const BATCH_DECISION_SQL = `SELECT q.ord, ${decisionColumns('q.issuer')}
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS q(connector_id, user_id, provider, issuer, ord)
  JOIN connectors k ON k.id = q.connector_id
  ${liveConnection('q.user_id', 'q.provider')}`;

/**
 * $1 connector id, $2 user id, $3 provider, $4 issuer, $5 the assertion's jti hash, $6 its expiry: the decision
 * read of a private_key_jwt request, which also records its assertion as used (`assertion_fresh` is 0 on a
 * replay). No row when the connector does not exist.
 */
export const ASSERTION_DECISION_SQL = `WITH used AS (${insertUsedAssertion('$1', '$5', '$6')})
  SELECT ${decisionColumns('$4')}, (SELECT count(*) FROM used)::int AS assertion_fresh
  FROM connectors k
  ${liveConnection('$2', '$3')}
  WHERE k.id = $1`;
