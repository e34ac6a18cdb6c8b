/**
 * The export (docs/audit-format.md): a header line, then, checkpoint by checkpoint, the events it covers in
 * chain order followed by the checkpoint itself, then any event the database holds behind the sealer's cursor
 * that was never linked (written behind the sealer's back: shown, so that verification fails on it). A range
 * [from, to) selects the checkpoints whose events overlap it, and everything between the first and last of
 * them, whole: each checkpoint can be checked only with all of its events. Read page by page, never the whole
 * range in memory.
 */
import { Inject, Injectable } from '@nestjs/common';
import { AUDIT_FORMAT, chainOf, type ExportHeader } from './audit-format.js';
import { AuditChainRepository } from './audit-chain.repository.js';
import { AuditCheckpointsRepository, type CheckpointRow } from './audit-checkpoints.repository.js';
import { AuditRetentionRepository } from './audit-retention.repository.js';
import { eventLine } from './event-line.js';
import { AuditRepository } from './audit.repository.js';

const CHECKPOINT_PAGE = 200;
const EVENT_PAGE = 2000;

export interface ExportRange {
  from: Date | null;
  to: Date | null;
}

function checkpointLine(row: CheckpointRow): string {
  return JSON.stringify({ ...(JSON.parse(row.body) as object), sig: row.sig });
}

@Injectable()
export class AuditExport {
  constructor(
    @Inject(AuditCheckpointsRepository) private readonly checkpoints: AuditCheckpointsRepository,
    @Inject(AuditChainRepository) private readonly chain: AuditChainRepository,
    @Inject(AuditRepository) private readonly events: AuditRepository,
    @Inject(AuditRetentionRepository) private readonly retention: AuditRetentionRepository,
  ) {}

  /**
   * Starts an export: what it covers is fixed now (so a database that cannot answer fails the request before
   * anything is sent); the lines are read as they are consumed.
   */
  async open(tenantId: string | null, range: ExportRange): Promise<AsyncGenerator<string>> {
    const chain = chainOf(tenantId);
    const truncation = await this.retention.latest(chain);
    const seqs = await this.checkpoints.seqRange(chain, range);
    const cursor = await this.chain.cursor();
    const header: ExportHeader = {
      kind: 'export',
      format: AUDIT_FORMAT,
      chain,
      from: range.from?.toISOString() ?? null,
      to: range.to?.toISOString() ?? null,
      exportedAt: new Date().toISOString(),
    };
    const { checkpoints, events } = this;
    const linesOf = (page: CheckpointRow[]) => this.linesOf(chain, page);
    return (async function* lines() {
      yield JSON.stringify(header) + '\n';
      // What retention removed from the chain (docs/audit-format.md), so that what remains verifies.
      if (truncation) {
        yield JSON.stringify({ ...(JSON.parse(truncation.body) as object), sig: truncation.sig }) + '\n';
      }
      if (seqs) {
        let after = String(BigInt(seqs.first) - 1n);
        for (;;) {
          const page = await checkpoints.page(chain, after, seqs.last, CHECKPOINT_PAGE);
          if (page.length === 0) break;
          yield* linesOf(page);
          after = page[page.length - 1].seq;
        }
      }
      for (const row of await events.unlinked(tenantId, cursor, range)) {
        const { pos: _pos, ...line } = eventLine(row, 0);
        yield JSON.stringify(line) + '\n';
      }
    })();
  }

  /**
   * Consecutive checkpoints of a chain as export lines: each checkpoint's events in chain order, then the
   * checkpoint. Yields a chunk of lines per page of events read.
   */
  async *linesOf(chain: string, page: CheckpointRow[]): AsyncGenerator<string> {
    let next = 0;
    let pos = BigInt(page[0].first_pos);
    const end = BigInt(page[page.length - 1].last_pos);
    let out = '';
    while (pos <= end) {
      const rows = await this.chain.linkedEvents(chain, String(pos), String(end), EVENT_PAGE);
      if (rows.length === 0) break;
      for (const row of rows) {
        while (next < page.length && BigInt(page[next].last_pos) < BigInt(row.pos)) {
          out += checkpointLine(page[next++]) + '\n';
        }
        out +=
          JSON.stringify({ ...eventLine(row, Number(row.pos)), head: row.link_head.toString('hex') }) + '\n';
      }
      yield out;
      out = '';
      pos = BigInt(rows[rows.length - 1].pos) + 1n;
    }
    while (next < page.length) out += checkpointLine(page[next++]) + '\n';
    if (out) yield out;
  }
}
