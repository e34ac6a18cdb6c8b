/**
 * Request validation: the shared string rule, zod pipes (unknown fields and malformed ids are 400s with
 * stable codes), and the edge guard that checks every request's JSON body, path parameters and query string
 * before any handler sees them.
 */
import { type PipeTransform } from '@nestjs/common';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { CommonException } from './errors.js';

export const uuidSchema = z.uuid();

/** The deepest JSON body accepted (objects and arrays): far above any schema, far below stack trouble. */
export const MAX_JSON_DEPTH = 32;

/**
 * The one rule for a free-text string that reaches the database or the audit trail: well-formed UTF-16
 * (no lone surrogates, which PostgreSQL refuses), no NUL or other control characters (tab excepted only where
 * `multiline` allows line breaks), and bounded length. Every schema and form field builds on this.
 */
const MULTILINE_PROBLEM = /(?![\t\n\r])\p{Cc}/u;
/** Control characters, and the Unicode line and paragraph separators some readers treat as line breaks. */
const SINGLE_LINE_PROBLEM = /[\p{Cc}\p{Zl}\p{Zp}]/u;

export function textProblem(value: string, multiline = false): string | null {
  // With the u flag, a surrogate pair reads as one code point; only a lone surrogate matches \p{Cs}.
  if (/\p{Cs}/u.test(value)) return 'must not contain lone surrogates';
  if ((multiline ? MULTILINE_PROBLEM : SINGLE_LINE_PROBLEM).test(value))
    return 'must not contain control characters';
  return null;
}

/** The string rule as a zod refinement, for string schemas that are not built with text() (URLs, formats). */
export function textRule(multiline = false) {
  return (value: string, ctx: z.RefinementCtx): void => {
    const problem = textProblem(value, multiline);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  };
}

export function text(opts: { min?: number; max: number; multiline?: boolean; trim?: boolean }) {
  let s = z.string();
  if (opts.trim) s = s.trim();
  return s
    .min(opts.min ?? 1)
    .max(opts.max)
    .superRefine(textRule(opts.multiline));
}

/** `value` without leading and trailing `ch`: linear, where `/^x+|x+$/g` backtracks quadratically. */
export function trimChar(value: string, ch: string): string {
  let start = 0;
  let end = value.length;
  while (start < end && value[start] === ch) start++;
  while (end > start && value[end - 1] === ch) end--;
  return value.slice(start, end);
}

/** External user ids are the identity provider's subject: printable, bounded. */
export const userIdSchema = text({ max: 255 });

/** Where a JSON value breaks the edge rules: nested too deep, or a key or string failing the string rule. */
export type JsonProblem = { kind: 'too_deep' } | { kind: 'text'; path: string; message: string };

/**
 * Walks a parsed JSON value without recursion (so any depth is safe to inspect) and reports the first problem:
 * nesting deeper than `maxDepth` objects/arrays, or an object key or string value failing the string rule in
 * its multiline form. Single-line and length rules are the schemas' business.
 */
export function jsonProblem(value: unknown, maxDepth = MAX_JSON_DEPTH): JsonProblem | null {
  const stack: { value: unknown; path: string[]; depth: number }[] = [{ value, path: [], depth: 0 }];
  while (stack.length > 0) {
    const { value: v, path, depth } = stack.pop()!;
    if (typeof v === 'string') {
      const problem = textProblem(v, true);
      if (problem) return { kind: 'text', path: path.join('.'), message: problem };
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (depth >= maxDepth) return { kind: 'too_deep' };
    const entries: [string, unknown][] = Array.isArray(v)
      ? v.map((item, i) => [String(i), item])
      : Object.entries(v as Record<string, unknown>);
    for (let i = entries.length - 1; i >= 0; i--) {
      const [key, item] = entries[i];
      const keyProblem = textProblem(key, true);
      if (keyProblem) {
        return { kind: 'text', path: [...path, '(key)'].join('.'), message: `keys ${keyProblem}` };
      }
      stack.push({ value: item, path: [...path, key], depth: depth + 1 });
    }
  }
  return null;
}

function refuseJson(problem: JsonProblem, where: string): never {
  if (problem.kind === 'too_deep') {
    throw new CommonException(
      'json_too_deep',
      `The request ${where} is nested more than ${MAX_JSON_DEPTH} levels deep`,
    );
  }
  const path = problem.path ? `${where}.${problem.path}` : where;
  throw new CommonException('validation_failed', `Invalid request ${where} at ${path}: ${problem.message}`, {
    issues: [{ path: problem.path || where, message: problem.message }],
  });
}

/** A body Fastify's JSON parser produced (form bodies are checked by the code that reads them). */
function isJsonBody(req: FastifyRequest): boolean {
  const type = req.headers['content-type'];
  return typeof type === 'string' && /^application\/json\s*(;|$)/i.test(type.trim());
}

/**
 * The edge guard, for every route: a JSON body no deeper than MAX_JSON_DEPTH whose keys and strings pass the
 * string rule, and path parameters and query values that pass it too. It runs before any pipe, guard or
 * handler, so no value that PostgreSQL or the audit trail would refuse (NUL, lone surrogates) gets that far,
 * whatever a schema forgot; a new route is covered without doing anything.
 */
export function guardRequestInput(req: Pick<FastifyRequest, 'params' | 'query' | 'body' | 'headers'>): void {
  // A path parameter is an id of some kind: refused as UuidParam and UserIdParam refuse theirs.
  const params = req.params && typeof req.params === 'object' ? jsonProblem(req.params, 1) : null;
  if (params) {
    throw new CommonException(
      'malformed_id',
      params.kind === 'text'
        ? `Malformed path parameter ${params.path}: ${params.message}`
        : 'Malformed path parameter',
    );
  }
  // Query values are strings, or arrays of strings for a repeated parameter.
  const query = req.query && typeof req.query === 'object' ? jsonProblem(req.query, 2) : null;
  if (query) refuseJson(query, 'query');
  if (req.body !== undefined && isJsonBody(req as FastifyRequest)) {
    const problem = jsonProblem(req.body);
    if (problem) refuseJson(problem, 'body');
  }
}

/** Installs guardRequestInput on every route (before validation, after parsing). */
export function installInputGuards(fastify: FastifyInstance): void {
  fastify.addHook('preValidation', (req, _reply, done) => {
    try {
      guardRequestInput(req);
      done();
    } catch (err) {
      done(err as Error);
    }
  });
}

export function parseWith<T extends z.ZodType>(schema: T, input: unknown): z.output<T> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issues = result.error.issues.map((i) => ({
    path: i.path.map(String).join('.'),
    message: i.message,
    ...(i.code === 'unrecognized_keys' ? { keys: i.keys } : {}),
  }));
  const unknown = result.error.issues.find((i) => i.code === 'unrecognized_keys');
  if (unknown && unknown.code === 'unrecognized_keys') {
    throw new CommonException('unknown_field', `Unknown field(s): ${unknown.keys.join(', ')}`, { issues });
  }
  const first = issues[0];
  throw new CommonException(
    'validation_failed',
    `Invalid request body${first?.path ? ` at ${first.path}` : ''}: ${first?.message ?? 'bad value'}`,
    { issues },
  );
}

/** Validates a JSON body against a strict zod schema. */
export class ZodBody<T extends z.ZodType> implements PipeTransform<unknown, z.output<T>> {
  constructor(private readonly schema: T) {}
  transform(value: unknown): z.output<T> {
    if (value === undefined || value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new CommonException('invalid_request', 'A JSON object body is required');
    }
    return parseWith(this.schema, value);
  }
}

export class ZodQuery<T extends z.ZodType> implements PipeTransform<unknown, z.output<T>> {
  constructor(private readonly schema: T) {}
  transform(value: unknown): z.output<T> {
    return parseWith(this.schema, value ?? {});
  }
}

/** Path parameter that must be a UUID. */
export class UuidParam implements PipeTransform<string, string> {
  transform(value: string): string {
    if (!uuidSchema.safeParse(value).success)
      throw new CommonException('malformed_id', 'Malformed id in path');
    return value.toLowerCase();
  }
}

export class UserIdParam implements PipeTransform<string, string> {
  transform(value: string): string {
    if (!userIdSchema.safeParse(value).success)
      throw new CommonException('malformed_id', 'Malformed user id in path');
    return value;
  }
}

/** One OAuth scope token (RFC 6749 section 3.3). */
export const scopeTokenSchema = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'must be a valid OAuth scope token');
