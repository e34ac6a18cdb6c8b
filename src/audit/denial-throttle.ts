/**
 * Throttles failed authentications (token endpoint and admin API) and bounds the audit rows they can add.
 *
 * Per key (claimed client id, presented admin key, source address) and window, the first
 * CUSTOS_AUDIT_DENIALS_PER_WINDOW denials are audited one by one as always; the ones after that, and every
 * request refused with 429 meanwhile, are counted into one folded event per key, tenant and window instead
 * (`token.exchange.denied_folded` / `access.denied.folded`), written when the key's window has closed (and
 * on shutdown). Across all keys, at most CUSTOS_AUDIT_DENIALS_GLOBAL_PER_WINDOW denials per window are audited
 * one by one in a process; past that, the rest go into one folded event per tenant (key kind `global`), so that
 * requests from ever new addresses or made-up client ids cannot fill the table either. Whoever is outside can
 * thus add at most that many rows, plus one per key that went over its own threshold, plus one per tenant.
 */
import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import type { Logger } from 'pino';
import { AuditService, type Actor, type AuditRecord } from './audit.service.js';
import { CONFIG, type Config } from '../config/config.js';
import { LOGGER } from '../common/logger.js';
import { Metrics } from '../common/metrics.js';
import {
  FailureLimiter,
  RedisFailureCounter,
  sha256Hex,
  type Block,
  type FailureLimits,
  type LimitKey,
  type LimitKind,
} from '../common/rate-limit.js';

export type DenialEndpoint = 'token' | 'admin';

/** A refused request, as far as it is known when it is refused. */
export interface Denial {
  endpoint: DenialEndpoint;
  /** The tenant whose known connector or key was named; null for unknown ones. */
  tenantId: string | null;
  actor: Actor;
  /** The stable reason its individual event would carry. */
  reason: string;
}

/** `audit`: write the denial's own event as usual; `folded`: it is counted into a folded event instead. */
export type DenialVerdict = 'audit' | 'folded';

export const FOLDED_ACTIONS: Record<DenialEndpoint, string> = {
  token: 'token.exchange.denied_folded',
  admin: 'access.denied.folded',
};

interface Fold {
  endpoint: DenialEndpoint;
  tenantId: string | null;
  actor: Actor;
  keyKind: LimitKind | 'overflow' | 'global';
  key: string;
  windowStart: number;
  windowEnd: number;
  count: number;
  reasons: Record<string, number>;
}

/** Folded events held at once; past this, further ones go into one overflow event per endpoint. */
const MAX_FOLDS = 10_000;
const FLUSH_EVERY_MS = 5_000;
const SHUTDOWN_FLUSH_MS = 5_000;
/** Deadline of one Redis call of the limiter (it is on the failure path of the token endpoint). */
const REDIS_TIMEOUT_MS = 250;
const PRINTABLE_ID = /^[\x21-\x7e]{1,64}$/;

@Injectable()
export class DenialThrottle implements OnModuleInit, OnModuleDestroy {
  private limiter: FailureLimiter;
  private readonly limits: FailureLimits;
  private readonly auditThreshold: number;
  private readonly globalBudget: number;
  /** The current window of the budget of denials audited one by one in this process, whatever their key. */
  private global = { start: 0, end: 0, audited: 0 };
  private readonly folds = new Map<string, Fold>();
  /** Folds whose window has closed, waiting to be written (or written again after a failure). */
  private ready: Fold[] = [];
  private timer?: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  private inFlight = 0;

  constructor(
    @Inject(CONFIG) private readonly config: Config,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(Metrics) private readonly metrics: Metrics,
    @Inject(LOGGER) private readonly log: Logger,
  ) {
    this.limits = {
      windowMs: config.rateLimitWindowSeconds * 1000,
      credentialFailures: config.rateLimitCredentialFailures,
      addressFailures: config.rateLimitAddressFailures,
    };
    this.auditThreshold = config.auditDenialsPerWindow;
    this.globalBudget = config.auditDenialsGlobalPerWindow;
    this.limiter = new FailureLimiter(this.limits, null, log);
  }

  async onModuleInit(): Promise<void> {
    // Only the api role authenticates anyone.
    if (this.config.role === 'worker') return;
    if (this.config.redisUrl) {
      const shared = await RedisFailureCounter.connect({
        url: this.config.redisUrl,
        prefix: this.config.queuePrefix,
        timeoutMs: REDIS_TIMEOUT_MS,
        log: this.log,
      });
      this.limiter = new FailureLimiter(this.limits, shared, this.log);
    }
    // A tick finding the previous flush still running (a slow database) leaves it be, so ticks never pile up.
    this.timer = setInterval(
      () => {
        if (this.inFlight === 0) void this.flush();
      },
      Math.min(FLUSH_EVERY_MS, this.limits.windowMs),
    );
    this.timer.unref();
  }

  /** Writes every folded event still held (the process is stopping), then lets go of Redis. */
  async onModuleDestroy(): Promise<void> {
    clearInterval(this.timer);
    // Bounded: a database that does not answer must not hold up the shutdown.
    let timeout: NodeJS.Timeout | undefined;
    await Promise.race([
      this.flush(true),
      new Promise<void>((r) => (timeout = setTimeout(r, SHUTDOWN_FLUSH_MS))),
    ]);
    clearTimeout(timeout);
    await this.limiter.close();
  }

  /** Whether a credential key can be blocked now: callers skip working out a claimed client id otherwise. */
  credentialsMayBeBlocked(): boolean {
    return this.limiter.credentialsMayBeBlocked();
  }

  /**
   * Before authentication, from memory only: a key over its limit gives the block (answer 429 with its
   * Retry-After, do no other work), and the request is counted into that key's folded event.
   *
   * A claimed client id is never blocked here: client ids are not secret, so anyone could otherwise lock a
   * connector out by failing under its id. Its failures still count; once over its limit, a request under it
   * that fails is answered 429 instead of 401 (see `overLimit`), while the real connector authenticates as
   * usual. (A wrong admin key's hash, by contrast, names only the wrong key: it is blocked here.)
   */
  gate(keys: readonly LimitKey[], endpoint: DenialEndpoint): Block | null {
    const block = this.limiter.blocked(keys.filter((k) => k.kind !== 'client'));
    if (!block) return null;
    this.fold(block.key, block.windowStart, block.windowEnd, {
      endpoint,
      tenantId: block.owner?.tenantId ?? null,
      actor: { type: actorType(block.key.kind, endpoint), id: block.owner?.actorId ?? null },
      reason: 'rate_limited',
    });
    this.metrics.throttled.inc({ endpoint });
    return block;
  }

  /**
   * After a failure has been counted: the credential key (client id, admin key) among `keys` that is now over
   * its limit, if any, so that the failure is answered 429 rather than 401.
   */
  overLimit(keys: readonly LimitKey[]): Block | null {
    return this.limiter.blocked(
      keys.filter((k) => k.kind !== 'address'),
      Date.now(),
      true,
    );
  }

  /** After a failed authentication: counts it against every key, and says whether to audit it on its own. */
  async failed(keys: readonly LimitKey[], denial: Denial): Promise<DenialVerdict> {
    const owner =
      denial.tenantId !== null ? { tenantId: denial.tenantId, actorId: denial.actor.id } : undefined;
    const counts = await this.limiter.fail(keys, owner);
    const over = counts.find((c) => c.count > this.auditThreshold);
    if (over) {
      this.fold(over.key, over.windowStart, over.windowEnd, denial);
    } else if (!this.takeGlobalBudget()) {
      this.fold({ kind: 'address', id: '*' }, this.global.start, this.global.end, denial, 'global');
    } else {
      return 'audit';
    }
    this.metrics.deniedFolded.inc({ endpoint: denial.endpoint });
    return 'folded';
  }

  /** One more denial audited on its own in this window of the global budget, if it has room. */
  private takeGlobalBudget(now = Date.now()): boolean {
    if (now >= this.global.end) {
      const windowMs = this.limits.windowMs;
      const start = now - (now % windowMs);
      this.global = { start, end: start + windowMs, audited: 0 };
    }
    if (this.global.audited >= this.globalBudget) return false;
    this.global.audited++;
    return true;
  }

  /** Writes the folded events of closed windows (all of them with `all`). Never throws. */
  flush(all = false): Promise<void> {
    this.inFlight++;
    this.flushing = this.flushing
      .then(() => this.writeFolds(all))
      .finally(() => {
        this.inFlight--;
      });
    return this.flushing;
  }

  private fold(
    key: LimitKey,
    windowStart: number,
    windowEnd: number,
    denial: Denial,
    global?: 'global',
  ): void {
    const kind = global ?? key.kind;
    // The global fold of a tenant gathers denials of any actor; a key's fold, those of the actor it names.
    const actorId = global ? '' : (denial.actor.id ?? '');
    let id = [denial.endpoint, kind, key.id, denial.tenantId ?? '', actorId].join('\u0000');
    let f = this.folds.get(id);
    if (f && windowStart >= f.windowEnd) {
      // The key's earlier window is over: its event is complete.
      this.folds.delete(id);
      this.ready.push(f);
      f = undefined;
    }
    if (!f) {
      let keyKind: Fold['keyKind'] = kind;
      let shown = global ? '*' : displayKey(key);
      let tenantId = denial.tenantId;
      let actor = global ? { type: denial.actor.type, id: null } : denial.actor;
      if (this.folds.size >= MAX_FOLDS) {
        id = `${denial.endpoint}\u0000overflow`;
        keyKind = 'overflow';
        shown = '*';
        tenantId = null;
        actor = { type: denial.actor.type, id: null };
      }
      f = this.folds.get(id);
      if (!f) {
        f = {
          endpoint: denial.endpoint,
          tenantId,
          actor,
          keyKind,
          key: shown,
          windowStart,
          windowEnd,
          count: 0,
          reasons: {},
        };
        this.folds.set(id, f);
      }
    }
    f.count++;
    f.reasons[denial.reason] = (f.reasons[denial.reason] ?? 0) + 1;
    if (windowEnd > f.windowEnd) f.windowEnd = windowEnd;
  }

  private async writeFolds(all: boolean): Promise<void> {
    const now = Date.now();
    for (const [id, f] of this.folds) {
      if (all || f.windowEnd <= now) {
        this.folds.delete(id);
        this.ready.push(f);
      }
    }
    const batch = this.ready;
    this.ready = [];
    const failed: Fold[] = [];
    for (const f of batch) {
      try {
        await this.audit.record(foldedEvent(f, this.auditThreshold));
      } catch (err) {
        failed.push(f);
        this.log.warn(
          { err: { name: (err as Error).name } },
          'could not write a folded denial event; will retry',
        );
      }
    }
    if (failed.length > 0) {
      this.ready.unshift(...failed);
      if (this.ready.length > MAX_FOLDS) {
        const dropped = this.ready.splice(0, this.ready.length - MAX_FOLDS);
        this.log.error(
          { count: dropped.length },
          'folded denial events dropped after repeated write failures',
        );
      }
    }
  }
}

function foldedEvent(f: Fold, threshold: number): AuditRecord {
  return {
    tenantId: f.tenantId,
    action: FOLDED_ACTIONS[f.endpoint],
    outcome: 'denied',
    actor: f.actor,
    details: {
      keyKind: f.keyKind,
      key: f.key,
      count: f.count,
      reasons: f.reasons,
      windowStart: new Date(f.windowStart).toISOString(),
      windowEnd: new Date(f.windowEnd).toISOString(),
      foldedAfter: threshold,
    },
  };
}

/** Who a throttled request claimed to be: a connector at the token endpoint or by client id, else an admin key. */
function actorType(kind: LimitKind, endpoint: DenialEndpoint): Actor['type'] {
  if (kind === 'client') return 'connector';
  if (kind === 'admin_key') return 'admin_key';
  return endpoint === 'token' ? 'connector' : 'admin_key';
}

/** How a key appears in an audit event: never a presented secret, never text that is not printable ASCII. */
function displayKey(key: LimitKey): string {
  switch (key.kind) {
    case 'admin_key':
      return `sha256:${key.id.slice(0, 16)}`;
    case 'client':
      return PRINTABLE_ID.test(key.id) ? key.id : `sha256:${sha256Hex(key.id).slice(0, 16)}`;
    case 'address':
      return key.id;
  }
}
