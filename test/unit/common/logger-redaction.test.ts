/**
 * Central redaction: what is secret is never written, at any depth pino can express, while error codes stay
 * readable (a field called `code` is an authorization code only in a query or form).
 */
import { Writable } from 'node:stream';
import { createLogger } from '../../../src/common/logger.js';

function capture() {
  const lines: Record<string, any>[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, any>);
      done();
    },
  });
  return { log: createLogger('info', out), lines };
}

it('redacts secrets at the top level and one and two levels down', () => {
  const { log, lines } = capture();
  log.info(
    {
      authorization: 'Bearer s3cret-1',
      req: { headers: { authorization: 'Bearer s3cret-2' } },
      tokens: { access_token: 's3cret-3', nested: { refresh_token: 's3cret-4' } },
      clientSecret: 's3cret-5',
    },
    'x',
  );
  const text = JSON.stringify(lines);
  for (const n of [1, 2, 3, 4, 5]) expect(text).not.toContain(`s3cret-${n}`);
  expect(lines[0].authorization).toBe('[redacted]');
  expect(lines[0].tokens.nested.refresh_token).toBe('[redacted]');
});

it('redacts an authorization code in a query or form, and keeps error codes', () => {
  const { log, lines } = capture();
  log.warn(
    {
      query: { code: 'auth-code-1', state: 'st' },
      callback: { body: { code: 'auth-code-2' } },
      err: { name: 'CustosException', code: 'key_unavailable' },
      code: 'temporarily_unavailable',
    },
    'y',
  );
  const text = JSON.stringify(lines);
  expect(text).not.toContain('auth-code-1');
  expect(text).not.toContain('auth-code-2');
  expect(lines[0].query.state).toBe('st');
  expect(lines[0].err.code).toBe('key_unavailable');
  expect(lines[0].code).toBe('temporarily_unavailable');
});
