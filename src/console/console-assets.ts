/**
 * The console's stylesheet and script: served by Custos itself from /console/assets/ (the CSP allows 'self' and
 * nothing else), versioned by their hash so a page always loads the copy it was written for. The script only
 * improves pages that work without it: confirmations before rotating or flushing keys, local times, and tidy
 * filter URLs.
 */
import { createHash } from 'node:crypto';

const CSS = `
:root{color-scheme:light dark;--fg:#16181d;--bg:#f4f5f7;--panel:#fff;--muted:#4a4f5a;--line:#d5d8de;--accent:#0b57d0;
--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--focus:#e37400;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);line-height:1.45}
a{color:var(--accent)}
.skip{position:absolute;left:.5rem;top:-3rem;padding:.5rem .75rem;background:var(--panel);border:2px solid var(--focus);z-index:10}
.skip:focus{top:.5rem}
header.top{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1.5rem;padding:.75rem 1.25rem;background:#1f2430;color:#fff}
header.top a{color:#fff}
header.top .brand{font-weight:700;font-size:1.1rem;text-decoration:none}
header.top .who{margin-left:auto;display:flex;align-items:center;gap:.75rem;font-size:.9rem}
header.top .who button{background:transparent;color:#fff;border:1px solid #fff8;padding:.3rem .7rem}
nav.main ul{display:flex;flex-wrap:wrap;gap:.25rem;list-style:none;margin:0;padding:0}
nav.main a{display:block;padding:.35rem .6rem;border-radius:.35rem;text-decoration:none}
nav.main a[aria-current=page]{background:#fff;color:#1f2430;font-weight:600}
main{max-width:80rem;margin:1.25rem auto;padding:0 1.25rem}
main:focus{outline:none}
h1{font-size:1.5rem;margin:.25rem 0 1rem}
h2{font-size:1.15rem;margin:1.5rem 0 .75rem}
.panel>h2:first-child{margin-top:0}
.panel form+form{margin-top:.75rem}
section.panel,form.filters,.card{background:var(--panel);border:1px solid var(--line);border-radius:.5rem;padding:1rem;margin:0 0 1rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(13rem,1fr));gap:1rem;margin:0 0 1rem}
.card p{margin:.25rem 0}
.card .big{font-size:1.6rem;font-weight:700}
table{width:100%;border-collapse:collapse;background:var(--panel);border:1px solid var(--line);border-radius:.5rem;font-size:.92rem}
caption{text-align:left;font-weight:600;padding:.5rem 0}
th,td{text-align:left;vertical-align:top;padding:.5rem .6rem;border-bottom:1px solid var(--line)}
th{background:#eceef2;font-weight:600}
tr.attention td{background:#fff4d6}
td.details code{white-space:pre-wrap;word-break:break-all;font-size:.8rem}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
.muted{color:var(--muted)}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:1rem;font-size:.8rem;font-weight:600;border:1px solid currentColor}
.badge.ok{color:var(--ok)}.badge.bad{color:var(--bad)}.badge.warn{color:var(--warn)}.badge.neutral{color:var(--muted)}
form.filters{display:flex;flex-wrap:wrap;gap:.75rem 1rem;align-items:flex-end}
form.filters div{display:flex;flex-direction:column;gap:.2rem}
label{font-weight:600;font-size:.9rem}
input,select{font:inherit;padding:.4rem .5rem;border:1px solid #6b7280;border-radius:.35rem;background:var(--panel);color:var(--fg);max-width:18rem}
button{font:inherit;font-weight:600;padding:.45rem .9rem;border-radius:.35rem;border:1px solid var(--accent);background:var(--accent);color:#fff;cursor:pointer}
button.secondary{background:var(--panel);color:var(--accent)}
button.danger{background:var(--bad);border-color:var(--bad)}
form.inline{display:inline}
button[role=switch]{min-width:7.5rem;border-color:#6b7280;background:#e5e7eb;color:#16181d}
button[role=switch][aria-checked=true]{background:var(--ok);border-color:var(--ok);color:#fff}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,summary:focus-visible,.skip:focus{outline:3px solid var(--focus);outline-offset:2px}
.notice{padding:.75rem 1rem;border-radius:.5rem;margin:0 0 1rem;border:1px solid var(--ok);background:#e8f5ec}
.notice.error{border-color:var(--bad);background:#fdecee}
.pager{display:flex;gap:1rem;margin:1rem 0}
.signin{max-width:28rem;margin:3rem auto;background:var(--panel);border:1px solid var(--line);border-radius:.75rem;padding:1.5rem}
.signin input{width:100%;max-width:none;margin:.25rem 0 1rem}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(26rem,1fr));gap:1rem}
.charts figure:first-child{grid-column:1/-1}
figure{margin:0;background:var(--panel);border:1px solid var(--line);border-radius:.5rem;padding:1rem}
figcaption{font-weight:600;margin:0 0 .5rem}
svg.chart{width:100%;height:auto;display:block}
svg.chart text{font-size:13px;fill:var(--muted)}
svg.chart rect.released{fill:var(--ok)}svg.chart rect.denied{fill:var(--bad)}
code.nowrap{white-space:nowrap;word-break:normal}
.legend{display:flex;gap:1rem;font-size:.85rem;margin:.5rem 0 0;padding:0;list-style:none}
.legend li::before{content:"";display:inline-block;width:.8rem;height:.8rem;margin-right:.35rem;vertical-align:-.1rem}
.legend .released::before{background:var(--ok)}.legend .denied::before{background:var(--bad)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1rem;margin:0}
dl.facts dt{font-weight:600}dl.facts dd{margin:0}
progress{width:16rem;height:1rem}
.sr-only{position:absolute;width:1px;height:1px;padding:0;margin:-1px;overflow:hidden;clip:rect(0,0,0,0);white-space:nowrap;border:0}
@media (prefers-color-scheme:dark){:root{--fg:#e8eaed;--bg:#111318;--panel:#1b1e25;--muted:#b4b9c2;--line:#343945;--accent:#8ab4f8;--ok:#3fb950;--bad:#ff7b72;--warn:#d29922}
th{background:#232733}tr.attention td{background:#3a2f10}.notice{background:#12301c}.notice.error{background:#3b1418}
button{color:#111318}button[role=switch]{background:#343945;color:#e8eaed}button[role=switch][aria-checked=true]{color:#111318}}
@media print{header.top,.skip,form{display:none}}
`;

const JS = `(function () {
  'use strict';
  // Actions that change keys ask first.
  document.querySelectorAll('form[data-confirm]').forEach(function (form) {
    form.addEventListener('submit', function (event) {
      if (!window.confirm(form.getAttribute('data-confirm'))) event.preventDefault();
    });
  });
  // Times are written in UTC; show them in the reader's own time zone, keeping UTC in the tooltip.
  document.querySelectorAll('time[datetime]').forEach(function (el) {
    var d = new Date(el.getAttribute('datetime'));
    if (isNaN(d.getTime())) return;
    el.title = el.textContent;
    el.textContent = d.toLocaleString();
  });
  // Filters leave empty fields out of the address.
  document.querySelectorAll('form.filters').forEach(function (form) {
    form.addEventListener('submit', function () {
      form.querySelectorAll('input, select').forEach(function (field) {
        if (field.value === '') field.disabled = true;
      });
    });
  });
})();
`;

export interface Asset {
  body: string;
  contentType: string;
  /** The first 16 hex digits of its SHA-256: the `?v=` of the pages' links, and its ETag. */
  version: string;
}

const asset = (body: string, contentType: string): Asset => ({
  body,
  contentType,
  version: createHash('sha256').update(body).digest('hex').slice(0, 16),
});

export const ASSETS: Readonly<Record<string, Asset>> = {
  'console.css': asset(CSS, 'text/css; charset=utf-8'),
  'console.js': asset(JS, 'text/javascript; charset=utf-8'),
};

/** Where a page links an asset, with its version. */
export const assetUrl = (name: 'console.css' | 'console.js') =>
  `/console/assets/${name}?v=${ASSETS[name].version}`;
