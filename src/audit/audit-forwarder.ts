/**
 * Forwards the sealed trail to a SIEM (CUSTOS_AUDIT_FORWARD), at least once, after each sealer run: per chain,
 * the checkpoints not yet delivered with their events, as the export's lines (docs/audit-format.md; no header
 * line), to stdout or as a signed POST (`Custos-Signature`, as tenants' webhooks). The chain's forwarding state
 * advances only after a delivery succeeded, in the transaction that holds the chain's row, so two workers never
 * send the same batch at once and a crash between sending and committing sends it again (at least once). A
 * failing sink is retried with growing pauses (up to a minute); it never holds up sealing, and the token path
 * never waits on any of it.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { Counter } from 'prom-client';
import { DataSource } from 'typeorm';
import { LOGGER } from '../common/logger.js';
import { Metrics } from '../common/metrics.js';
import { webhookSignature } from '../common/webhook-signature.js';
import { CONFIG, type Config } from '../config/config.js';
import { AuditCheckpointsRepository, type CheckpointRow } from './audit-checkpoints.repository.js';
import { AuditExport } from './audit-export.js';
import { AuditForwardStateRepository } from './audit-forward-state.repository.js';

/** Events per delivery, roughly: whole checkpoints are added until this many are in the batch. */
const BATCH_EVENTS = 5000;
const MAX_CHECKPOINTS = 200;
const TIMEOUT_MS = 10_000;
const MAX_PAUSE_MS = 60_000;
const LAST_SEQ = '9223372036854775807';

export type ForwardSink = (
  body: string,
  meta: { chain: string; firstSeq: string; lastSeq: string },
) => Promise<void>;

@Injectable()
export class AuditForwarder {
  private failures = 0;
  private pausedUntil = 0;
  private readonly forwarded: Counter;
  private readonly failed: Counter;
  private sink: ForwardSink | null;

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(AuditForwardStateRepository) private readonly state: AuditForwardStateRepository,
    @Inject(AuditCheckpointsRepository) private readonly checkpoints: AuditCheckpointsRepository,
    @Inject(AuditExport) private readonly exporter: AuditExport,
    @Inject(CONFIG) config: Config,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(Metrics) metrics: Metrics,
  ) {
    this.forwarded = new Counter({
      name: 'custos_audit_forwarded_checkpoints_total',
      help: 'Checkpoints (with their events) delivered to CUSTOS_AUDIT_FORWARD.',
      registers: [metrics.registry],
    });
    this.failed = new Counter({
      name: 'custos_audit_forward_failures_total',
      help: 'Deliveries to CUSTOS_AUDIT_FORWARD that failed (retried later).',
      registers: [metrics.registry],
    });
    const to = config.auditForward;
    this.sink = to === null ? null : to.to === 'stdout' ? stdoutSink : webhookSink(to.url, to.secret);
  }

  get enabled(): boolean {
    return this.sink !== null;
  }

  /** Delivers every chain's pending checkpoints; returns how many were delivered. */
  async forward(now = Date.now()): Promise<number> {
    const sink = this.sink;
    if (!sink || now < this.pausedUntil) return 0;
    let delivered = 0;
    for (const { chain } of await this.state.behind()) {
      try {
        for (;;) {
          const n = await this.forwardBatch(chain, sink);
          delivered += n;
          if (n === 0) break;
        }
      } catch (err) {
        this.failed.inc();
        this.failures++;
        this.pausedUntil = Date.now() + Math.min(MAX_PAUSE_MS, 500 * 2 ** Math.min(this.failures, 10));
        this.logger.warn(
          { chain, failures: this.failures, error: (err as Error).name, reason: (err as Error).message },
          'audit forwarding failed; will retry',
        );
        return delivered;
      }
    }
    this.failures = 0;
    return delivered;
  }

  private forwardBatch(chain: string, sink: ForwardSink): Promise<number> {
    return this.db.transaction(async (m) => {
      const seq = await this.state.lock(m, chain);
      if (seq === null) return 0;
      const page = await this.checkpoints.page(chain, seq, LAST_SEQ, MAX_CHECKPOINTS);
      const batch: CheckpointRow[] = [];
      let events = 0;
      for (const cp of page) {
        if (batch.length > 0 && events + Number(cp.last_pos) - Number(cp.first_pos) + 1 > BATCH_EVENTS) break;
        batch.push(cp);
        events += Number(cp.last_pos) - Number(cp.first_pos) + 1;
      }
      if (batch.length === 0) return 0;
      let body = '';
      for await (const chunk of this.exporter.linesOf(chain, batch)) body += chunk;
      const lastSeq = batch[batch.length - 1].seq;
      await sink(body, { chain, firstSeq: batch[0].seq, lastSeq });
      await this.state.advance(m, chain, lastSeq);
      this.forwarded.inc(batch.length);
      return batch.length;
    });
  }

  /** Replaces the sink (tests observe deliveries this way). */
  useSink(sink: ForwardSink | null): void {
    this.sink = sink;
    this.failures = 0;
    this.pausedUntil = 0;
  }
}

const stdoutSink: ForwardSink = (body) =>
  new Promise((resolve, reject) => process.stdout.write(body, (err) => (err ? reject(err) : resolve())));

function webhookSink(url: string, secret: string): ForwardSink {
  return async (body, meta) => {
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-ndjson',
        'custos-signature': webhookSignature(secret, Math.floor(Date.now() / 1000), body),
        'custos-audit-chain': meta.chain,
        'custos-audit-checkpoints': `${meta.firstSeq}-${meta.lastSeq}`,
      },
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    await res.body?.cancel().catch(() => undefined);
    if (res.status < 200 || res.status >= 300) throw new Error(`the SIEM answered HTTP ${res.status}`);
  };
}
