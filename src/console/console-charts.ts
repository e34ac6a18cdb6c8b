/**
 * The audit page's charts, drawn on the server as inline SVG (no script, no chart library; the CSP allows
 * nothing else): credential releases and denials over time, stacked per bucket, and per connector or provider
 * as horizontal bars. Each chart has a text alternative and its numbers as a table.
 */
import type { Bucket, ExchangeCount } from './console-reads.repository.js';
import { html, type Html } from './html.js';

const RELEASED_FILL = '#1a7f37';
const DENIED_FILL = '#cf222e';

const BUCKET_MS: Record<Bucket, number> = { hour: 3_600_000, day: 86_400_000, week: 7 * 86_400_000 };

/** The bucket for a range: hours up to two days, days up to 92 days, weeks beyond. */
export function bucketFor(from: Date, to: Date): Bucket {
  const span = to.getTime() - from.getTime();
  if (span <= 2 * BUCKET_MS.day) return 'hour';
  if (span <= 92 * BUCKET_MS.day) return 'day';
  return 'week';
}

/** The start of the bucket holding `d`, as PostgreSQL's date_trunc in UTC computes it (weeks start on Monday). */
export function bucketStart(d: Date, bucket: Bucket): Date {
  const t = new Date(d);
  t.setUTCMinutes(0, 0, 0);
  if (bucket === 'hour') return t;
  t.setUTCHours(0);
  if (bucket === 'day') return t;
  const sinceMonday = (t.getUTCDay() + 6) % 7;
  return new Date(t.getTime() - sinceMonday * BUCKET_MS.day);
}

/** Every bucket of the range with its counts, zeros included. */
export function fillBuckets(
  from: Date,
  to: Date,
  bucket: Bucket,
  series: (ExchangeCount & { at: Date })[],
): (ExchangeCount & { at: Date })[] {
  const byStart = new Map(series.map((s) => [s.at.getTime(), s]));
  const out: (ExchangeCount & { at: Date })[] = [];
  for (let t = bucketStart(from, bucket).getTime(); t < to.getTime(); t += BUCKET_MS[bucket]) {
    const hit = byStart.get(t);
    out.push({ at: new Date(t), released: hit?.released ?? 0, denied: hit?.denied ?? 0 });
  }
  return out;
}

/** A round axis maximum at or above `n`: 1, 2 or 5 times a power of ten (at least 1). */
export function niceMax(n: number): number {
  if (n <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 5, 10]) if (m * p >= n) return m * p;
  return 10 * p;
}

export function bucketLabel(d: Date, bucket: Bucket): string {
  const iso = d.toISOString();
  return bucket === 'hour' ? `${iso.slice(0, 10)} ${iso.slice(11, 16)}` : iso.slice(0, 10);
}

const legend = html`<ul class="legend">
  <li class="released">Released</li>
  <li class="denied">Denied</li>
</ul>`;

function countsTable(caption: string, head: string, rows: { label: string; c: ExchangeCount }[]): Html {
  return html`<details>
    <summary>${caption} as a table</summary>
    <table>
      <thead>
        <tr>
          <th scope="col">${head}</th>
          <th scope="col">Released</th>
          <th scope="col">Denied</th>
        </tr>
      </thead>
      <tbody>
        ${rows.map(
          (r) =>
            html`<tr>
              <td>${r.label}</td>
              <td>${r.c.released}</td>
              <td>${r.c.denied}</td>
            </tr>`,
        )}
      </tbody>
    </table>
  </details>`;
}

/** Releases and denials per bucket, stacked. */
export function timeChart(
  id: string,
  caption: string,
  buckets: (ExchangeCount & { at: Date })[],
  bucket: Bucket,
): Html {
  const W = 1100;
  const H = 240;
  const left = 44;
  const right = 8;
  const top = 10;
  const bottom = 26;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const max = niceMax(Math.max(0, ...buckets.map((b) => b.released + b.denied)));
  const step = plotW / Math.max(1, buckets.length);
  const barW = Math.max(1, step * 0.75);
  const y = (v: number) => top + plotH - (v / max) * plotH;
  const r1 = (v: number) => Math.round(v * 10) / 10;
  const totals = buckets.reduce(
    (a, b) => ({ released: a.released + b.released, denied: a.denied + b.denied }),
    { released: 0, denied: 0 },
  );
  const bars = buckets.map((b, i) => {
    const x = r1(left + i * step + (step - barW) / 2);
    const hr = (b.released / max) * plotH;
    const hd = (b.denied / max) * plotH;
    const label = `${bucketLabel(b.at, bucket)}: ${b.released} released, ${b.denied} denied`;
    return html`<g
      ><title>${label}</title>${
        b.released > 0
          ? html`<rect
              class="released"
              x="${x}"
              y="${r1(top + plotH - hr)}"
              width="${r1(barW)}"
              height="${r1(hr)}"
              fill="${RELEASED_FILL}"
            />`
          : ''
      }${
        b.denied > 0
          ? html`<rect
              class="denied"
              x="${x}"
              y="${r1(top + plotH - hr - hd)}"
              width="${r1(barW)}"
              height="${r1(hd)}"
              fill="${DENIED_FILL}"
            />`
          : ''
      }</g
    >`;
  });
  const ticks = (max % 2 === 0 ? [0, max / 2, max] : [0, max]).map(
    (v) =>
      html`<line
          x1="${left}"
          x2="${W - right}"
          y1="${r1(y(v))}"
          y2="${r1(y(v))}"
          stroke="#8888"
          stroke-width="1"
        /><text x="${left - 6}" y="${r1(y(v) + 4)}" text-anchor="end">${v}</text>`,
  );
  const labelAt = [0, Math.floor((buckets.length - 1) / 2), buckets.length - 1].filter(
    (i, k, all) => i >= 0 && i < buckets.length && all.indexOf(i) === k,
  );
  const anchor = (i: number) => (i === 0 ? 'start' : i === buckets.length - 1 ? 'end' : 'middle');
  const xAt = (i: number) =>
    i === 0 ? left : i === buckets.length - 1 ? W - right : left + i * step + step / 2;
  const xLabels = labelAt.map(
    (i) =>
      html`<text x="${r1(xAt(i))}" y="${H - 8}" text-anchor="${anchor(i)}"
        >${bucketLabel(buckets[i].at, bucket)}</text
      >`,
  );
  const summary = `${totals.released} released and ${totals.denied} denied from ${
    buckets.length > 0 ? bucketLabel(buckets[0].at, bucket) : ''
  } to ${buckets.length > 0 ? bucketLabel(buckets[buckets.length - 1].at, bucket) : ''}, per ${bucket}`;
  return html`<figure id="${id}">
    <figcaption id="${id}-caption">${caption}</figcaption>
    <svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-labelledby="${id}-caption ${id}-summary">
      <desc id="${id}-summary">${summary}</desc>
      ${ticks}${bars}${xLabels}
    </svg>
    ${legend}
    ${countsTable(
      caption,
      bucket === 'hour' ? 'Hour (UTC)' : bucket === 'day' ? 'Day (UTC)' : 'Week from (UTC)',
      buckets.map((b) => ({ label: bucketLabel(b.at, bucket), c: b })),
    )}
  </figure>`;
}

/** Releases and denials per connector or provider, one stacked horizontal bar each. */
export function breakdownChart(
  id: string,
  caption: string,
  head: string,
  rows: { label: string; c: ExchangeCount }[],
): Html {
  const W = 600;
  const rowH = 26;
  const labelW = 170;
  const countW = 80;
  const top = 6;
  const H = top * 2 + Math.max(1, rows.length) * rowH;
  const plotW = W - labelW - countW;
  const max = niceMax(Math.max(0, ...rows.map((r) => r.c.released + r.c.denied)));
  const r1 = (v: number) => Math.round(v * 10) / 10;
  const short = (s: string) => (s.length > 28 ? `${s.slice(0, 27)}…` : s);
  const bars = rows.map((r, i) => {
    const y = top + i * rowH;
    const wr = (r.c.released / max) * plotW;
    const wd = (r.c.denied / max) * plotW;
    return html`<g
      ><title>${r.label}: ${r.c.released} released, ${r.c.denied} denied</title>
      <text x="${labelW - 8}" y="${y + 17}" text-anchor="end">${short(r.label)}</text>${
        r.c.released > 0
          ? html`<rect
              class="released"
              x="${labelW}"
              y="${y + 4}"
              width="${r1(wr)}"
              height="${rowH - 8}"
              fill="${RELEASED_FILL}"
            />`
          : ''
      }${
        r.c.denied > 0
          ? html`<rect
              class="denied"
              x="${r1(labelW + wr)}"
              y="${y + 4}"
              width="${r1(wd)}"
              height="${rowH - 8}"
              fill="${DENIED_FILL}"
            />`
          : ''
      }<text x="${r1(labelW + wr + wd + 6)}" y="${y + 17}">${r.c.released} / ${r.c.denied}</text></g
    >`;
  });
  const summary =
    rows.length === 0
      ? 'No credential requests in this range'
      : rows.map((r) => `${r.label}: ${r.c.released} released, ${r.c.denied} denied`).join('; ');
  return html`<figure id="${id}">
    <figcaption id="${id}-caption">${caption}</figcaption>
    <svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-labelledby="${id}-caption ${id}-summary">
      <desc id="${id}-summary">${summary}</desc>
      ${rows.length === 0 ? html`<text x="${labelW}" y="${top + 17}">No credential requests in this range</text>` : bars}
    </svg>
    ${legend} ${countsTable(caption, head, rows)}
  </figure>`;
}
