/** The one place domain error codes become HTTP statuses and the stable body {error, message, requestId}. */
import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { CustosException, type ErrorCode } from './errors.js';

export function statusFor(code: ErrorCode): number {
  switch (code) {
    case 'invalid_request':
    case 'validation_failed':
    case 'unknown_field':
    case 'malformed_id':
    case 'credential_type_mismatch':
    case 'return_url_not_allowed':
    case 'outbound_url_refused':
    case 'key_backend_unreachable':
    case 'key_backend_denied':
    case 'key_backend_invalid':
      return 400;
    case 'unauthenticated':
      return 401;
    case 'forbidden':
      return 403;
    case 'not_found':
    case 'unknown_provider':
      return 404;
    case 'conflict':
      return 409;
    case 'payload_too_large':
      return 413;
    case 'unsupported_media_type':
      return 415;
    case 'outbound_request_failed':
      return 502;
    case 'key_unavailable':
    case 'temporarily_unavailable':
      return 503;
    case 'key_invalid':
    case 'decryption_failed':
    case 'internal_error':
      return 500;
  }
}

/** PostgreSQL / Redis / network conditions that mean "try again", never "your credentials are bad". */
const transientPgCodes = new Set([
  '57P01',
  '57P02',
  '57P03',
  '53300',
  '53400',
  '08000',
  '08003',
  '08006',
  '08001',
  '08004',
]);
const transientErrnos = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
]);

export function isInfrastructureError(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const e = err as { code?: unknown; message?: unknown; driverError?: unknown; cause?: unknown };
  if (typeof e.code === 'string' && (transientPgCodes.has(e.code) || transientErrnos.has(e.code)))
    return true;
  const msg = typeof e.message === 'string' ? e.message : '';
  if (
    /Connection terminated|connection timeout|timeout exceeded when trying to connect|Connection is closed|Client has encountered a connection error/i.test(
      msg,
    )
  )
    return true;
  if (e.driverError && e.driverError !== err && isInfrastructureError(e.driverError)) return true;
  if (e.cause && e.cause !== err && isInfrastructureError(e.cause)) return true;
  if (err instanceof AggregateError) return err.errors.some(isInfrastructureError);
  return false;
}

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
  if (exception instanceof CustosException) {
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
    const body: Record<string, unknown> = {
      error: mapped.error,
      message: mapped.message,
      requestId: request.id,
    };
    if (mapped.details && Object.keys(mapped.details).length > 0) body.details = mapped.details;
    if (mapped.status === 503) void reply.header('retry-after', '5');
    void reply.status(mapped.status).header('cache-control', 'no-store').send(body);
  }
}
