/**
 * The error model: every domain's code list is registered in the one mapping, no code belongs to two
 * domains, every code has a status, and the API guide's error table (docs/api.md) says what the mapping does.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { CommonException, CustosException } from '../../../src/common/errors.js';
import { CryptoException } from '../../../src/crypto/crypto.errors.js';
import { DOMAIN_ERROR_CODES, ERROR_CODES, isErrorCode, statusFor } from '../../../src/http/error-codes.js';
import { mapError } from '../../../src/http/exception.filter.js';

const SRC = join(__dirname, '../../../src');

function errorFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? errorFiles(join(dir, e.name))
      : e.name.endsWith('.errors.ts') || (e.name === 'errors.ts' && dir.endsWith('common'))
        ? [relative(SRC, join(dir, e.name))]
        : [],
  );
}

describe('error codes', () => {
  it('registers every errors file of src/ with the code list it exports', async () => {
    const files = errorFiles(SRC).sort();
    expect(files).toEqual(Object.keys(DOMAIN_ERROR_CODES).sort());
    for (const file of files) {
      const mod = (await import(join(SRC, file))) as Record<string, unknown>;
      const lists = Object.entries(mod).filter(([name]) => name.endsWith('_ERROR_CODES'));
      expect(lists).toHaveLength(1);
      expect(lists[0][1]).toEqual(DOMAIN_ERROR_CODES[file]);
    }
  });

  it('gives each code to one domain only', () => {
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
  });

  it('maps every code to a 4xx or 5xx status', () => {
    for (const code of ERROR_CODES) {
      const status = statusFor(code);
      expect(status).toBeGreaterThanOrEqual(400);
      expect(status).toBeLessThan(600);
    }
  });

  it('matches the error table of docs/api.md, status by status', () => {
    const readme = readFileSync(join(SRC, '../docs/api.md'), 'utf8');
    const start = readme.indexOf('| Status | Codes');
    expect(start).toBeGreaterThan(0);
    const section = readme.slice(start, readme.indexOf('\n\n', start));
    const table = new Map<number, string[]>();
    for (const m of section.matchAll(/^\| (\d{3}) +\| (.*)\|$/gm)) {
      table.set(
        Number(m[1]),
        [...m[2].matchAll(/`([a-z_]+)`/g)].map((c) => c[1]),
      );
    }
    const byStatus = new Map<number, string[]>();
    for (const code of ERROR_CODES)
      byStatus.set(statusFor(code), [...(byStatus.get(statusFor(code)) ?? []), code]);
    expect([...table.keys()].sort()).toEqual([...byStatus.keys()].sort());
    for (const [status, codes] of byStatus) expect(table.get(status)?.sort()).toEqual(codes.sort());
  });

  it('answers a domain exception with its code and status', () => {
    const mapped = mapError(new CryptoException('key_unavailable', 'the key backend is down'));
    expect(mapped).toMatchObject({ status: 503, error: 'key_unavailable' });
    expect(mapError(new CommonException('conflict', 'taken', { id: 'x' }))).toMatchObject({
      status: 409,
      error: 'conflict',
      details: { id: 'x' },
    });
  });

  it('answers a code from no list as an internal error, without its message', () => {
    const forged = new CustosException('made_up', 'secret-looking detail');
    expect(isErrorCode(forged.code)).toBe(false);
    expect(mapError(forged)).toEqual({ status: 500, error: 'internal_error', message: 'Internal error' });
  });
});
