/**
 * The "my connections" portal's pages, on the hosted connect pages' layout, stylesheet, escaping and headers
 * (connect-pages.ts): server-rendered, no script, every value escaped, every form with its CSRF token.
 */
import type { ConnectionStatus, ConnectionType } from '../connections/connection.types.js';
import { escapeHtml, page, type PageAction, type PageBranding, type ShownScope } from './connect-pages.js';

/** A connection as the portal shows it. */
export interface PortalConnectionItem {
  id: string;
  providerName: string;
  type: ConnectionType;
  status: ConnectionStatus;
  scopes: ShownScope[];
  connectedAt: Date;
  /** The latest release of its credential, and the connector's name (null: a connector since deleted). */
  lastUsed: { at: Date; by: string | null } | null;
  /** Offer "Reconnect" (it needs it, and its provider is connected by signing in there). */
  reconnect: boolean;
}

const DATE = new Intl.DateTimeFormat('en-GB', {
  day: 'numeric',
  month: 'long',
  year: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  hourCycle: 'h23',
  timeZone: 'UTC',
});

/** A moment, as people read it (UTC, said so) with the machine-readable time. */
function when(at: Date): string {
  return `<time datetime="${at.toISOString()}">${escapeHtml(DATE.format(at))} UTC</time>`;
}

function csrfField(token: string): string {
  return `<input type="hidden" name="csrf" value="${escapeHtml(token)}">`;
}

function statusLine(c: PortalConnectionItem): string {
  switch (c.status) {
    case 'active':
      return '<p>Status: active</p>';
    case 'needs_reauth':
      return `<p class="warn">Status: needs reconnecting. ${escapeHtml(c.providerName)} no longer accepts this connection, so it cannot be used until you reconnect it.</p>`;
    case 'expired':
      return '<p class="warn">Status: expired. Its access has ended and cannot be renewed; reconnect it to use it again.</p>';
    case 'revoked':
      return '<p class="warn">Status: disconnected.</p>';
  }
}

function scopeItem(s: ShownScope): string {
  return s.description
    ? `<li>${escapeHtml(s.description)} <code class="scope">${escapeHtml(s.scope)}</code></li>`
    : `<li><code>${escapeHtml(s.scope)}</code></li>`;
}

function connectionItem(c: PortalConnectionItem, base: string, csrf: string): string {
  const heading = `c-${escapeHtml(c.id)}`;
  const access =
    c.type === 'api_key'
      ? '<p>Connected with an API key you provided.</p>'
      : c.scopes.length > 0
        ? `<p>It can:</p><ul>${c.scopes.map(scopeItem).join('')}</ul>`
        : '<p>Its access is what you allowed at the provider.</p>';
  const used = c.lastUsed
    ? `<p>Last used ${when(c.lastUsed.at)} by ${
        c.lastUsed.by === null
          ? 'a connector that has since been removed'
          : `<strong>${escapeHtml(c.lastUsed.by)}</strong>`
      }.</p>`
    : '<p>Not used yet.</p>';
  const action = (verb: string) => `${base}/connections/${encodeURIComponent(c.id)}/${verb}`;
  const reconnect = c.reconnect
    ? `<form method="post" action="${escapeHtml(action('reconnect'))}">${csrfField(csrf)}<button type="submit">Reconnect ${escapeHtml(c.providerName)}</button></form>`
    : '';
  return `<section class="item" aria-labelledby="${heading}">
<h2 id="${heading}">${escapeHtml(c.providerName)}</h2>
${statusLine(c)}
<p>Connected ${when(c.connectedAt)}.</p>
${used}
${access}
<div class="actions">${reconnect}<form method="post" action="${escapeHtml(action('disconnect'))}">${csrfField(csrf)}<button type="submit" class="danger">Disconnect ${escapeHtml(c.providerName)}</button></form></div>
</section>`;
}

/** The person's connections, each with what it may do, its use, and the forms to reconnect or disconnect it. */
export function portalPage(m: {
  brand: PageBranding;
  userId: string;
  connections: PortalConnectionItem[];
  /** The portal's address; forms post below it. */
  base: string;
  csrfToken: string;
  back: PageAction | null;
}): string {
  const name = escapeHtml(m.brand.name);
  const list =
    m.connections.length > 0
      ? `<p>These accounts are connected to <strong>${name}</strong>, which uses them to act as you. Disconnecting one deletes the stored credential at once and asks the provider to revoke it.</p>
${m.connections.map((c) => connectionItem(c, m.base, m.csrfToken)).join('\n')}`
      : `<p>You have no accounts connected to <strong>${name}</strong>.</p>`;
  const back = m.back
    ? `<a class="secondary" href="${escapeHtml(m.back.href)}">${escapeHtml(m.back.label)}</a>\n`
    : '';
  return page(
    'Your connections',
    `<h1>Your connections</h1>
${list}
<p class="muted">The connections of <code>${escapeHtml(m.userId)}</code>. Times are in UTC.</p>
<div class="actions"><form method="post" action="${escapeHtml(`${m.base}/logout`)}">${csrfField(m.csrfToken)}<button type="submit" class="secondary">Sign out</button></form></div>
${back}`,
    m.brand,
  );
}

/** A link's page before it is used: one button, which opens it (a POST, so that link previews do not). */
export function portalLinkPage(m: { brand: PageBranding; action: string }): string {
  return page(
    'Your connections',
    `<h1>Your connections</h1>
<p>See the accounts you have connected to <strong>${escapeHtml(m.brand.name)}</strong>, and disconnect any of them.</p>
<form method="post" action="${escapeHtml(m.action)}">
<button type="submit" autofocus>Show my connections</button>
</form>
<p class="muted">This link works once, in one browser.</p>`,
    m.brand,
  );
}

/** The sign-in step, when the tenant requires sign-in at its identity provider first. */
export function portalSignInPage(m: {
  brand: PageBranding;
  identityProviderName: string;
  action: string;
  csrfToken: string;
}): string {
  return page(
    'Your connections',
    `<h1>Your connections</h1>
<p><strong>${escapeHtml(m.brand.name)}</strong> first needs to check who you are.</p>
<form method="post" action="${escapeHtml(m.action)}">
${csrfField(m.csrfToken)}
<button type="submit" autofocus>Sign in with ${escapeHtml(m.identityProviderName)}</button>
</form>`,
    m.brand,
  );
}

/** "Are you sure?" before a disconnection. */
export function disconnectConfirmPage(m: {
  brand: PageBranding;
  providerName: string;
  action: string;
  csrfToken: string;
  back: string;
}): string {
  const provider = escapeHtml(m.providerName);
  return page(
    `Disconnect ${m.providerName}`,
    `<h1>Disconnect ${provider}?</h1>
<p><strong>${escapeHtml(m.brand.name)}</strong> will no longer be able to use your ${provider} account. The stored credential is deleted at once, and ${provider} is asked to revoke it. To use it again later, you would connect it again.</p>
<form method="post" action="${escapeHtml(m.action)}">
${csrfField(m.csrfToken)}
<input type="hidden" name="confirm" value="yes">
<button type="submit" class="danger">Disconnect ${provider}</button>
</form>
<a class="secondary" href="${escapeHtml(m.back)}">Keep it connected</a>`,
    m.brand,
  );
}
