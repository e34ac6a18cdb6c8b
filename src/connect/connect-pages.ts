/**
 * The hosted connect pages: server-rendered HTML, no script, no third-party assets, inline stylesheets allowed
 * by their hashes in a strict Content-Security-Policy (the tenant's colour is a second, generated stylesheet;
 * its logo an image from 'self'). Every value is escaped. Accessible: a language, a title, labelled fields,
 * visible focus, AA contrast (the text on the tenant's colour is black or white, whichever reads), and a
 * layout that works on a phone. Every page that ends a step says what happened and what to do next.
 */
import { createHash } from 'node:crypto';

const STYLE = `
:root{color-scheme:light dark;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
body{margin:0;background:#f4f5f7;color:#111}
main{max-width:28rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:.75rem;box-shadow:0 1px 3px #0002;border-top:.4rem solid var(--brand,#0b57d0)}
.brand{display:flex;align-items:center;gap:.75rem;margin:0 0 1.25rem;font-weight:600;font-size:1.05rem}
.brand img{display:block;max-height:2.5rem;max-width:10rem;width:auto;height:auto}
h1{font-size:1.35rem;margin:0 0 1rem}
p,li{line-height:1.5}
ul{padding-left:1.25rem}
code.scope{font-size:.8rem;color:#444}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input[type=password],input[type=text]{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;border:1px solid #555;border-radius:.4rem}
button,a.button{display:block;box-sizing:border-box;margin-top:1rem;width:100%;padding:.75rem;font-size:1rem;font-weight:600;text-align:center;text-decoration:none;color:var(--on-brand,#fff);background:var(--brand,#0b57d0);border:0;border-radius:.4rem;cursor:pointer}
a{color:#0b57d0}
a.secondary{display:block;margin-top:1rem;text-align:center}
button:focus-visible,input:focus-visible,a:focus-visible{outline:3px solid #e37400;outline-offset:2px}
.error{color:#a50e0e;font-weight:600}
.muted{color:#444;font-size:.9rem}
h2{font-size:1.1rem;margin:0 0 .25rem}
.item{border-top:1px solid #ccc;padding:1rem 0 .5rem}
.item p{margin:.35rem 0}
.warn{color:#8a4b00;font-weight:600}
.actions{display:flex;flex-wrap:wrap;gap:.5rem}
.actions form{margin:0}
.actions button{width:auto;margin-top:.5rem;padding:.5rem 1rem;font-size:.95rem}
button.danger{color:#a50e0e;background:transparent;border:2px solid currentColor}
button.secondary{color:#0b57d0;background:transparent;border:1px solid currentColor}
@media (prefers-color-scheme:dark){body{background:#111;color:#eee}main{background:#1d1d1f}.muted,code.scope{color:#bbb}.error,button.danger{color:#ff8a80}a,button.secondary{color:#8ab4f8}.item{border-color:#444}.warn{color:#ffb74d}input[type=password],input[type=text]{background:#000;color:#eee;border-color:#aaa}}
`;
const STYLE_HASH = createHash('sha256').update(STYLE).digest('base64');

/** How a tenant's pages look: the name they show, and its colour and logo when it has them. */
export interface PageBranding {
  name: string;
  /** `#rrggbb` (validated when it was set). */
  color: string | null;
  logo: { url: string; width: number; height: number } | null;
}

/** A way forward from a page: a link (a "try again" or "back to the app"); the first one is the main one. */
export interface PageAction {
  href: string;
  label: string;
}

export function escapeHtml(value: string): string {
  return value
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

const COLOR = /^#[0-9a-f]{6}$/;

/** WCAG relative luminance of `#rrggbb`. */
function luminance(color: string): number {
  const [r, g, b] = [1, 3, 5].map((i) => {
    const c = parseInt(color.slice(i, i + 2), 16) / 255;
    return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

/**
 * The text colour on a tenant's colour: white when it reaches the AA contrast of 4.5:1, else black (one of
 * the two always reaches it).
 */
export function textOn(color: string): '#ffffff' | '#000000' {
  return 1.05 / (luminance(color) + 0.05) >= 4.5 ? '#ffffff' : '#000000';
}

/** The generated stylesheet of a tenant's colour, or null for none (only a validated colour gets one). */
function brandStyle(brand: PageBranding | undefined): string | null {
  const color = brand?.color?.toLowerCase();
  if (!color || !COLOR.test(color)) return null;
  return `:root{--brand:${color};--on-brand:${textOn(color)}}`;
}

const hashOf = (css: string) => `'sha256-${createHash('sha256').update(css).digest('base64')}'`;

/**
 * The security headers of every hosted page; `formTargets` are the origins a form here may lead to, and
 * `brand` adds the hash of its colour's stylesheet and, with a logo, images from 'self'.
 */
export function pageHeaders(formTargets: string[] = [], brand?: PageBranding): Record<string, string> {
  const formAction = ["'self'", ...formTargets].join(' ');
  const extraStyle = brandStyle(brand);
  return {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    pragma: 'no-cache',
    'referrer-policy': 'no-referrer',
    'x-frame-options': 'DENY',
    'x-content-type-options': 'nosniff',
    'cross-origin-opener-policy': 'same-origin',
    'content-security-policy': [
      "default-src 'none'",
      `style-src 'sha256-${STYLE_HASH}'${extraStyle ? ` ${hashOf(extraStyle)}` : ''}`,
      ...(brand?.logo ? ["img-src 'self'"] : []),
      `form-action ${formAction}`,
      "frame-ancestors 'none'",
      "base-uri 'none'",
    ].join('; '),
  };
}

export function page(title: string, body: string, brand?: PageBranding): string {
  const extraStyle = brandStyle(brand);
  const header = brand
    ? `<header class="brand">${
        brand.logo
          ? `<img src="${escapeHtml(brand.logo.url)}" alt="" width="${brand.logo.width}" height="${brand.logo.height}">`
          : ''
      }<span>${escapeHtml(brand.name)}</span></header>\n`
    : '';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${escapeHtml(brand ? `${title} · ${brand.name}` : title)}</title>
<style>${STYLE}</style>${extraStyle ? `\n<style>${extraStyle}</style>` : ''}
</head>
<body>
<main>
${header}${body}
</main>
</body>
</html>
`;
}

/** A scope as the page shows it: the provider's words for it when its definition has them, else the token. */
export interface ShownScope {
  scope: string;
  description?: string;
}

export interface ConnectPageModel {
  tenantName: string;
  providerName: string;
  scopes: ShownScope[];
  /** OAuth: a button that starts the authorization; API key: a form. */
  mode: 'oauth2' | 'api_key';
  action: string;
  csrfToken: string;
  error?: string;
  brand?: PageBranding;
}

function scopeItem(s: ShownScope): string {
  return s.description
    ? `<li>${escapeHtml(s.description)} <code class="scope">${escapeHtml(s.scope)}</code></li>`
    : `<li><code>${escapeHtml(s.scope)}</code></li>`;
}

export function connectPage(m: ConnectPageModel): string {
  const scopes =
    m.scopes.length > 0 ? `<p>It will be able to:</p><ul>${m.scopes.map(scopeItem).join('')}</ul>` : '';
  const error = m.error ? `<p class="error" role="alert">${escapeHtml(m.error)}</p>` : '';
  const form =
    m.mode === 'oauth2'
      ? `<form method="post" action="${escapeHtml(m.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(m.csrfToken)}">
<button type="submit" autofocus>Continue to ${escapeHtml(m.providerName)}</button>
</form>`
      : `<form method="post" action="${escapeHtml(m.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(m.csrfToken)}">
<label for="apiKey">Your ${escapeHtml(m.providerName)} API key</label>
<input id="apiKey" name="apiKey" type="password" autocomplete="off" required autofocus spellcheck="false">
<button type="submit">Connect</button>
</form>`;
  return page(
    `Connect ${m.providerName}`,
    `<h1>Connect your ${escapeHtml(m.providerName)} account</h1>
<p><strong>${escapeHtml(m.tenantName)}</strong> asks to use your own ${escapeHtml(m.providerName)} access on your behalf.</p>
${scopes}${error}${form}
<p class="muted">Your credential is stored encrypted. You can disconnect it later on your “My connections” page: ask ${escapeHtml(m.tenantName)} for a link to it.</p>`,
    m.brand,
  );
}

/** A page that ends a step: what happened, and the ways forward (the first one as the main button). */
export function outcomePage(m: {
  title: string;
  message: string;
  isError?: boolean;
  actions?: PageAction[];
  reference?: string;
  brand?: PageBranding;
}): string {
  const ref =
    m.reference === undefined
      ? ''
      : `<p class="muted">Reference for your administrator: <code>${escapeHtml(m.reference)}</code></p>`;
  const actions = (m.actions ?? [])
    .map(
      (a, i) =>
        `<a class="${i === 0 ? 'button' : 'secondary'}" href="${escapeHtml(a.href)}">${escapeHtml(a.label)}</a>`,
    )
    .join('\n');
  return page(
    m.title,
    `<h1>${escapeHtml(m.title)}</h1><p${m.isError ? ' class="error" role="alert"' : ''}>${escapeHtml(m.message)}</p>${ref}${actions ? `\n${actions}` : ''}`,
    m.brand,
  );
}

export function messagePage(title: string, message: string, isError = false, reference?: string): string {
  return outcomePage({ title, message, isError, reference });
}

/**
 * What a hosted page says when a request fails outside the flow's own pages (an outage, an unexpected error,
 * a request the edge refused): what happened and what to do next, by status, never the cause itself. A 5xx
 * other than 503 shows the request id, which the log line of the failure carries too.
 */
export function hostedErrorPage(
  status: number,
  requestId: string,
): { title: string; message: string; reference?: string } {
  const again = 'Start again from your link.';
  if (status === 503) {
    return {
      title: 'Temporarily unavailable',
      message:
        'This service has a temporary problem. Nothing was changed. Please try again in a few minutes with the same link.',
    };
  }
  if (status >= 500) {
    return {
      title: 'Something went wrong',
      message: `An unexpected error stopped this step. ${again} If it happens again, contact your administrator and quote the reference below.`,
      reference: requestId,
    };
  }
  switch (status) {
    case 429:
      return {
        title: 'Too many attempts',
        message: 'Please wait a moment, then try again with the same link.',
      };
    case 413:
      return { title: 'Too much data', message: `The form sent too much data. ${again}` };
    case 404:
      return {
        title: 'Page not found',
        message: `This address does not exist. Check that you opened the whole link you were given, or ${again.toLowerCase()}`,
      };
    case 401:
    case 403:
      return { title: 'Not allowed', message: `This request is not allowed. ${again}` };
    default:
      return { title: 'Request not understood', message: `This address or form is not valid. ${again}` };
  }
}

export function signInPage(m: {
  tenantName: string;
  providerName: string;
  identityProviderName: string;
  action: string;
  csrfToken: string;
  brand?: PageBranding;
}): string {
  return page(
    `Connect ${m.providerName}`,
    `<h1>Connect your ${escapeHtml(m.providerName)} account</h1>
<p><strong>${escapeHtml(m.tenantName)}</strong> first needs to check who you are.</p>
<form method="post" action="${escapeHtml(m.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(m.csrfToken)}">
<button type="submit" autofocus>Sign in with ${escapeHtml(m.identityProviderName)}</button>
</form>`,
    m.brand,
  );
}
