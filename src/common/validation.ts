/** Request validation with zod: unknown fields and malformed ids are 400s with stable codes. */
import { type PipeTransform } from '@nestjs/common';
import { z } from 'zod';
import { CustosException } from './errors.js';

export const uuidSchema = z.uuid();

/**
 * The one rule for a free-text string that reaches the database or the audit trail: well-formed UTF-16
 * (no lone surrogates, which PostgreSQL refuses), no NUL or other control characters (tab excepted only where
 * `multiline` allows line breaks), and bounded length. Every schema and form field builds on this.
 */
const MULTILINE_PROBLEM = /(?![\t\n\r])\p{Cc}/u;
const SINGLE_LINE_PROBLEM = /\p{Cc}/u;

export function textProblem(value: string, multiline = false): string | null {
  // With the u flag, a surrogate pair reads as one code point; only a lone surrogate matches \p{Cs}.
  if (/\p{Cs}/u.test(value)) return 'must not contain lone surrogates';
  if ((multiline ? MULTILINE_PROBLEM : SINGLE_LINE_PROBLEM).test(value))
    return 'must not contain control characters';
  return null;
}

export function text(opts: { min?: number; max: number; multiline?: boolean; trim?: boolean }) {
  let s = z.string();
  if (opts.trim) s = s.trim();
  return s
    .min(opts.min ?? 1)
    .max(opts.max)
    .superRefine((v, ctx) => {
      const problem = textProblem(v, opts.multiline);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    });
}

/** External user ids are the identity provider's subject: printable, bounded. */
export const userIdSchema = z
  .string()
  .min(1)
  .max(255)
  .regex(/^[^\p{Cc}\p{Cs}]+$/u, 'must not contain control characters');

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
    throw new CustosException('unknown_field', `Unknown field(s): ${unknown.keys.join(', ')}`, { issues });
  }
  const first = issues[0];
  throw new CustosException(
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
      throw new CustosException('invalid_request', 'A JSON object body is required');
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
      throw new CustosException('malformed_id', 'Malformed id in path');
    return value.toLowerCase();
  }
}

export class UserIdParam implements PipeTransform<string, string> {
  transform(value: string): string {
    if (!userIdSchema.safeParse(value).success)
      throw new CustosException('malformed_id', 'Malformed user id in path');
    return value;
  }
}
