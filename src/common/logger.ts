/**
 * Structured JSON logs (pino) with central secret redaction and the request id on every line; the same lines
 * made readable (pino-pretty) for a person at a terminal.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { LoggerService } from '@nestjs/common';
import { pino, type Logger } from 'pino';
import { isColorSupported, prettyFactory } from 'pino-pretty';

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

/** `CUSTOS_LOG_FORMAT`: `auto` is pretty for a person at a terminal and JSON for everything else. */
export type LogFormat = 'auto' | 'json' | 'pretty';

/**
 * JSON unless pretty is asked for, or left to `auto` while stdout is a terminal. Log collectors (a container
 * runtime, systemd's journal, a pipe) never present a terminal, so production stays JSON without a setting.
 */
export function resolveLogFormat(format: LogFormat, stdoutIsTty: boolean): 'json' | 'pretty' {
  switch (format) {
    case 'json':
    case 'pretty':
      return format;
    case 'auto':
      return stdoutIsTty ? 'pretty' : 'json';
  }
}

/** Where text goes: process.stdout, or a test's buffer. */
export interface TextSink {
  write(text: string): unknown;
}

/**
 * A destination that rewrites each JSON line as pino-pretty's readable form. Pino redacts while it serialises,
 * before the line reaches any destination, so a pretty line hides exactly what the JSON line hides. Each line
 * is written at once (no transport thread, no buffer), so the last line before process.exit() is not lost.
 */
export function prettyDestination(out: TextSink, colorize: boolean): pino.DestinationStream {
  const prettify = prettyFactory({ colorize, translateTime: 'SYS:HH:MM:ss.l' });
  return { write: (line: string) => void out.write(prettify(line)) };
}

/**
 * The destination for a format: undefined (pino's own JSON destination on stdout) or pretty lines on stdout,
 * coloured when that is a terminal which takes colours (`NO_COLOR` and `TERM=dumb` turn colours off).
 */
export function logDestination(
  format: LogFormat,
  stdout: TextSink & { isTTY?: boolean } = process.stdout,
): pino.DestinationStream | undefined {
  const tty = stdout.isTTY === true;
  return resolveLogFormat(format, tty) === 'json'
    ? undefined
    : prettyDestination(stdout, tty && isColorSupported);
}

/** The Nest components whose `log` calls only narrate start-up. */
const NEST_NARRATION = new Set([
  'NestFactory',
  'InstanceLoader',
  'RoutesResolver',
  'RouterExplorer',
  'NestApplication',
]);

/** Nest's logger interface over pino, so framework messages get the same format and redaction. */
export class PinoNestLogger implements LoggerService {
  constructor(private readonly logger: Logger) {}
  log(message: unknown, context?: string): void {
    // Nest's start-up narration (a line per module, per controller and per route, about a hundred in all) is
    // at debug: at info, a start says what matters once, in Custos's own summary line.
    const level = context !== undefined && NEST_NARRATION.has(context) ? 'debug' : 'info';
    this.logger[level]({ context }, String(message));
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
