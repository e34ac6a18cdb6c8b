/**
 * The hosted connect pages: server-rendered HTML, no script, no third-party assets, one inline stylesheet
 * allowed by its hash in a strict Content-Security-Policy. Every value is escaped. Accessible: a language,
 * a title, labelled fields, visible focus, AA contrast, and a layout that works on a phone.
 */
import { createHash } from 'node:crypto';

const STYLE = `
:root{color-scheme:light dark;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
body{margin:0;background:#f4f5f7;color:#111}
main{max-width:28rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:.75rem;box-shadow:0 1px 3px #0002}
h1{font-size:1.35rem;margin:0 0 1rem}
p,li{line-height:1.5}
ul{padding-left:1.25rem}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input[type=password],input[type=text]{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;border:1px solid #555;border-radius:.4rem}
button{margin-top:1rem;width:100%;padding:.75rem;font-size:1rem;font-weight:600;color:#fff;background:#0b57d0;border:0;border-radius:.4rem;cursor:pointer}
button:focus-visible,input:focus-visible{outline:3px solid #e37400;outline-offset:2px}
.error{color:#a50e0e;font-weight:600}
.muted{color:#444;font-size:.9rem}
@media (prefers-color-scheme:dark){body{background:#111;color:#eee}main{background:#1d1d1f}.muted{color:#bbb}.error{color:#ff8a80}input[type=password],input[type=text]{background:#000;color:#eee;border-color:#aaa}}
`;
const STYLE_HASH = createHash('sha256').update(STYLE).digest('base64');

export function escapeHtml(value: string): string {
  return value
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

/** The security headers of every hosted page; `formTargets` are the origins a form here may lead to. */
export function pageHeaders(formTargets: string[] = []): Record<string, string> {
  const formAction = ["'self'", ...formTargets].join(' ');
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
      `style-src 'sha256-${STYLE_HASH}'`,
      `form-action ${formAction}`,
      "frame-ancestors 'none'",
      "base-uri 'none'",
    ].join('; '),
  };
}

export function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
${body}
</main>
</body>
</html>
`;
}

export interface ConnectPageModel {
  tenantName: string;
  providerName: string;
  scopes: string[];
  /** OAuth: a button that starts the authorization; API key: a form. */
  mode: 'oauth2' | 'api_key';
  action: string;
  csrfToken: string;
  error?: string;
}

export function connectPage(m: ConnectPageModel): string {
  const scopes =
    m.scopes.length > 0
      ? `<p>It will be able to:</p><ul>${m.scopes.map((s) => `<li><code>${escapeHtml(s)}</code></li>`).join('')}</ul>`
      : '';
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
<p class="muted">Your credential is stored encrypted. You can disconnect at any time.</p>`,
  );
}

export function messagePage(title: string, message: string, isError = false, reference?: string): string {
  const ref =
    reference === undefined
      ? ''
      : `<p class="muted">Reference for your administrator: <code>${escapeHtml(reference)}</code></p>`;
  return page(
    title,
    `<h1>${escapeHtml(title)}</h1><p${isError ? ' class="error" role="alert"' : ''}>${escapeHtml(message)}</p>${ref}`,
  );
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
}): string {
  return page(
    `Connect ${m.providerName}`,
    `<h1>Connect your ${escapeHtml(m.providerName)} account</h1>
<p><strong>${escapeHtml(m.tenantName)}</strong> first needs to check who you are.</p>
<form method="post" action="${escapeHtml(m.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(m.csrfToken)}">
<button type="submit" autofocus>Sign in with ${escapeHtml(m.identityProviderName)}</button>
</form>`,
  );
}
