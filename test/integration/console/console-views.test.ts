/**
 * The console's pure parts, without a server: the escaping template, the date rule of its filters, the
 * charts' buckets (which must match PostgreSQL's date_trunc), and the key backend page for a migration that is
 * failing (a state the other tests reach only with a failing KMS or Vault).
 */
import { bucketFor, bucketStart, fillBuckets, niceMax } from '../../../src/console/console-charts.js';
import { keyBackendBody } from '../../../src/console/console-pages.js';
import { parseUtc } from '../../../src/console/console.dto.js';
import { escapeHtml, html, join, query } from '../../../src/console/html.js';
import { flatten } from './console-client.js';

describe('html', () => {
  it('escapes every interpolated value, in text and attributes, and passes its own markup through', () => {
    const evil = `"><script>alert('x')</script>&`;
    const out = html`<a title="${evil}">${evil}</a>${html`<b>${evil}</b>`}${[evil, html`<i>ok</i>`]}`.markup;
    const e = '&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;';
    expect(out).toBe(`<a title="${e}">${e}</a><b>${e}</b>${e}<i>ok</i>`);
    expect(html`${null}${undefined}${false}${true}${0}${12n}`.markup).toBe('012');
    expect(join(['<a>', html`<b></b>`], ' & ').markup).toBe('&lt;a&gt; &amp; <b></b>');
  });

  it('replaces control characters and lone surrogates, keeping tabs, line breaks and pairs', () => {
    expect(escapeHtml('a\u0000b\u0007c\u007f\u0085d\ud800e\udfff')).toBe(
      'a\ufffdb\ufffdc\ufffd\ufffdd\ufffde\ufffd',
    );
    expect(escapeHtml('a\tb\nc\r🚀')).toBe('a\tb\nc\r🚀');
  });

  it('builds query strings percent-encoded, leaving out empty values', () => {
    expect(query({ user: 'a b&c=d', provider: undefined, status: '', n: 2 })).toBe('?user=a+b%26c%3Dd&n=2');
    expect(query({})).toBe('');
  });
});

describe('the date rule of the filters', () => {
  it('reads days and minutes as UTC and refuses impossible dates', () => {
    expect(parseUtc('2026-03-01')?.toISOString()).toBe('2026-03-01T00:00:00.000Z');
    expect(parseUtc('2026-03-01T13:45')?.toISOString()).toBe('2026-03-01T13:45:00.000Z');
    expect(parseUtc('2026-03-01T13:45:07Z')?.toISOString()).toBe('2026-03-01T13:45:07.000Z');
    for (const bad of [
      '2026-02-30',
      '2026-13-01',
      '2026-03-01T24:00',
      '1999-12-31',
      '3000-01-01',
      '2026-3-1',
      '',
    ]) {
      expect([bad, parseUtc(bad)]).toEqual([bad, null]);
    }
  });
});

describe('the charts', () => {
  it('bucket by hour, day or week as date_trunc does in UTC (weeks from Monday)', () => {
    const d = new Date('2026-12-03T17:42:10Z'); // a Thursday
    expect(bucketStart(d, 'hour').toISOString()).toBe('2026-12-03T17:00:00.000Z');
    expect(bucketStart(d, 'day').toISOString()).toBe('2026-12-03T00:00:00.000Z');
    expect(bucketStart(d, 'week').toISOString()).toBe('2026-11-30T00:00:00.000Z');
    const day = 86_400_000;
    expect(bucketFor(new Date(0), new Date(2 * day))).toBe('hour');
    expect(bucketFor(new Date(0), new Date(92 * day))).toBe('day');
    expect(bucketFor(new Date(0), new Date(93 * day))).toBe('week');
    expect([0, 1, 3, 7, 10, 11, 99, 101].map(niceMax)).toEqual([1, 1, 5, 10, 10, 20, 100, 200]);
  });

  it('fill every bucket of the range, zeros included', () => {
    const filled = fillBuckets(new Date('2026-12-01T00:00:00Z'), new Date('2026-12-04T00:00:00Z'), 'day', [
      { at: new Date('2026-12-02T00:00:00Z'), released: 3, denied: 1 },
    ]);
    expect(filled.map((b) => [b.at.toISOString().slice(0, 10), b.released, b.denied])).toEqual([
      ['2026-12-01', 0, 0],
      ['2026-12-02', 3, 1],
      ['2026-12-03', 0, 0],
    ]);
  });
});

describe('the key backend page', () => {
  it('shows a failing migration’s progress, its last error and when it is tried again', () => {
    const page = flatten(
      keyBackendBody({
        view: {
          type: 'aws-kms',
          settings: { keyId: 'arn:aws:kms:us-east-1:111122223333:key/<x>', region: 'us-east-1' },
          status: 'migration_failed',
          dataKeys: { total: 8, onCurrentBackend: 3 },
          configuredAt: '2026-12-01T10:00:00.000Z',
          migration: {
            startedAt: '2026-12-01T10:00:00.000Z',
            attempts: 4,
            failingSince: '2026-12-01T10:05:00.000Z',
            lastAttemptAt: '2026-12-01T11:00:00.000Z',
            nextAttemptAt: '2026-12-01T11:30:00.000Z',
            lastError: {
              code: 'key_unavailable',
              reason: 'access_denied',
              side: 'target',
              message: 'KMS said <no>',
            },
          },
          awsExternalId: 'custos-ext-1',
        },
        viewer: { keyName: 'ops', role: 'auditor', csrf: 'c' },
        canAct: false,
      }).markup,
    );
    expect(page).toContain('<span class="badge bad">migration failing</span>');
    expect(page).toContain('<progress value="3" max="8"');
    expect(page).toContain('3 of 8 data keys');
    expect(page).toContain('<code>key_unavailable</code>(access_denied, target side): KMS said &lt;no&gt;');
    expect(page).toContain('<time datetime="2026-12-01T11:30:00.000Z">2026-12-01 11:30 UTC</time>');
    expect(page).toContain('<code>arn:aws:kms:us-east-1:111122223333:key/&lt;x&gt;</code>');
    expect(page).toContain('<code>custos-ext-1</code>');
    // An auditor's page: no actions.
    expect(page).not.toContain('<form');
  });
});
