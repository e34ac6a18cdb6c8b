/**
 * Readable logs on a terminal: JSON unless a person is watching (or pretty is asked for), and a pretty line
 * hides exactly what the JSON line hides.
 */
import {
  createLogger,
  logDestination,
  prettyDestination,
  requestContext,
  resolveLogFormat,
} from '../../../src/common/logger.js';
import { loadConfig } from '../../../src/config/config.js';

/** A stand-in for process.stdout that keeps what is written. */
function fakeStdout(isTTY: boolean) {
  const chunks: string[] = [];
  return { isTTY, write: (text: string) => chunks.push(text), text: () => chunks.join('') };
}

describe('resolveLogFormat', () => {
  it.each([
    ['auto', true, 'pretty'],
    ['auto', false, 'json'],
    ['json', true, 'json'],
    ['json', false, 'json'],
    ['pretty', true, 'pretty'],
    ['pretty', false, 'pretty'],
  ] as const)('gives %s with a terminal %s: %s', (format, tty, expected) => {
    expect(resolveLogFormat(format, tty)).toBe(expected);
  });
});

describe('CUSTOS_LOG_FORMAT', () => {
  it('defaults to auto, takes json and pretty, and refuses anything else naming the variable', () => {
    expect(loadConfig({}).logFormat).toBe('auto');
    expect(loadConfig({ CUSTOS_LOG_FORMAT: 'json' }).logFormat).toBe('json');
    expect(loadConfig({ CUSTOS_LOG_FORMAT: 'pretty' }).logFormat).toBe('pretty');
    expect(() => loadConfig({ CUSTOS_LOG_FORMAT: 'text' })).toThrow(/^CUSTOS_LOG_FORMAT is invalid/);
  });
});

describe('logDestination', () => {
  it("leaves JSON to pino's own stdout destination when stdout is not a terminal", () => {
    expect(logDestination('auto', fakeStdout(false))).toBeUndefined();
    expect(logDestination('json', fakeStdout(false))).toBeUndefined();
  });

  it('keeps JSON on a terminal when CUSTOS_LOG_FORMAT=json', () => {
    expect(logDestination('json', fakeStdout(true))).toBeUndefined();
  });

  it('writes pretty lines to a terminal', () => {
    const out = fakeStdout(true);
    const log = createLogger('info', logDestination('auto', out));
    log.info({ route: '/healthz' }, 'Custos is listening');
    expect(out.text()).toMatch(/INFO.*Custos is listening/);
    expect(out.text()).toContain('/healthz');
    expect(() => JSON.parse(out.text()) as unknown).toThrow();
  });

  it('writes pretty lines without colours to a pipe when pretty is asked for', () => {
    const out = fakeStdout(false);
    const log = createLogger('info', logDestination('pretty', out));
    log.warn('a warning');
    expect(out.text()).toMatch(/WARN.*a warning/);
    // eslint-disable-next-line no-control-regex -- an ANSI colour sequence is what must be absent
    expect(out.text()).not.toMatch(/\u001b\[/);
  });
});

describe('prettyDestination', () => {
  it('keeps secrets redacted in pretty lines, at every depth and in a query', () => {
    const out = fakeStdout(false);
    const log = createLogger('info', prettyDestination(out, false));
    log.info(
      {
        authorization: 'Bearer s3cret-1',
        req: { headers: { authorization: 'Bearer s3cret-2' } },
        tokens: { access_token: 's3cret-3', nested: { refresh_token: 's3cret-4' } },
        clientSecret: 's3cret-5',
        query: { code: 's3cret-6', state: 'st' },
        err: { name: 'CustosException', code: 'key_unavailable' },
      },
      'redaction',
    );
    const text = out.text();
    for (const n of [1, 2, 3, 4, 5, 6]) expect(text).not.toContain(`s3cret-${n}`);
    expect(text).toMatch(/authorization: "\[redacted\]"/);
    expect(text).toMatch(/"refresh_token": "\[redacted\]"/);
    // What is not secret stays readable.
    expect(text).toContain('key_unavailable');
    expect(text).toContain('"st"');
  });

  it('writes each line at once, so the last line before process.exit() is not lost', () => {
    const out = fakeStdout(false);
    const log = createLogger('info', prettyDestination(out, false));
    log.info({ signal: 'SIGTERM' }, 'Custos stopped');
    expect(out.text()).toContain('Custos stopped');
  });

  it('keeps the request id on every line', () => {
    const out = fakeStdout(false);
    const log = createLogger('info', prettyDestination(out, false));
    requestContext.run({ requestId: 'req-42' }, () => log.info('inside a request'));
    expect(out.text()).toContain('req-42');
  });
});
