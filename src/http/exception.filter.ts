/**
 * The one place domain error codes become HTTP statuses and the stable body {error, message, requestId} — or,
 * on the OAuth token endpoint, RFC 6749's {error, error_description}, and on the hosted connect pages an HTML
 * page, whatever failed (body parsing, the edge guard, an outage, an unexpected error).
 */
import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { hostedErrorPage, messagePage, pageHeaders } from '../connect/connect-pages.js';
import { isInfrastructureError } from '../common/infrastructure-error.js';
import { CustosException, RateLimitedException } from '../common/errors.js';
import { isErrorCode, statusFor } from './error-codes.js';

interface Mapped {
  status: number;
  error: string;
  message: string;
}

function mapFastifyError(err: { code?: string; statusCode?: number; message?: string }): Mapped | null {
  switch (err.code ?? '') {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, error: 'payload_too_large', message: 'Request body is too large' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, error: 'unsupported_media_type', message: 'Unsupported Content-Type' };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 400, error: 'invalid_request', message: 'Request body is empty or malformed' };
    default:
      break;
  }
  if (err instanceof SyntaxError || err.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
    return { status: 400, error: 'invalid_request', message: 'Request body is not valid JSON' };
  }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return { status: err.statusCode, error: 'invalid_request', message: 'Malformed request' };
  }
  return null;
}

export function mapError(exception: unknown): Mapped & { details?: Record<string, unknown> } {
  // A code outside every domain's list cannot be typed in; a cast could do it, and that is a bug: a 500.
  if (exception instanceof CustosException && isErrorCode(exception.code)) {
    const status = statusFor(exception.code);
    const message = status >= 500 && status !== 503 ? 'Internal error' : exception.message;
    return {
      status,
      error: exception.code,
      message,
      ...(status < 500 ? { details: exception.details } : {}),
    };
  }
  if (exception instanceof HttpException) {
    const status = exception.getStatus();
    if (status === 404) return { status, error: 'not_found', message: 'Not found' };
    if (status === 405) return { status, error: 'invalid_request', message: 'Method not allowed' };
    const fastify = mapFastifyError((exception.cause as { code?: string } | undefined) ?? {});
    if (fastify) return fastify;
    if (status < 500) return { status, error: 'invalid_request', message: exception.message };
  }
  const fastify = mapFastifyError(exception as { code?: string; statusCode?: number });
  if (fastify) return fastify;
  if (isInfrastructureError(exception)) {
    return {
      status: 503,
      error: 'temporarily_unavailable',
      message: 'A backing service is unavailable; retry later',
    };
  }
  return { status: 500, error: 'internal_error', message: 'Internal error' };
}

/** Routes that speak RFC 6749 errors: their clients are OAuth libraries, not the admin API's. */
const OAUTH_ROUTES = new Set(['/oauth/token']);

function isOAuthRoute(request: Pick<FastifyRequest, 'url' | 'routeOptions'>): boolean {
  return OAUTH_ROUTES.has(request.routeOptions?.url ?? request.url.split('?')[0]);
}

/**
 * An error that reached the filter on an OAuth route, in RFC 6749 §5.2 terms. The body-level refusals
 * (malformed, too deep, a bad string) are invalid_request; a content type without a parser is answered like
 * a JSON body, which the endpoint reads and refuses itself: 400 invalid_request. A too-large body keeps its
 * 413, which HTTP clients and proxies act on.
 */
function oauthError(mapped: Mapped): { status: number; body: Record<string, string> } {
  if (mapped.status === 503) {
    return { status: 503, body: { error: 'temporarily_unavailable', error_description: mapped.message } };
  }
  if (mapped.status >= 500) {
    return { status: 500, body: { error: 'server_error', error_description: 'Internal error' } };
  }
  if (mapped.status === 429) {
    return { status: 429, body: { error: 'slow_down', error_description: mapped.message } };
  }
  if (mapped.status === 415) {
    return {
      status: 400,
      body: {
        error: 'invalid_request',
        error_description: 'The body must be application/x-www-form-urlencoded',
      },
    };
  }
  return { status: mapped.status, body: { error: 'invalid_request', error_description: mapped.message } };
}

/**
 * The hosted connect pages (/connect and below): people with a browser, not API clients. Matched on the path
 * as well as the route, so an address no route matches (404) and a request refused before routing get a
 * page too, and a new connect route is covered without doing anything.
 */
function isHostedPageRoute(request: Pick<FastifyRequest, 'url' | 'routeOptions'>): boolean {
  const path = request.routeOptions?.url ?? request.url.split('?')[0];
  return path === '/connect' || path.startsWith('/connect/');
}

/** A failure on a hosted page, as a page: the status kept, Retry-After on 503, the request id on a 500. */
function answerHostedPage(
  reply: Pick<FastifyReply, 'status' | 'headers' | 'header' | 'send'>,
  status: number,
  requestId: string,
  retryAfterSeconds?: number,
): void {
  const shown = hostedErrorPage(status, requestId);
  void reply.headers({ ...pageHeaders(), 'x-request-id': requestId });
  if (status === 503) void reply.header('retry-after', '5');
  if (retryAfterSeconds !== undefined) void reply.header('retry-after', String(retryAfterSeconds));
  void reply.status(status).send(messagePage(shown.title, shown.message, true, shown.reference));
}

@Catch()
export class CustosExceptionFilter implements ExceptionFilter {
  constructor(private readonly log: Logger) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    const ctx = host.switchToHttp();
    const reply = ctx.getResponse<FastifyReply>();
    const request = ctx.getRequest<FastifyRequest>();
    const mapped = mapError(exception);
    if (mapped.status >= 500) {
      const e = exception as { name?: string; code?: unknown; stack?: string };
      // Only the error's name, code and stack: messages of driver errors can quote parameters.
      this.log.error({ err: { name: e?.name, code: e?.code, stack: e?.stack } }, 'request failed');
    }
    if (isOAuthRoute(request)) {
      const answer = oauthError(mapped);
      void reply.headers({ 'cache-control': 'no-store', pragma: 'no-cache' });
      if (answer.status === 503) void reply.header('retry-after', '5');
      if (exception instanceof RateLimitedException) {
        void reply.header('retry-after', String(exception.retryAfterSeconds));
      }
      void reply.status(answer.status).send(answer.body);
      return;
    }
    if (isHostedPageRoute(request)) {
      const retryAfter = exception instanceof RateLimitedException ? exception.retryAfterSeconds : undefined;
      answerHostedPage(reply, mapped.status, request.id, retryAfter);
      return;
    }
    const body: Record<string, unknown> = {
      error: mapped.error,
      message: mapped.message,
      requestId: request.id,
    };
    if (mapped.details && Object.keys(mapped.details).length > 0) body.details = mapped.details;
    if (mapped.status === 503) void reply.header('retry-after', '5');
    if (exception instanceof RateLimitedException) {
      void reply.header('retry-after', String(exception.retryAfterSeconds));
    }
    void reply.status(mapped.status).header('cache-control', 'no-store').send(body);
  }
}

/**
 * Fastify's router answers some malformed URLs itself, before any hook or filter (a path parameter that is
 * not valid percent-encoded UTF-8, or longer than the router's limit). This handler (the adapter's
 * `frameworkErrors` option) gives them the stable body: 400 malformed_id, or on a hosted page a 400 page.
 */
export function answerFrameworkError(
  error: { code?: string },
  request: Pick<FastifyRequest, 'id' | 'url' | 'routeOptions'>,
  reply: Pick<FastifyReply, 'status' | 'headers' | 'header' | 'send'>,
): void {
  if (isHostedPageRoute(request)) {
    answerHostedPage(reply, statusFor('malformed_id'), request.id);
    return;
  }
  const message =
    error.code === 'FST_ERR_MAX_PARAM_LENGTH'
      ? 'A path parameter is too long'
      : 'A path parameter is not valid percent-encoded UTF-8';
  void reply
    .status(statusFor('malformed_id'))
    .headers({ 'cache-control': 'no-store', 'x-request-id': request.id, 'x-content-type-options': 'nosniff' })
    .send({ error: 'malformed_id', message, requestId: request.id });
}
