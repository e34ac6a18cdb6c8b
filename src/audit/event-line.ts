/** An audit_events row as its line in the sealed format (docs/audit-format.md). */
import { chainOf, type EventLine } from './audit-format.js';
import type { SealRow } from './audit.repository.js';

/** An event row as its line in the chain (without the head). */
export function eventLine(row: SealRow, pos: number): EventLine {
  return {
    kind: 'event',
    chain: chainOf(row.tenant_id),
    pos,
    id: row.id,
    occurredAt: row.occurred_at,
    action: row.action,
    outcome: row.outcome,
    actor: { type: row.actor_type, id: row.actor_id },
    subjectUserId: row.subject_user_id,
    connectionId: row.connection_id,
    provider: row.provider,
    requestId: row.request_id,
    details: row.details,
  };
}
