/**
 * The audit page's data: a page of events under the console's filters with the names of their actors, the
 * seal status of the tenant's chain, the releases-and-denials charts, and verification of the sealed trail
 * (the export the API serves, checked as `custos audit verify` checks it offline, audited as `audit.verified`).
 */
import { Inject, Injectable } from '@nestjs/common';
import { AuditExport } from '../audit/audit-export.js';
import { chainOf, describeSummary, verifyExport } from '../audit/audit-format.js';
import { AuditSigningKeys } from '../audit/audit-signing-keys.js';
import { AuditService, type Actor, type AuditEventView } from '../audit/audit.service.js';
import { CommonException } from '../common/errors.js';
import { AdminKeysService } from '../identity/admin-keys.service.js';
import { ConnectorsService } from '../identity/connectors.service.js';
import { TenantProvidersService } from '../providers/tenant-providers.service.js';
import { breakdownChart, bucketFor, fillBuckets, timeChart } from './console-charts.js';
import { ConsoleReadsRepository, type SealStatus } from './console-reads.repository.js';
import { parseUtc, type AuditQuery } from './console.dto.js';
import { html, type Html } from './html.js';

const DAY_MS = 86_400_000;
export const AUDIT_PAGE_SIZE = 50;
/** The charts' range when the filter names none. */
const DEFAULT_CHART_DAYS = 14;
/** What "Verify" checks when the filter names no range. */
const DEFAULT_VERIFY_DAYS = 30;
const MAX_RANGE_DAYS = 366;
const BREAKDOWN_ROWS = 10;

export interface AuditRange {
  from?: Date;
  to?: Date;
}

/** The filter's range, checked: from before to, at most a year apart. */
export function rangeOf(from: string | undefined, to: string | undefined): AuditRange {
  const range = {
    from: from ? (parseUtc(from) ?? undefined) : undefined,
    to: to ? (parseUtc(to) ?? undefined) : undefined,
  };
  if (range.from && range.to) {
    if (range.from >= range.to)
      throw new CommonException('validation_failed', '"From" must be before "until"');
    if (range.to.getTime() - range.from.getTime() > MAX_RANGE_DAYS * DAY_MS) {
      throw new CommonException('validation_failed', 'A range can be at most a year long');
    }
  }
  return range;
}

export interface AuditPageData {
  events: AuditEventView[];
  nextBefore: string | null;
  actorName: (actor: Actor) => string;
  connectors: { id: string; name: string }[];
  providers: { key: string; name: string }[];
  seal: SealStatus;
  charts: Html;
  chartRange: string;
}

export interface VerifyOutcome {
  ok: boolean;
  text: string;
  range: string;
}

/** The export's chunks (each holds whole lines) as single lines, read as they are consumed. */
async function* linesOf(chunks: AsyncIterable<string>): AsyncGenerator<string> {
  for await (const chunk of chunks) {
    for (const line of chunk.split('\n')) if (line !== '') yield line;
  }
}

const day = (d: Date) => d.toISOString().slice(0, 10);
const describeRange = (from: Date, to: Date | null) =>
  `${day(from)} to ${to ? day(new Date(to.getTime() - 1)) : 'now'}`;

@Injectable()
export class ConsoleAuditService {
  constructor(
    @Inject(ConsoleReadsRepository) private readonly reads: ConsoleReadsRepository,
    @Inject(ConnectorsService) private readonly connectors: ConnectorsService,
    @Inject(AdminKeysService) private readonly adminKeys: AdminKeysService,
    @Inject(TenantProvidersService) private readonly providers: TenantProvidersService,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(AuditExport) private readonly exporter: AuditExport,
    @Inject(AuditSigningKeys) private readonly signingKeys: AuditSigningKeys,
  ) {}

  async page(tenantId: string, q: AuditQuery): Promise<AuditPageData> {
    const range = rangeOf(q.from, q.to);
    const [connectors, keys, providers] = await Promise.all([
      this.connectors.listConnectors(tenantId),
      this.adminKeys.list(tenantId),
      this.providers.listProviders(tenantId),
    ]);
    const connectorName = new Map(connectors.map((c) => [c.id, c.name]));
    const keyName = new Map(keys.map((k) => [k.id, k.name]));
    const providerName = new Map(providers.map((p) => [p.key, p.name]));
    const rows = await this.reads.auditPage(
      tenantId,
      {
        action: q.action,
        outcome: q.outcome,
        userId: q.user,
        connectorId: q.connector,
        provider: q.provider,
        from: range.from,
        to: range.to,
        beforeId: q.before,
      },
      AUDIT_PAGE_SIZE + 1,
    );
    const page = rows.slice(0, AUDIT_PAGE_SIZE);
    const events: AuditEventView[] = page.map((r) => ({
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
    }));
    const actorName = (a: Actor): string => {
      switch (a.type) {
        case 'admin_key':
          if (a.id === null) return 'an unknown admin key';
          // The tenant's keys are listed, revoked ones too: any other key is the platform's.
          return keyName.has(a.id)
            ? `admin key ${keyName.get(a.id)}`
            : `platform admin key ${a.id.slice(0, 8)}…`;
        case 'connector':
          return a.id === null ? 'an unknown client' : `connector ${connectorName.get(a.id) ?? a.id}`;
        case 'user':
          return `user ${a.id ?? ''}`;
        case 'system':
          return 'Custos';
      }
    };

    // By default the last 14 days, today included: whole UTC days.
    const to = range.to ?? new Date((Math.floor(Date.now() / DAY_MS) + 1) * DAY_MS);
    let from = range.from ?? new Date(to.getTime() - DEFAULT_CHART_DAYS * DAY_MS);
    // A range given only by its start may be empty or long: the charts show at least a day, at most a year.
    if (from >= to) from = new Date(to.getTime() - DAY_MS);
    if (to.getTime() - from.getTime() > MAX_RANGE_DAYS * DAY_MS)
      from = new Date(to.getTime() - MAX_RANGE_DAYS * DAY_MS);
    const bucket = bucketFor(from, to);
    const chartRange = { from, to, connectorId: q.connector, provider: q.provider };
    const [series, byConnector, byProvider, seal] = await Promise.all([
      this.reads.exchangeSeries(tenantId, chartRange, bucket),
      this.reads.exchangeBreakdown(tenantId, chartRange, 'connector', BREAKDOWN_ROWS),
      this.reads.exchangeBreakdown(tenantId, chartRange, 'provider', BREAKDOWN_ROWS),
      this.reads.sealStatus(tenantId, chainOf(tenantId)),
    ]);
    const charts = html`${timeChart('chart-time', `Per ${bucket}`, fillBuckets(from, to, bucket, series), bucket)}
    ${breakdownChart(
      'chart-connectors',
      'By connector',
      'Connector',
      byConnector.map((r) => ({
        label: r.key === null ? 'unknown client' : (connectorName.get(r.key) ?? r.key),
        c: r,
      })),
    )}
    ${breakdownChart(
      'chart-providers',
      'By provider',
      'Provider',
      byProvider.map((r) => ({
        label: r.key === null ? 'no provider' : (providerName.get(r.key) ?? r.key),
        c: r,
      })),
    )}`;
    return {
      events,
      nextBefore: rows.length > AUDIT_PAGE_SIZE ? events[events.length - 1].id : null,
      actorName,
      connectors: connectors.map((c) => ({ id: c.id, name: c.name })),
      providers: providers.map((p) => ({ key: p.key, name: p.name })),
      seal,
      charts,
      chartRange: describeRange(from, to),
    };
  }

  /**
   * Verifies the tenant's sealed events in the range (by default the last 30 days): the export's checkpoints
   * and every event they cover, against the chain's published keys. Audited as `audit.verified`, with the
   * outcome; the answer is the verifier's own summary or the first problem it found.
   */
  async verify(actor: Actor, tenantId: string, from?: string, to?: string): Promise<VerifyOutcome> {
    const given = rangeOf(from, to);
    const range = {
      from: given.from ?? (given.to ? null : new Date(Date.now() - DEFAULT_VERIFY_DAYS * DAY_MS)),
      to: given.to ?? null,
    };
    const chunks = await this.exporter.open(tenantId, range);
    const jwks = await this.signingKeys.jwks(chainOf(tenantId));
    const result = await verifyExport(linesOf(chunks), jwks);
    const s = result.summary;
    await this.audit.record({
      tenantId,
      action: 'audit.verified',
      outcome: result.ok ? 'allowed' : 'failed',
      actor,
      details: {
        from: range.from?.toISOString() ?? null,
        to: range.to?.toISOString() ?? null,
        events: s.events,
        checkpoints: s.checkpoints,
        ...(result.ok
          ? {}
          : {
              problem: result.problem.slice(0, 300),
              ...(result.eventId ? { eventId: result.eventId } : {}),
            }),
      },
    });
    return {
      ok: result.ok,
      text: result.ok
        ? describeSummary(s)
        : `${result.problem}${result.eventId ? ` (event ${result.eventId})` : ''}`,
      range: range.from ? describeRange(range.from, range.to) : `until ${range.to ? day(range.to) : 'now'}`,
    };
  }
}
