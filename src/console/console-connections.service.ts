/**
 * The connections page's data: a page of the tenant's connections across users (shown as the connections
 * domain shows them, with its effective status), the counts by status, and when each was last used (its last
 * credential release in the audit trail) and by which connector. Listing is audited as `connection.listed`, as
 * the admin API's listing of a user's connections is.
 */
import { Inject, Injectable } from '@nestjs/common';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { connectionView, type ConnectionView } from '../connections/connections.service.js';
import { ConnectorsService } from '../identity/connectors.service.js';
import {
  ConsoleReadsRepository,
  type ConnectionCounts,
  type ConnectionCursor,
  type ConnectionFilter,
} from './console-reads.repository.js';

export const CONNECTIONS_PAGE_SIZE = 50;

export interface ConnectionsPageData {
  rows: { view: ConnectionView; lastUse?: { at: Date; connector: string } }[];
  counts: ConnectionCounts;
  /** Where the next page starts, when there is one. */
  next: ConnectionCursor | null;
}

@Injectable()
export class ConsoleConnectionsService {
  constructor(
    @Inject(ConsoleReadsRepository) private readonly reads: ConsoleReadsRepository,
    @Inject(ConnectorsService) private readonly connectors: ConnectorsService,
    @Inject(AuditService) private readonly audit: AuditService,
  ) {}

  async page(
    actor: Actor,
    tenantId: string,
    filter: ConnectionFilter,
    after: ConnectionCursor | undefined,
  ): Promise<ConnectionsPageData> {
    const [rows, counts, connectors] = await Promise.all([
      this.reads.connectionsPage(tenantId, filter, after, CONNECTIONS_PAGE_SIZE + 1),
      this.reads.connectionCounts(tenantId),
      this.connectors.listConnectors(tenantId),
    ]);
    const page = rows.slice(0, CONNECTIONS_PAGE_SIZE);
    // The trail's one "last used" read (an index probe per connection and monthly partition).
    const lastUse = await this.audit.lastReleases(
      tenantId,
      page.map((r) => r.id),
    );
    const connectorName = new Map(connectors.map((c) => [c.id, c.name]));
    await this.audit.record({
      tenantId,
      action: 'connection.listed',
      outcome: 'allowed',
      actor,
      details: {
        count: page.length,
        scope: 'tenant',
        via: 'console',
        filter: {
          status: filter.status,
          ...(filter.userPrefix !== undefined ? { userPrefix: filter.userPrefix } : {}),
          ...(filter.provider !== undefined ? { provider: filter.provider } : {}),
        },
      },
    });
    const last = page[page.length - 1];
    return {
      rows: page.map((r) => {
        const use = lastUse.get(r.id);
        return {
          view: connectionView(r),
          ...(use
            ? {
                lastUse: {
                  at: use.at,
                  connector:
                    use.connectorId === null
                      ? 'an unknown connector'
                      : (connectorName.get(use.connectorId) ?? use.connectorId),
                },
              }
            : {}),
        };
      }),
      counts,
      next:
        rows.length > CONNECTIONS_PAGE_SIZE && last
          ? { userId: last.user_id, provider: last.provider, id: last.id }
          : null,
    };
  }
}
