/**
 * The console's pages, server-rendered: semantic HTML (landmarks, headings, labelled fields, tables with
 * captions and header cells), a skip link, visible focus, and every value written through `html` (escaped).
 * Actions are forms that POST with the session's CSRF token; an auditor's pages carry no action at all.
 */
import type { AdminRole } from '../common/admin-access.js';
import type { ConnectionView } from '../connections/connections.service.js';
import type { KeyBackendView } from '../crypto/key-backend.service.js';
import type { ConnectorView } from '../identity/connectors.service.js';
import type { IdentityProviderView } from '../identity/identity-providers.service.js';
import type { ProviderAppView } from '../providers/provider-apps.service.js';
import type { TenantProviderSummary } from '../providers/tenant-providers.service.js';
import type { TenantView } from '../tenants/tenants.service.js';
import { assetUrl } from './console-assets.js';
import type { AuditEventView } from '../audit/audit.service.js';
import type { ConnectionCounts, ConnectionStatusFilter, SealStatus } from './console-reads.repository.js';
import { UNLINKED_COUNT_LIMIT } from './console-reads.repository.js';
import { html, join, query, type Html, type HtmlValue } from './html.js';

export const ROLE_LABELS: Record<AdminRole, string> = {
  platform_admin: 'platform admin',
  admin: 'tenant admin',
  auditor: 'auditor',
};

/** The signed-in user as the header shows them, and the CSRF token of their forms. */
export interface Viewer {
  keyName: string;
  role: AdminRole;
  tenantName?: string;
  csrf: string;
}

export interface Notice {
  kind: 'ok' | 'error';
  text: string;
}

export interface Frame {
  title: string;
  /** The path of the page, for the navigation's aria-current. */
  path?: string;
  viewer?: Viewer;
  notice?: Notice;
  /** A same-origin address to move on to at once (after single sign-on, see ssoDonePage). */
  refresh?: string;
}

const TENANT_NAV: [string, string][] = [
  ['/console/connections', 'Connections'],
  ['/console/connectors', 'Connectors'],
  ['/console/providers', 'Providers'],
  ['/console/identity-providers', 'Identity providers'],
  ['/console/key-backend', 'Key backend'],
  ['/console/audit', 'Audit'],
];
const PLATFORM_NAV: [string, string][] = [['/console/platform', 'Tenants']];

/** A time in UTC, which the page's script shows in the reader's time zone. */
export function when(value: Date | string | null | undefined, empty = '—'): Html {
  if (value === null || value === undefined) return html`<span class="muted">${empty}</span>`;
  const d = typeof value === 'string' ? new Date(value) : value;
  if (Number.isNaN(d.getTime())) return html`${String(value)}`;
  const iso = d.toISOString();
  return html`<time datetime="${iso}">${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC</time>`;
}

function csrfField(viewer: Viewer): Html {
  return html`<input type="hidden" name="csrf" value="${viewer.csrf}" />`;
}

function header(frame: Frame): Html {
  const v = frame.viewer;
  if (!v) return html`<header class="top"><span class="brand">Custos console</span></header>`;
  const nav = v.role === 'platform_admin' ? PLATFORM_NAV : TENANT_NAV;
  const current = (href: string) =>
    frame.path === href || (href === '/console/platform' && frame.path?.startsWith('/console/platform/'));
  return html`<header class="top">
    <a class="brand" href="/console">Custos console</a>
    <nav class="main" aria-label="Console">
      <ul>
        ${nav.map(
          ([href, label]) =>
            html`<li><a href="${href}" ${current(href) ? html` aria-current="page"` : ''}>${label}</a></li>`,
        )}
      </ul>
    </nav>
    <div class="who">
      <span>${v.tenantName ? html`${v.tenantName} · ` : ''}${v.keyName} (${ROLE_LABELS[v.role]})</span>
      <form method="post" action="/console/sign-out">
        ${csrfField(v)}<button type="submit" class="secondary">Sign out</button>
      </form>
    </div>
  </header>`;
}

/** A whole page: the frame around `body`. */
export function layout(frame: Frame, body: HtmlValue): string {
  const notice = frame.notice
    ? html`<p
        class="notice${frame.notice.kind === 'error' ? ' error' : ''}"
        role="${frame.notice.kind === 'error' ? 'alert' : 'status'}"
      >
        ${frame.notice.text}
      </p>`
    : '';
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <link rel="icon" href="data:," />
        <title>${frame.title} · Custos console</title>
        ${frame.refresh ? html`<meta http-equiv="refresh" content="0;url=${frame.refresh}" />` : ''}
        <link rel="stylesheet" href="${assetUrl('console.css')}" />
        <script src="${assetUrl('console.js')}" defer></script>
      </head>
      <body>
        <a class="skip" href="#main">Skip to main content</a>
        ${header(frame)}
        <main id="main" tabindex="-1">${notice}${body}</main>
      </body>
    </html> `.markup;
}

// ---------------------------------------------------------------------------------------------------------
// Sign-in and errors

export function signInPage(m: { formToken: string; error?: string; status?: string }): string {
  return layout(
    { title: 'Sign in' },
    html`<div class="signin">
      <h1>Sign in to the console</h1>
      ${m.status ? html`<p role="status">${m.status}</p>` : ''}
      ${m.error ? html`<p class="notice error" role="alert">${m.error}</p>` : ''}
      <form method="post" action="/console/sign-in">
        <input type="hidden" name="csrf" value="${m.formToken}" />
        <label for="key">Admin key</label>
        <input
          id="key"
          name="key"
          type="password"
          autocomplete="off"
          spellcheck="false"
          required
          maxlength="512"
          autofocus
          aria-describedby="key-help"
        />
        <p id="key-help" class="muted">
          A tenant admin, auditor or platform admin key (<code>cus_…</code>). The console keeps a session, not
          the key: 8 hours at most, and 30 minutes without use.
        </p>
        <button type="submit">Sign in</button>
      </form>
      <h2>Single sign-on</h2>
      <form method="get" action="/console/sso">
        <label for="tenant">Tenant id</label>
        <input
          id="tenant"
          name="tenant"
          autocomplete="off"
          spellcheck="false"
          required
          maxlength="36"
          aria-describedby="tenant-help"
        />
        <p id="tenant-help" class="muted">
          If your tenant lets its admins and auditors sign in at its identity provider, enter its id (or open
          the address <code>/console/sso/&lt;tenant id&gt;</code> your administrator gave you).
        </p>
        <button type="submit" class="secondary">Continue</button>
      </form>
    </div>`,
  );
}

/** A tenant's single sign-on door: one button that starts the sign-in at its identity provider. */
export function ssoPage(m: {
  tenantId: string;
  tenantName: string;
  identityProvider: string;
  formToken: string;
}): string {
  return layout(
    { title: 'Sign in' },
    html`<div class="signin">
      <h1>Sign in to the console for ${m.tenantName}</h1>
      <form method="post" action="/console/sso/${m.tenantId}">
        <input type="hidden" name="csrf" value="${m.formToken}" />
        <button type="submit">Sign in with ${m.identityProvider}</button>
      </form>
      <p class="muted">
        Only the people ${m.tenantName} lists as console admins or auditors can sign in this way.
        <a href="/console/sign-in">Sign in with an admin key</a> instead.
      </p>
    </div>`,
  );
}

/**
 * After single sign-on: the session cookie is set (SameSite=Strict), and a same-origin refresh moves on, so
 * that the next request is not part of the identity provider's cross-site redirect (which would not carry it).
 */
export function ssoDonePage(to: string): string {
  return layout(
    { title: 'Signed in', refresh: to },
    html`<h1>Signed in</h1>
      <p><a href="${to}">Continue to the console</a></p>`,
  );
}

export function errorPage(m: {
  title: string;
  message: string;
  viewer?: Viewer;
  back?: { href: string; label: string };
  reference?: string;
}): string {
  return layout(
    { title: m.title, viewer: m.viewer },
    html`<h1>${m.title}</h1>
      <p class="notice error" role="alert">${m.message}</p>
      ${m.reference ? html`<p class="muted">Reference for your operator: <code>${m.reference}</code></p>` : ''}
      <p><a href="${m.back?.href ?? '/console'}">${m.back?.label ?? 'Back to the console'}</a></p>`,
  );
}

// ---------------------------------------------------------------------------------------------------------
// Connections

const STATUS_LABELS: Record<ConnectionView['status'], [string, 'ok' | 'warn' | 'bad' | 'neutral']> = {
  active: ['active', 'ok'],
  needs_reauth: ['needs re-authorisation', 'warn'],
  expired: ['expired', 'bad'],
  revoked: ['revoked', 'neutral'],
};

export const STATUS_FILTERS: [ConnectionStatusFilter, string][] = [
  ['live', 'Not revoked'],
  ['active', 'Active'],
  ['needs_reauth', 'Needs re-authorisation'],
  ['expired', 'Expired'],
  ['revoked', 'Revoked'],
  ['all', 'All'],
];

function badge(status: ConnectionView['status']): Html {
  const [label, kind] = STATUS_LABELS[status];
  return html`<span class="badge ${kind}">${label}</span>`;
}

function select(
  id: string,
  label: string,
  options: [string, string][],
  selected: string | undefined,
  any?: string,
): Html {
  return html`<div>
    <label for="${id}">${label}</label
    ><select id="${id}" name="${id}">
      ${any !== undefined ? html`<option value="">${any}</option>` : ''}${options.map(
        ([value, text]) =>
          html`<option value="${value}" ${value === selected ? html` selected` : ''}>${text}</option>`,
      )}
    </select>
  </div>`;
}

export interface ConnectionRowModel {
  view: ConnectionView;
  lastUse?: { at: Date; connector: string };
}

export interface ConnectionsModel {
  rows: ConnectionRowModel[];
  counts: ConnectionCounts;
  filter: { user?: string; provider?: string; status: ConnectionStatusFilter };
  providers: { key: string; name: string }[];
  nextHref?: string;
  isFirstPage: boolean;
}

export function connectionsBody(m: ConnectionsModel): Html {
  const providerName = new Map(m.providers.map((p) => [p.key, p.name]));
  const f = m.filter;
  const filtered = f.user !== undefined || f.provider !== undefined || f.status !== 'live';
  const rows = m.rows.map(({ view: c, lastUse }) => {
    const attention = c.status === 'needs_reauth' || c.status === 'expired';
    return html`<tr${attention ? html` class="attention"` : ''}>
<td><a href="/console/audit${query({ user: c.userId })}">${c.userId}</a></td>
<td>${providerName.get(c.provider) ?? c.provider} <span class="muted">(${c.provider})</span></td>
<td>${badge(c.status)}</td>
<td>${c.type === 'api_key' ? html`<span class="muted">API key: no expiry</span>` : when(c.expiresAt, 'not given')}</td>
<td>${lastUse ? html`${when(lastUse.at)} <span class="muted">by ${lastUse.connector}</span>` : html`<span class="muted">never (in the audit trail kept)</span>`}</td>
<td>${when(c.createdAt)}</td>
<td>${
      c.scopes.length > 0
        ? join(
            c.scopes.map((s) => html`<code>${s}</code>`),
            ' ',
          )
        : html`<span class="muted">—</span>`
    }</td>
</tr>`;
  });
  return html`<h1>Connections</h1>
    <div class="cards">
      <div class="card">
        <p>Not revoked</p>
        <p class="big">${m.counts.live}</p>
      </div>
      <div class="card">
        <p>Need re-authorisation</p>
        <p class="big">${m.counts.needsReauth}</p>
        ${
          m.counts.needsReauth > 0
            ? html`<p><a href="/console/connections?status=needs_reauth">Show them</a></p>`
            : ''
        }
      </div>
      <div class="card">
        <p>Expired</p>
        <p class="big">${m.counts.expired}</p>
      </div>
      <div class="card">
        <p>Revoked</p>
        <p class="big">${m.counts.revoked}</p>
      </div>
    </div>
    <form
      class="filters"
      method="get"
      action="/console/connections"
      role="search"
      aria-label="Filter connections"
    >
      <div>
        <label for="user">User id starts with</label
        ><input id="user" name="user" type="search" maxlength="255" value="${f.user ?? ''}" />
      </div>
      ${select(
        'provider',
        'Provider',
        m.providers.map((p) => [p.key, p.name]),
        f.provider,
        'Any provider',
      )}
      ${select(
        'status',
        'Status',
        STATUS_FILTERS.map(([v, label]) => [v === 'live' ? '' : v, label]),
        f.status === 'live' ? '' : f.status,
      )}
      <div><button type="submit">Filter</button></div>
      ${filtered ? html`<div><a href="/console/connections">Clear filters</a></div>` : ''}
    </form>
    <table>
      <caption>
        ${m.rows.length === 0 ? 'No connections match' : `Connections by user and provider${m.isFirstPage ? '' : ' (continued)'}`}
      </caption>
      <thead>
        <tr>
          <th scope="col">User</th>
          <th scope="col">Provider</th>
          <th scope="col">Status</th>
          <th scope="col">Expires</th>
          <th scope="col">Last used</th>
          <th scope="col">Connected</th>
          <th scope="col">Scopes</th>
        </tr>
      </thead>
      <tbody>
        ${rows}
      </tbody>
    </table>
    <nav class="pager" aria-label="Pages">
      ${
        !m.isFirstPage
          ? html`<a
              href="/console/connections${query({ user: f.user, provider: f.provider, status: f.status === 'live' ? undefined : f.status })}"
              >First page</a
            >`
          : ''
      }${m.nextHref ? html`<a href="${m.nextHref}" rel="next">Next page</a>` : ''}
    </nav>`;
}

// ---------------------------------------------------------------------------------------------------------
// Connectors

function policy(c: ConnectorView, providerName: Map<string, string>): Html {
  return html`<ul>
    ${c.allowedProviders.map((p) => {
      const scopes = c.allowedScopes[p];
      return html`<li>
        ${providerName.get(p) ?? p} <span class="muted">(${p})</span>${
          scopes
            ? html`:
              ${join(
                scopes.map((s) => html`<code>${s}</code>`),
                ' ',
              )}`
            : html` <span class="muted">any scope</span>`
        }
      </li>`;
    })}
  </ul>`;
}

export function connectorsBody(m: {
  connectors: ConnectorView[];
  providers: { key: string; name: string }[];
  viewer: Viewer;
  canAct: boolean;
}): Html {
  const providerName = new Map(m.providers.map((p) => [p.key, p.name]));
  const state = (c: ConnectorView) => {
    if (!m.canAct) {
      return html`<span class="badge ${c.disabled ? 'bad' : 'ok'}"
        >${c.disabled ? 'disabled' : 'enabled'}</span
      >`;
    }
    return html`<form method="post" action="/console/connectors/${c.id}/state" class="inline">
      ${csrfField(m.viewer)}
      <input type="hidden" name="enabled" value="${c.disabled ? 'true' : 'false'}" />
      <button
        type="submit"
        role="switch"
        aria-checked="${c.disabled ? 'false' : 'true'}"
        aria-label="Connector ${c.name} enabled"
      >
        ${c.disabled ? 'Disabled' : 'Enabled'}
      </button>
    </form>`;
  };
  return html`<h1>Connectors</h1>
    <p class="muted">
      Workloads (such as MCP servers) that ask for users' tokens. A disabled connector is refused at once;
      enabling it again restores its policy as it was.
    </p>
    ${
      m.connectors.length === 0
        ? html`<p>
            No connectors are registered. Register one with
            <code>POST /v1/tenants/{tenantId}/connectors</code>.
          </p>`
        : html`<table>
            <caption>
              Connectors and their policy
            </caption>
            <thead>
              <tr>
                <th scope="col">Connector</th>
                <th scope="col">Client id</th>
                <th scope="col">Allowed providers and scopes</th>
                <th scope="col">Delegation</th>
                <th scope="col">Authentication</th>
                <th scope="col">State</th>
                <th scope="col">Last change</th>
              </tr>
            </thead>
            <tbody>
              ${m.connectors.map(
                (c) =>
                  html`<tr>
                    <th scope="row">
                      ${c.name}${c.owner ? html`<br /><span class="muted">owner: ${c.owner}</span>` : ''}<br /><a
                        href="/console/audit${query({ connector: c.id })}"
                        >Audit events</a
                      >
                    </th>
                    <td><code>${c.clientId}</code></td>
                    <td>${policy(c, providerName)}</td>
                    <td>
                      ${c.delegation === 'trusted' ? 'trusted (names the user)' : 'user token (presents the user’s token)'}
                    </td>
                    <td>
                      ${c.auth.method}${c.auth.jwksUri ? html`<br /><span class="muted">keys from ${c.auth.jwksUri}</span>` : ''}
                    </td>
                    <td>${state(c)}</td>
                    <td>${when(c.updatedAt)}</td>
                  </tr>`,
              )}
            </tbody>
          </table>`
    }`;
}

// ---------------------------------------------------------------------------------------------------------
// Providers and OAuth apps

export interface ProviderModel {
  summary: TenantProviderSummary;
  /** The tenant's OAuth app: null when none is configured; undefined for an API-key provider. */
  app: ProviderAppView | null | undefined;
}

export function providersBody(m: { providers: ProviderModel[] }): Html {
  const app = (p: ProviderModel) => {
    if (p.app === undefined) return html`<span class="muted">not needed (API keys)</span>`;
    if (p.app === null) return html`<span class="badge neutral">not configured</span>`;
    const a = p.app;
    return html`<span class="badge ok">configured</span><br />client id <code>${a.clientId}</code><br /><span
        class="muted"
        >${a.hasClientSecret ? 'client secret set' : a.hasPrivateKey ? 'private key set' : 'no secret'} ·
        updated </span
      >${when(a.updatedAt)}`;
  };
  const configured = m.providers.filter((p) => p.app).length;
  return html`<h1>Providers and OAuth apps</h1>
    <p class="muted">
      ${configured} of ${m.providers.filter((p) => p.app !== undefined).length} OAuth providers have the
      tenant's own app configured. Secrets are never shown: only whether one is set.
    </p>
    <table>
      <caption>
        Providers the tenant can connect
      </caption>
      <thead>
        <tr>
          <th scope="col">Provider</th>
          <th scope="col">Kind</th>
          <th scope="col">Authentication</th>
          <th scope="col">OAuth app</th>
          <th scope="col">Scopes</th>
        </tr>
      </thead>
      <tbody>
        ${m.providers.map(
          (p) =>
            html`<tr>
              <th scope="row">${p.summary.name}<br /><code>${p.summary.key}</code></th>
              <td>${p.summary.custom ? 'custom' : 'built-in'}</td>
              <td>${p.summary.authMode === 'oauth2' ? 'OAuth 2.0' : 'API key'}</td>
              <td>${app(p)}</td>
              <td>
                ${
                  (p.app?.scopes.length ? p.app.scopes : p.summary.scopes).length > 0
                    ? join(
                        (p.app?.scopes.length ? p.app.scopes : p.summary.scopes).map(
                          (s) => html`<code>${s}</code>`,
                        ),
                        ' ',
                      )
                    : html`<span class="muted">—</span>`
                }
              </td>
            </tr>`,
        )}
      </tbody>
    </table>`;
}

// ---------------------------------------------------------------------------------------------------------
// Identity providers

export function identityProvidersBody(m: {
  identityProviders: IdentityProviderView[];
  connectLogin: TenantView['connectLogin'];
  consoleLogin: TenantView['consoleLogin'];
}): Html {
  return html`<h1>Identity providers</h1>
    <p class="muted">
      The identity providers whose tokens prove who a user
      is.${
        m.connectLogin
          ? html` The hosted connect pages sign people in with
              <strong>${m.connectLogin.identityProvider}</strong>.`
          : ' The hosted connect pages do not sign people in.'
      }
    </p>
    <p>Console single sign-on: ${consoleLoginText(m.consoleLogin)}.</p>
    ${
      m.identityProviders.length === 0
        ? html`<p>No identity provider is trusted yet.</p>`
        : html`<table>
            <caption>
              Trusted identity providers
            </caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Issuer</th>
                <th scope="col">Signing keys</th>
                <th scope="col">Audiences</th>
                <th scope="col">User claim</th>
                <th scope="col">Algorithms</th>
                <th scope="col">Updated</th>
              </tr>
            </thead>
            <tbody>
              ${m.identityProviders.map(
                (i) =>
                  html`<tr>
                    <th scope="row">
                      ${i.name}${m.connectLogin?.identityProvider === i.name ? html`<br /><span class="badge ok">connect sign-in</span>` : ''}${m.consoleLogin?.identityProvider === i.name ? html`<br /><span class="badge ok">console sign-in</span>` : ''}
                    </th>
                    <td><code>${i.issuer}</code></td>
                    <td>
                      ${
                        i.jwksUri
                          ? html`from <code>${i.jwksUri}</code>`
                          : html`${i.jwks?.keys.length ?? 0} inline
                            key(s)${
                              i.jwks && i.jwks.keys.some((k) => k.kid)
                                ? html`:
                                  ${join(
                                    i.jwks.keys.flatMap((k) => (k.kid ? [html`<code>${k.kid}</code>`] : [])),
                                    ', ',
                                  )}`
                                : ''
                            }`
                      }
                    </td>
                    <td>
                      ${join(
                        i.audiences.map((a) => html`<code>${a}</code>`),
                        ', ',
                      )}
                    </td>
                    <td><code>${i.userClaim}</code></td>
                    <td>${i.algorithms.join(', ')}</td>
                    <td>${when(i.updatedAt)}</td>
                  </tr>`,
              )}
            </tbody>
          </table>`
    }`;
}

// ---------------------------------------------------------------------------------------------------------
// Key backend

const BACKEND_NAMES: Record<KeyBackendView['type'], string> = {
  managed: 'Managed keyring (held by Custos)',
  'aws-kms': 'AWS KMS key (the tenant’s)',
  'vault-transit': 'Vault Transit key (the tenant’s)',
};

export function keyBackendBody(m: { view: KeyBackendView; viewer: Viewer; canAct: boolean }): Html {
  const v = m.view;
  const status = {
    active: html`<span class="badge ok">active</span>`,
    migrating: html`<span class="badge warn">moving data keys</span>`,
    migration_failed: html`<span class="badge bad">migration failing</span>`,
  }[v.status];
  const settings = Object.entries(v.settings);
  const mig = v.migration;
  return html`<h1>Key backend</h1>
    <section class="panel" aria-labelledby="kb-state">
      <h2 id="kb-state">State</h2>
      <dl class="facts">
        <dt>Backend</dt>
        <dd>${BACKEND_NAMES[v.type]} <code>${v.type}</code></dd>
        <dt>Status</dt>
        <dd>${status}</dd>
        <dt>Configured</dt>
        <dd>${when(v.configuredAt, 'by default')}</dd>
        ${settings.map(
          ([k, value]) =>
            html`<dt>${k}</dt>
              <dd><code>${value}</code></dd>`,
        )}
        <dt>Data keys on it</dt>
        <dd>
          <progress
            value="${v.dataKeys.onCurrentBackend}"
            max="${Math.max(1, v.dataKeys.total)}"
            aria-label="Data keys on the current backend"
          >
            ${v.dataKeys.onCurrentBackend} of ${v.dataKeys.total}
          </progress>
          ${v.dataKeys.onCurrentBackend} of ${v.dataKeys.total}
        </dd>
        ${
          v.type === 'aws-kms'
            ? html`<dt>AWS external id</dt>
                <dd><code>${v.awsExternalId}</code></dd>`
            : ''
        }
      </dl>
    </section>
    ${
      mig
        ? html`<section class="panel" aria-labelledby="kb-migration">
            <h2 id="kb-migration">Migration</h2>
            <dl class="facts">
              <dt>Started</dt>
              <dd>${when(mig.startedAt)}</dd>
              <dt>Moved</dt>
              <dd>${v.dataKeys.onCurrentBackend} of ${v.dataKeys.total} data keys</dd>
              <dt>Failed attempts</dt>
              <dd>${mig.attempts}</dd>
              <dt>Failing since</dt>
              <dd>${when(mig.failingSince, 'not failing')}</dd>
              <dt>Last attempt</dt>
              <dd>${when(mig.lastAttemptAt)}</dd>
              <dt>Next attempt</dt>
              <dd>${when(mig.nextAttemptAt)}</dd>
              ${
                mig.lastError
                  ? html`<dt>Last error</dt>
                      <dd>
                        <code>${mig.lastError.code}</code> (${mig.lastError.reason}, ${mig.lastError.side}
                        side): ${mig.lastError.message}
                      </dd>`
                  : ''
              }
            </dl>
          </section>`
        : ''
    }
    ${
      m.canAct
        ? html`<section class="panel" aria-labelledby="kb-actions">
            <h2 id="kb-actions">Actions</h2>
            <form
              method="post"
              action="/console/key-backend/rotate"
              data-confirm="Rotate the tenant's key now? New secrets get a new data key and every data key is rewrapped."
            >
              ${csrfField(m.viewer)} <button type="submit">Rotate key</button>
              <span class="muted"
                >A new data-key epoch, and every data key rewrapped under the backend's newest key version. No
                credential is decrypted.</span
              >
            </form>
            <form
              method="post"
              action="/console/key-backend/flush"
              data-confirm="Drop the tenant's cached data keys in every process now?"
            >
              ${csrfField(m.viewer)} <button type="submit" class="secondary">Flush cached keys</button>
              <span class="muted"
                >Every process drops the tenant's cached data keys, so a key revoked at the backend takes
                effect at once.</span
              >
            </form>
          </section>`
        : ''
    }`;
}

// ---------------------------------------------------------------------------------------------------------
// Audit

export const OUTCOMES: [string, string][] = [
  ['allowed', 'Allowed'],
  ['denied', 'Denied'],
  ['failed', 'Failed'],
];

/** Actions offered as suggestions in the action filter (any action name may be typed). */
export const KNOWN_ACTIONS = [
  'token.exchange',
  'token.exchange.denied_folded',
  'access.denied',
  'connection.created',
  'connection.replaced',
  'connection.listed',
  'connection.refreshed',
  'connection.needs_reauth',
  'connection.expired',
  'connection.revoked',
  'connect_session.created',
  'connect_session.completed',
  'connect_session.declined',
  'connect_session.failed',
  'connector.created',
  'connector.updated',
  'connector.disabled',
  'connector.deleted',
  'connector.secret_rotated',
  'identity_provider.saved',
  'identity_provider.deleted',
  'provider.saved',
  'provider.deleted',
  'provider_app.saved',
  'provider_app.deleted',
  'key_backend.configured',
  'key_backend.rotated',
  'key_backend.flushed',
  'key_backend.migrated',
  'key_backend.migration_failed',
  'admin_key.created',
  'admin_key.revoked',
  'console.signed_in',
  'console.signed_out',
  'audit.verified',
  'tenant.updated',
];

export interface AuditFilterModel {
  action?: string;
  outcome?: string;
  user?: string;
  connector?: string;
  provider?: string;
  /** As given (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC). */
  from?: string;
  to?: string;
}

export interface VerifyModel {
  ok: boolean;
  text: string;
  range: string;
}

export interface AuditModel {
  events: AuditEventView[];
  filter: AuditFilterModel;
  connectors: { id: string; name: string }[];
  providers: { key: string; name: string }[];
  actorName: (actor: AuditEventView['actor']) => string;
  seal: SealStatus;
  charts: Html;
  chartRange: string;
  verify?: VerifyModel;
  viewer: Viewer;
  nextHref?: string;
  isFirstPage: boolean;
}

function details(d: Record<string, unknown>): string {
  const s = JSON.stringify(d);
  return s === '{}' ? '' : s.length > 400 ? `${s.slice(0, 399)}…` : s;
}

const OUTCOME_BADGE: Record<string, 'ok' | 'bad' | 'warn'> = { allowed: 'ok', denied: 'bad', failed: 'warn' };

export function auditBody(m: AuditModel): Html {
  const f = m.filter;
  const filtered = Object.values(f).some((v) => v !== undefined);
  const s = m.seal;
  const events = m.events.map(
    (e) =>
      html`<tr>
        <td>${when(e.occurredAt)}</td>
        <td><code class="nowrap">${e.action}</code></td>
        <td><span class="badge ${OUTCOME_BADGE[e.outcome] ?? 'neutral'}">${e.outcome}</span></td>
        <td>${m.actorName(e.actor)}</td>
        <td>${e.subject.userId ?? html`<span class="muted">—</span>`}</td>
        <td>${e.provider ?? html`<span class="muted">—</span>`}</td>
        <td class="details"><code>${details(e.details)}</code></td>
      </tr>`,
  );
  return html`<h1>Audit trail</h1>
    ${
      m.verify
        ? html`<p
            class="notice${m.verify.ok ? '' : ' error'}"
            role="${m.verify.ok ? 'status' : 'alert'}"
            id="verify-result"
          >
            ${m.verify.ok ? 'Verified' : 'Verification failed'} (${m.verify.range}): ${m.verify.text}
          </p>`
        : ''
    }
    <section class="panel" aria-labelledby="seal">
      <h2 id="seal">Seal status</h2>
      <p>
        ${s.linked} events are linked into the tenant's hash chain; ${s.checkpointed} of them are covered by
        ${s.checkpoints} signed
        checkpoint(s)${s.lastSealedAt ? html`, the last signed ${when(s.lastSealedAt)}` : ''}.
        ${
          s.unlinked > 0
            ? html`${s.unlinked >= UNLINKED_COUNT_LIMIT ? `${UNLINKED_COUNT_LIMIT} or more` : s.unlinked}
              event(s) wait to be sealed.`
            : s.linked - s.checkpointed > 0
              ? html`${s.linked - s.checkpointed} linked event(s) wait for their checkpoint.`
              : 'Nothing waits to be sealed.'
        }
      </p>
      <form method="post" action="/console/audit/verify">
        ${csrfField(m.viewer)} <input type="hidden" name="from" value="${f.from ?? ''}" /><input
          type="hidden"
          name="to"
          value="${f.to ?? ''}"
        />
        <button type="submit">Verify ${f.from || f.to ? 'this range' : 'the last 30 days'}</button>
        <span class="muted"
          >Exports the sealed events and checkpoints and checks every hash and signature, as
          <code>custos audit verify</code> does offline.</span
        >
      </form>
    </section>
    <form class="filters" method="get" action="/console/audit" role="search" aria-label="Filter audit events">
      <div>
        <label for="action">Action</label
        ><input id="action" name="action" list="actions" maxlength="100" value="${f.action ?? ''}" />
      </div>
      <datalist id="actions">${KNOWN_ACTIONS.map((a) => html`<option value="${a}"></option>`)}</datalist>
      ${select('outcome', 'Outcome', OUTCOMES, f.outcome, 'Any outcome')}
      <div>
        <label for="user">User id</label
        ><input id="user" name="user" type="search" maxlength="255" value="${f.user ?? ''}" />
      </div>
      ${select(
        'connector',
        'Connector',
        m.connectors.map((c) => [c.id, c.name]),
        f.connector,
        'Any connector',
      )}
      ${select(
        'provider',
        'Provider',
        m.providers.map((p) => [p.key, p.name]),
        f.provider,
        'Any provider',
      )}
      <div>
        <label for="from">From (UTC)</label
        ><input id="from" name="from" type="date" value="${f.from?.slice(0, 10) ?? ''}" />
      </div>
      <div>
        <label for="to">Until (UTC, exclusive)</label
        ><input id="to" name="to" type="date" value="${f.to?.slice(0, 10) ?? ''}" />
      </div>
      <div><button type="submit">Filter</button></div>
      ${filtered ? html`<div><a href="/console/audit">Clear filters</a></div>` : ''}
    </form>
    <section aria-labelledby="charts-title">
      <h2 id="charts-title">Credential releases and denials, ${m.chartRange}</h2>
      <div class="charts">${m.charts}</div>
    </section>
    <h2 id="events-title">Events</h2>
    <table aria-labelledby="events-title">
      <caption>
        ${m.events.length === 0 ? 'No events match' : `Newest first${m.isFirstPage ? '' : ' (continued)'}`}
      </caption>
      <thead>
        <tr>
          <th scope="col">Time</th>
          <th scope="col">Action</th>
          <th scope="col">Outcome</th>
          <th scope="col">Actor</th>
          <th scope="col">User</th>
          <th scope="col">Provider</th>
          <th scope="col">Details</th>
        </tr>
      </thead>
      <tbody>
        ${events}
      </tbody>
    </table>
    <nav class="pager" aria-label="Pages">
      ${
        !m.isFirstPage ? html`<a href="/console/audit${query({ ...f })}">Newest events</a>` : ''
      }${m.nextHref ? html`<a href="${m.nextHref}" rel="next">Older events</a>` : ''}
    </nav>`;
}

// ---------------------------------------------------------------------------------------------------------
// Platform

export function tenantsBody(m: { tenants: TenantView[] }): Html {
  return html`<h1>Tenants</h1>
    <p class="muted">
      A platform admin key manages tenants, never a tenant's credentials or audit trail: sign in with a
      tenant's admin or auditor key for those.
    </p>
    <table>
      <caption>
        ${m.tenants.length} tenant(s)
      </caption>
      <thead>
        <tr>
          <th scope="col">Tenant</th>
          <th scope="col">Status</th>
          <th scope="col">Key backend</th>
          <th scope="col">Created</th>
        </tr>
      </thead>
      <tbody>
        ${m.tenants.map(
          (t) =>
            html`<tr>
              <th scope="row">
                <a href="/console/platform/tenants/${t.id}">${t.displayName ?? t.name}</a
                >${t.displayName ? html` <span class="muted">(${t.name})</span>` : ''}<br /><code
                  >${t.id}</code
                >
              </th>
              <td><span class="badge ${t.status === 'active' ? 'ok' : 'warn'}">${t.status}</span></td>
              <td><code>${t.keyBackend.type}</code></td>
              <td>${when(t.createdAt)}</td>
            </tr>`,
        )}
      </tbody>
    </table>`;
}

function consoleLoginText(c: TenantView['consoleLogin']): Html {
  return c
    ? html`through <code>${c.identityProvider}</code> (client <code>${c.clientId}</code>): ${c.admins.length}
        admin(s)${
          c.admins.length > 0
            ? html` (${join(
                c.admins.map((u) => html`<code>${u}</code>`),
                ', ',
              )})`
            : ''
        },
        ${c.auditors.length}
        auditor(s)${
          c.auditors.length > 0
            ? html` (${join(
                c.auditors.map((u) => html`<code>${u}</code>`),
                ', ',
              )})`
            : ''
        }`
    : html`none`;
}

export function tenantBody(t: TenantView): Html {
  return html`<p><a href="/console/platform">All tenants</a></p>
    <h1>${t.displayName ?? t.name}</h1>
    <section class="panel" aria-labelledby="tenant-facts">
      <h2 id="tenant-facts">Tenant</h2>
      <dl class="facts">
        <dt>Name</dt>
        <dd>${t.name}</dd>
        <dt>Display name</dt>
        <dd>${t.displayName ?? html`<span class="muted">—</span>`}</dd>
        <dt>Id</dt>
        <dd><code>${t.id}</code></dd>
        <dt>Status</dt>
        <dd>
          <span class="badge ${t.status === 'active' ? 'ok' : 'warn'}">${t.status}</span
          >${t.deletionRequestedAt ? html` since ${when(t.deletionRequestedAt)}` : ''}
        </dd>
        <dt>Created</dt>
        <dd>${when(t.createdAt)}</dd>
        <dt>Key backend</dt>
        <dd><code>${t.keyBackend.type}</code></dd>
        <dt>Connect sign-in</dt>
        <dd>${t.connectLogin ? html`through <code>${t.connectLogin.identityProvider}</code>` : 'none'}</dd>
        <dt>Console single sign-on</dt>
        <dd>${consoleLoginText(t.consoleLogin)}</dd>
        <dt>Return URLs</dt>
        <dd>
          ${
            t.allowedReturnUrls.length > 0
              ? join(
                  t.allowedReturnUrls.map((u) => html`<code>${u}</code>`),
                  ', ',
                )
              : html`<span class="muted">none</span>`
          }
        </dd>
        <dt>Webhook</dt>
        <dd>${t.webhookUrl ? html`<code>${t.webhookUrl}</code>` : html`<span class="muted">none</span>`}</dd>
        <dt>Scope pass-through</dt>
        <dd>${t.scopePassThrough ? 'on' : 'off'}</dd>
        <dt>Brand colour</dt>
        <dd>${t.brandColor ? html`<code>${t.brandColor}</code>` : html`<span class="muted">none</span>`}</dd>
      </dl>
    </section>`;
}
