/**
 * Signed event notifications to a tenant's webhook (connection.created, …). The body is JSON; the header
 * `Custos-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the tenant's signing secret>`
 * lets the receiver check origin and freshness (reject old timestamps to stop replays). Delivery goes
 * through the SSRF-safe client, in the background, with three attempts (after 1 s and 5 s); every attempt
 * that fails for good is audited. A notification never carries a secret.
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { AuditService } from '../audit/audit.service.js';
import { LOGGER } from '../common/logger.js';
import { webhookSignature } from '../common/webhook-signature.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { DataKeyService } from '../crypto/data-key.service.js';
import { TenantsRepository } from './tenants.repository.js';

const DELAYS_MS = [0, 1000, 5000];

@Injectable()
export class WebhooksService {
  /** Deliveries in flight (tests wait on them). */
  private readonly inflight = new Set<Promise<void>>();

  constructor(
    @Inject(TenantsRepository) private readonly tenants: TenantsRepository,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(OutboundHttpClient) private readonly outbound: OutboundHttpClient,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  /** Queues a notification; returns at once. Nothing happens when the tenant has no webhook. */
  notify(tenantId: string, type: string, data: Record<string, unknown>): void {
    const p = this.deliver(tenantId, type, data).catch((err: unknown) =>
      this.log.warn({ tenantId, type, err: { name: (err as Error).name } }, 'webhook not delivered'),
    );
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  async settled(): Promise<void> {
    await Promise.all([...this.inflight]);
  }

  private async deliver(tenantId: string, type: string, data: Record<string, unknown>): Promise<void> {
    const row = await this.tenants.webhook(tenantId);
    const url = row?.webhook_url;
    const sealed = row?.webhook_secret;
    if (!url || !sealed) return;
    const secret = await this.dataKeys.open(
      tenantId,
      { scope: 'tenant', recordId: tenantId, field: 'webhook_secret' },
      sealed,
    );
    const id = randomUUID();
    const body = JSON.stringify({ id, type, occurredAt: new Date().toISOString(), tenantId, data });
    let last = 'not attempted';
    for (const [attempt, delay] of DELAYS_MS.entries()) {
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      const timestamp = Math.floor(Date.now() / 1000);
      try {
        const res = await this.outbound.request(url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'custos-event-id': id,
            'custos-event-type': type,
            'custos-signature': webhookSignature(secret, timestamp, body),
          },
          body,
          timeoutMs: 5000,
          maxResponseBytes: 16 * 1024,
        });
        if (res.status >= 200 && res.status < 300) return;
        last = `HTTP ${res.status}`;
      } catch (err) {
        last = (err as Error).name;
      }
      this.log.warn({ tenantId, type, attempt: attempt + 1, error: last }, 'webhook delivery failed');
    }
    await this.audit.record({
      tenantId,
      action: 'webhook.failed',
      outcome: 'failed',
      actor: { type: 'system', id: null },
      details: { eventId: id, type, attempts: DELAYS_MS.length, error: last },
    });
  }
}
