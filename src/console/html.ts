/**
 * The console's one way to write HTML: the `html` template tag escapes every value it is given, unless the value
 * is itself markup made by `html` (an `Html`). There is no other way to put text into a page, so a value from the
 * database, a query string or a form is escaped wherever it lands, in text or in a double-quoted attribute.
 */

/** Markup that is safe as it is: only `html` and `join` make it. */
export class Html {
  constructor(readonly markup: string) {}

  toString(): string {
    return this.markup;
  }
}

/** What a template may interpolate: text (escaped), markup, numbers, lists of these, or nothing. */
export type HtmlValue = Html | string | number | bigint | boolean | null | undefined | readonly HtmlValue[];

/**
 * Text as HTML, for element content and double-quoted attribute values alike: the five characters that
 * matter, plus what has no business in a page (control characters other than tab and line breaks, and lone
 * surrogates), which becomes U+FFFD rather than a character reference a browser would refuse.
 */
export function escapeHtml(value: string): string {
  return value
    .replace(/(?![\t\n\r])\p{Cc}|\p{Cs}/gu, '\ufffd')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

function render(value: HtmlValue): string {
  if (value instanceof Html) return value.markup;
  if (value === null || value === undefined || value === false || value === true) return '';
  if (Array.isArray(value)) return (value as readonly HtmlValue[]).map(render).join('');
  return escapeHtml(String(value));
}

/** The template tag: `html\`<td>${userId}</td>\`` escapes `userId`; nested `html` results pass through. */
export function html(strings: TemplateStringsArray, ...values: HtmlValue[]): Html {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1];
  return new Html(out);
}

/** Joins pieces of markup (and escaped text) with a separator, itself text. */
export function join(items: readonly HtmlValue[], separator: string): Html {
  return new Html(items.map(render).join(escapeHtml(separator)));
}

/**
 * A query string for a console link: each value percent-encoded (then escaped as part of the attribute by
 * `html`); empty and missing values are left out.
 */
export function query(params: Record<string, string | number | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') search.set(k, String(v));
  }
  const s = search.toString();
  return s ? `?${s}` : '';
}
