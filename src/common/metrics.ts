/**
 * Prometheus metrics (prom-client), served at GET /metrics. Counters only carry low-cardinality labels
 * (backend type, outcome): never a tenant, user, key id or anything secret.
 */
import { collectDefaultMetrics, Counter, Registry } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();

  /** Data keys unwrapped by a key backend (cache misses): with warm caches this stays flat under reads. */
  readonly dataKeyUnwraps = new Counter({
    name: 'custos_data_key_unwraps_total',
    help: 'Data keys unwrapped by a key backend (data-key cache misses), by backend type.',
    labelNames: ['backend'] as const,
    registers: [this.registry],
  });

  /** Lookups of unwrapped data keys (a hit costs no key-backend call; a miss unwraps or joins an unwrap in progress). */
  readonly dataKeyCache = new Counter({
    name: 'custos_data_key_cache_lookups_total',
    help: 'Lookups of the unwrapped data-key cache by result: hit, miss (unwrapped, or waited for an unwrap in progress).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly tokenRequests = new Counter({
    name: 'custos_token_requests_total',
    help: 'Token endpoint answers by outcome: released, denied, consent_required, throttled, unavailable.',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  /** Requests refused with 429 before any work, because a key had too many failed authentications. */
  readonly throttled = new Counter({
    name: 'custos_auth_throttled_total',
    help: 'Requests refused with 429 (too many failed authentications for their address or credential), by endpoint: token, admin.',
    labelNames: ['endpoint'] as const,
    registers: [this.registry],
  });

  readonly deniedFolded = new Counter({
    name: 'custos_denials_folded_total',
    help: 'Denials counted into a folded audit event instead of an event of their own, by endpoint: token, admin.',
    labelNames: ['endpoint'] as const,
    registers: [this.registry],
  });

  readonly refreshes = new Counter({
    name: 'custos_token_refreshes_total',
    help: 'Provider token refreshes by outcome: refreshed, failed (retried with backoff), needs_reauth, superseded (a credential written meanwhile: the answer dropped).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly auditInserts = new Counter({
    name: 'custos_audit_group_commits_total',
    help: 'Multi-row audit INSERTs issued by the group committer.',
    registers: [this.registry],
  });

  readonly auditEvents = new Counter({
    name: 'custos_audit_group_committed_events_total',
    help: 'Audit events written by the group committer.',
    registers: [this.registry],
  });

  /** Requests of the token endpoint's batched statements that failed on their own: a deadline, a refused row. */
  readonly batchFailures = new Counter({
    name: 'custos_db_batch_failures_total',
    help: 'Requests of a batched statement (batcher: decisions, audit) failed by their deadline (timed_out) or refused alone by the database (isolated).',
    labelNames: ['batcher', 'reason'] as const,
    registers: [this.registry],
  });

  /** Audit events that could not be stored as given (their trace was written with the bad values replaced). */
  readonly auditEventsRejected = new Counter({
    name: 'custos_audit_events_rejected_total',
    help: 'Audit events refused as given (values PostgreSQL cannot store); each caller failed closed.',
    registers: [this.registry],
  });

  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'custos_' });
  }
}
