/** Structured JSON logs (pino) with central secret redaction and the request id on every line. */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { LoggerService } from '@nestjs/common';
import { pino, type Logger } from 'pino';

export interface RequestContext {
  requestId: string;
}
export const requestContext = new AsyncLocalStorage<RequestContext>();

/** Every field that can carry a secret, at any depth pino can express. */
const secretFields = [
  'authorization',
  'cookie',
  'set-cookie',
  'password',
  'secret',
  'token',
  'key',
  'apiKey',
  'api_key',
  'accessToken',
  'access_token',
  'refreshToken',
  'refresh_token',
  'idToken',
  'id_token',
  'code_verifier',
  'client_secret',
  'clientSecret',
  'subject_token',
  'client_assertion',
  'plaintext',
  'dataKey',
  'rootKeys',
  'databaseUrl',
  'redisUrl',
  'bootstrapAdminKey',
];
/**
 * An OAuth authorization code travels as `code` in a query or form, so it is redacted there; elsewhere `code`
 * is an error code (`err.code`, a CustosException's code) and must stay readable.
 */
const authorizationCodePaths = ['query.code', 'body.code', 'params.code', 'form.code'];

export const redactPaths = [
  ...secretFields,
  ...secretFields.map((f) => `*.${f}`),
  ...secretFields.map((f) => `*.*.${f}`),
  ...authorizationCodePaths,
  ...authorizationCodePaths.map((p) => `*.${p}`),
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: undefined,
      redact: { paths: redactPaths, censor: '[redacted]' },
      mixin: () => {
        const ctx = requestContext.getStore();
        return ctx ? { requestId: ctx.requestId } : {};
      },
    },
    destination,
  );
}

/** Nest's logger interface over pino, so framework messages get the same format and redaction. */
export class PinoNestLogger implements LoggerService {
  constructor(private readonly logger: Logger) {}
  log(message: unknown, context?: string): void {
    this.logger.info({ context }, String(message));
  }
  error(message: unknown, trace?: string, context?: string): void {
    this.logger.error({ context, trace }, String(message));
  }
  warn(message: unknown, context?: string): void {
    this.logger.warn({ context }, String(message));
  }
  debug(message: unknown, context?: string): void {
    this.logger.debug({ context }, String(message));
  }
  verbose(message: unknown, context?: string): void {
    this.logger.trace({ context }, String(message));
  }
}

export const LOGGER = Symbol('LOGGER');

/**
 * The logger for the one access line per request. Its fields are fixed and never secret (request id,
 * method, route template, status, duration), so it skips the redaction pass, which otherwise costs more
 * CPU than anything else on the token endpoint.
 */
export function accessLogger(logger: Logger): Logger {
  return logger.child({}, { redact: { paths: [], censor: '[redacted]' } });
}
