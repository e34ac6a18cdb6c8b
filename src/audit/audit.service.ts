/**
 * Append-only audit events. A state change and its event commit in one transaction: callers pass the
 * transaction's EntityManager. Events carry ids, names and outcomes, never a secret value.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import { requestContext } from '../common/logger.js';
import { CommonException, CustosException } from '../common/errors.js';
import type { ActorType, AuditOutcome } from './audit-event.entity.js';
import { AuditRepository, type AuditRowValues } from './audit.repository.js';

export interface Actor {
  type: ActorType;
  id: string | null;
}

export const systemActor: Actor = { type: 'system', id: null };

export interface AuditRecord {
  tenantId: string | null;
  action: string;
  outcome: AuditOutcome;
  actor: Actor;
  subjectUserId?: string | null;
  connectionId?: string | null;
  provider?: string | null;
  details?: Record<string, unknown>;
}

export interface AuditEventView {
  id: string;
  occurredAt: string;
  action: string;
  outcome: AuditOutcome;
  actor: Actor;
  subject: { userId: string | null };
  connectionId: string | null;
  provider: string | null;
  requestId: string | null;
  details: Record<string, unknown>;
}

export interface AuditQuery {
  limit: number;
  cursor?: string;
  action?: string;
  userId?: string;
}

/**
 * An event as the values of the audit_events columns, in the order every INSERT of AuditRepository lists them
 * (tenant_id, action, outcome, actor_type, actor_id, subject_user_id, connection_id, provider, request_id,
 * details), with the current request's id.
 */
export function auditRow(event: AuditRecord): AuditRowValues {
  return [
    event.tenantId,
    event.action,
    event.outcome,
    event.actor.type,
    event.actor.id,
    event.subjectUserId ?? null,
    event.connectionId ?? null,
    event.provider ?? null,
    requestContext.getStore()?.requestId ?? null,
    JSON.stringify(event.details ?? {}),
  ];
}

/** The audit trail could not be written: the answer is 503, and the database's reason stays in the log. */
export function auditUnwritableError(err: unknown): CustosException {
  const e = new CommonException('temporarily_unavailable', 'The audit trail cannot be written; retry later');
  e.cause = err;
  return e;
}

export function auditUnwritable(err: unknown): never {
  throw auditUnwritableError(err);
}

export function encodeCursor(id: string): string {
  return Buffer.from(`a:${id}`).toString('base64url');
}

export function decodeCursor(cursor: string): string {
  const raw = Buffer.from(cursor, 'base64url').toString('utf8');
  const m = /^a:(\d{1,19})$/.exec(raw);
  if (!m) throw new CommonException('validation_failed', 'Malformed cursor');
  return m[1];
}

@Injectable()
export class AuditService {
  constructor(@Inject(AuditRepository) private readonly rows: AuditRepository) {}

  /**
   * Writes an event inside the caller's transaction (or on its own when no manager is given). When the event
   * cannot be written, whatever the database said, the caller's write fails closed with 503: the trail being
   * unwritable is never the client's fault (nor a 500).
   */
  async record(event: AuditRecord, manager?: EntityManager): Promise<void> {
    await this.rows.insert(auditRow(event), manager).catch(auditUnwritable);
  }

  /**
   * Runs `update` (an UPDATE … RETURNING that writes at most one row) and records `event` in the same
   * statement, only when the update wrote its row: one round trip, atomic without a transaction. Used where
   * the time between learning something and committing it must be as short as possible (a token refresh).
   * Returns whether the row was written.
   */
  async recordWithUpdate(update: string, params: unknown[], event: AuditRecord): Promise<boolean> {
    return this.rows.insertWithUpdate(update, params, auditRow(event)).catch(auditUnwritable);
  }

  /**
   * When each of the tenant's connections in `connectionIds` last had its credential released, and to which
   * connector (its id), from the trail; a connection never released has no entry.
   */
  async lastReleases(
    tenantId: string,
    connectionIds: string[],
  ): Promise<Map<string, { at: Date; connectorId: string | null }>> {
    if (connectionIds.length === 0) return new Map();
    const rows = await this.rows.lastReleases(tenantId, connectionIds);
    return new Map(rows.map((r) => [r.connection_id, { at: r.occurred_at, connectorId: r.actor_id }]));
  }

  /** A page of the tenant's events (null: the platform's, events with no tenant), newest first. */
  async list(
    tenantId: string | null,
    q: AuditQuery,
  ): Promise<{ items: AuditEventView[]; nextCursor: string | null }> {
    const rows = await this.rows.page(
      tenantId,
      { beforeId: q.cursor ? decodeCursor(q.cursor) : undefined, action: q.action, userId: q.userId },
      q.limit + 1,
    );
    const page = rows.slice(0, q.limit);
    return {
      items: page.map((r) => ({
        id: String(r.id),
        occurredAt: r.occurred_at.toISOString(),
        action: r.action,
        outcome: r.outcome,
        actor: { type: r.actor_type, id: r.actor_id },
        subject: { userId: r.subject_user_id },
        connectionId: r.connection_id,
        provider: r.provider,
        requestId: r.request_id,
        details: r.details,
      })),
      nextCursor: rows.length > q.limit ? encodeCursor(String(page[page.length - 1].id)) : null,
    };
  }
}
