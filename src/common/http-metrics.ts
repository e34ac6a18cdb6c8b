/**
 * HTTP metrics, from Fastify hooks: request durations by route, method and status, and the requests in flight.
 * Labels stay bounded and free of tenant data: the route is the template a request matched
 * (`/v1/tenants/:tenantId`), never its URL, and every URL that matched no route shares one value, `unmatched`.
 * Probes and scrapes are kept, under their own routes.
 */
import { performance } from 'node:perf_hooks';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import type { FastifyRequest } from 'fastify';
import { Gauge, Histogram } from 'prom-client';
import { Metrics } from './metrics.js';

/** The route label of a request that matched no route (a 404 from the router). */
export const UNMATCHED_ROUTE = 'unmatched';
/** The status label of a request whose client went away before its answer (nginx's "client closed request"). */
export const ABORTED_STATUS = '499';
/** Any other method (the router answers them 404) is counted as `other`. */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** When the request was first seen (performance.now()); 0 once it is counted, or if it never was. */
const STARTED = 'custosMetricsStartedAt';
type Timed = FastifyRequest & { [STARTED]: number };

export function installHttpMetrics(app: NestFastifyApplication): void {
  const fastify = app.getHttpAdapter().getInstance();
  const { registry } = app.get(Metrics);
  const duration = new Histogram({
    name: 'custos_http_request_duration_seconds',
    help: `HTTP requests by route template ("${UNMATCHED_ROUTE}": no route matched), method and status code (${ABORTED_STATUS}: the client went away first, timed until then). Requests the router refuses before routing (a malformed or over-long path parameter) are not counted.`,
    labelNames: ['route', 'method', 'status_code'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  let inFlight = 0;
  new Gauge({
    name: 'custos_http_requests_in_flight',
    help: 'HTTP requests received and not yet answered (nor abandoned by their client).',
    registers: [registry],
    collect() {
      this.set(inFlight);
    },
  });

  const finish = (req: Timed, status: string) => {
    const started = req[STARTED];
    // Counted once: a request answered after its client left is not counted again.
    if (started === 0) return;
    req[STARTED] = 0;
    inFlight--;
    duration.observe(
      {
        route: req.routeOptions.url ?? UNMATCHED_ROUTE,
        method: METHODS.has(req.method) ? req.method : 'other',
        status_code: status,
      },
      (performance.now() - started) / 1000,
    );
  };

  // Declared, so that every request object has the field from the start (one shape for V8).
  fastify.decorateRequest(STARTED, 0);
  fastify.addHook('onRequest', (req, _reply, done) => {
    (req as Timed)[STARTED] = performance.now();
    inFlight++;
    done();
  });
  fastify.addHook('onResponse', (req, reply, done) => {
    finish(req as Timed, String(reply.statusCode));
    done();
  });
  // A client that goes away first never gets onResponse: without this, it would stay in flight forever.
  fastify.addHook('onRequestAbort', (req, done) => {
    finish(req as Timed, ABORTED_STATUS);
    done();
  });
}
