// Small DOM helpers shared by the pages. Data always goes in as text (textContent),
// never as HTML, so names and log lines cannot inject markup.
import { apiFetch } from './auth.js';
import { t, fmtTime, fmtDuration, fmtSize } from './i18n.js';

export { t, fmtTime, fmtDuration, fmtSize };

/// h('button', {class: 'x', onclick: f}, 'text', child…): an element.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'value') el.value = value;
    else if (key === 'checked') el.checked = !!value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/// An error answered by the API: status, message and the details with their positions.
export class ApiError extends Error {
  constructor(status, message, details, body) {
    super(message);
    this.status = status;
    this.details = details || [];
    /// The whole answer, for the few errors with more than the common body
    /// (a cluster's 409 names the pipelines using it).
    this.body = body;
  }
  describe() {
    const parts = this.details.map((d) =>
      (d.line ? t('error.at_line', { line: d.column ? `${d.line}:${d.column}` : d.line }) : '') + (d.path ? d.path + ': ' : '') + d.message);
    return [this.message, ...parts].join('\n');
  }
}

/// JSON from the API, or an ApiError with the server's own words.
export async function api(path, { method = 'GET', body, type } = {}) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    if (typeof body === 'string') {
      init.body = body;
      init.headers['Content-Type'] = type || 'application/yaml';
    } else {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
  }
  const response = await apiFetch('/api/v1' + path, init);
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const e = data && data.error;
    const message = e && typeof e === 'object' ? e.message : typeof e === 'string' ? e : `${response.status} ${response.statusText}: ${text.slice(0, 200)}`;
    throw new ApiError(response.status, message, e && e.details, data);
  }
  return data ?? text;
}

export function errorText(e) {
  return e instanceof ApiError ? e.describe() : (e && e.message) || String(e);
}

export function toast(message, kind = 'info') {
  const box = document.getElementById('toast');
  const item = h('div', { class: 'toast ' + kind, role: kind === 'error' ? 'alert' : 'status' }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 8000 : 4000);
}

/// A panel that says what went wrong, with the server's message.
export function errorBox(e, what) {
  return h('div', { class: 'error-box', role: 'alert' }, h('strong', {}, what), h('pre', {}, errorText(e)));
}

const TERMINAL = new Set(['succeeded', 'failed', 'stopped', 'timed_out', 'skipped']);
export const isTerminal = (status) => TERMINAL.has(status);

const STATUSES = new Set(['queued', 'pending', 'running', 'waiting', 'succeeded', 'failed', 'stopped', 'timed_out', 'skipped']);

/// A status as a badge: the label in the page's language, `data-status` as the API says it.
export function badge(status) {
  return h('span', { class: 'badge s-' + (status || 'none'), 'data-status': status || '' },
    STATUSES.has(status) ? t('status.' + status) : status || '—');
}

export function describeCause(c) {
  if (!c) return '—';
  switch (c.kind) {
    case 'manual': return t('cause.manual', { user: c.user });
    case 'local': return t('cause.local', { user: c.user });
    case 'timer': return t('cause.timer');
    case 'event': return t('cause.event', { provider: c.provider, sender: c.sender });
    case 'rerun': return t('cause.rerun', { of: c.of });
    case 'retry': return t('cause.retry', { of: c.of });
    case 'channel': return t('cause.channel', { channel: c.channel, pipeline: c.pipeline, number: c.number });
    default: return c.kind || '—';
  }
}

/// A modal dialog with a form. `build(form)` fills it; resolves with the value
/// `submit(form)` returns (throw to keep it open with the message), or null on cancel.
export function formDialog(title, build, { submitLabel = t('common.save'), submit = () => true, wide = false } = {}) {
  return new Promise((resolve) => {
    const message = h('p', { class: 'form-error', role: 'alert', hidden: true });
    const form = h('form', { method: 'dialog', class: 'dialog-form' });
    const titleId = 'dlg-' + Math.random().toString(36).slice(2);
    const dialog = h('dialog', { class: wide ? 'wide' : '', 'aria-labelledby': titleId },
      h('h2', { id: titleId }, title), form);
    build(form);
    const cancel = h('button', { type: 'button', class: 'secondary', 'data-action': 'cancel', onclick: () => dialog.close('cancel') }, t('common.cancel'));
    const ok = h('button', { type: 'submit', class: 'primary' }, submitLabel);
    form.append(message, h('div', { class: 'dialog-buttons' }, cancel, ok));
    let result = null;
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      ok.disabled = true;
      try {
        result = await submit(form);
        dialog.close('ok');
      } catch (e) {
        message.hidden = false;
        message.textContent = errorText(e);
        // A tall dialog scrolls: the reason must not stay below the fold.
        message.scrollIntoView({ block: 'nearest' });
      } finally {
        ok.disabled = false;
      }
    });
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue === 'ok' ? result : null);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export async function confirmDialog(title, text, label, danger = false) {
  const answer = await formDialog(title, (form) => form.append(h('p', {}, text)), {
    submitLabel: label,
    submit: () => true,
  });
  void danger;
  return answer === true;
}

/// A labelled field: label + input (or given control), with an optional hint.
export function field(label, control, hint) {
  const id = control.id || 'f-' + Math.random().toString(36).slice(2);
  control.id = id;
  const hintEl = hint ? h('small', { class: 'hint', id: id + '-hint' }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hintEl);
}

/// A "More" menu: a button that opens a list of actions; Escape or a click outside
/// closes it, arrow keys move between items.
export function menu(label, items, accessibleName) {
  const list = h('div', { class: 'menu-list', role: 'menu', hidden: true });
  const button = h('button', {
    type: 'button', class: 'secondary menu-button', 'aria-haspopup': 'menu', 'aria-expanded': 'false',
    'aria-label': accessibleName || label,
  }, label);
  const close = () => {
    list.hidden = true;
    button.setAttribute('aria-expanded', 'false');
    document.removeEventListener('click', outside, true);
  };
  const outside = (ev) => { if (!wrap.contains(ev.target)) close(); };
  for (const item of items) {
    if (!item) continue;
    list.append(h('button', {
      type: 'button', role: 'menuitem', class: item.danger ? 'danger' : '', 'data-action': item.action || '',
      onclick: () => { close(); item.run(); },
    }, item.label));
  }
  button.addEventListener('click', () => {
    if (!list.hidden) return close();
    list.hidden = false;
    // Fixed to the viewport, so a scrolling table around the button cannot clip it.
    const r = button.getBoundingClientRect();
    const below = innerHeight - r.bottom > list.offsetHeight + 8;
    list.style.top = below ? `${r.bottom + 2}px` : `${Math.max(4, r.top - list.offsetHeight - 2)}px`;
    list.style.left = `${Math.max(4, Math.min(r.right - list.offsetWidth, innerWidth - list.offsetWidth - 4))}px`;
    button.setAttribute('aria-expanded', 'true');
    document.addEventListener('click', outside, true);
    addEventListener('scroll', close, { once: true, capture: true });
    list.querySelector('button')?.focus();
  });
  list.addEventListener('keydown', (ev) => {
    const buttons = [...list.querySelectorAll('button')];
    const i = buttons.indexOf(document.activeElement);
    if (ev.key === 'Escape') { close(); button.focus(); }
    else if (ev.key === 'ArrowDown') { ev.preventDefault(); buttons[(i + 1) % buttons.length].focus(); }
    else if (ev.key === 'ArrowUp') { ev.preventDefault(); buttons[(i - 1 + buttons.length) % buttons.length].focus(); }
  });
  const wrap = h('div', { class: 'menu' }, button, list);
  return wrap;
}

/// Saves a text as a file the browser downloads.
export function saveText(name, blob) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(url); a.remove(); }, 1000);
}

/// Runs `redraw` (which replaces elements inside `container`) and gives the focus back
/// to the equivalent element, so live refreshes never throw a keyboard user out.
export function keepFocus(container, redraw) {
  const active = document.activeElement;
  if (!active || !container.contains(active)) return redraw();
  const row = active.closest('[data-pipeline],[data-task],[data-run]');
  const rowSel = row ? ['pipeline', 'task', 'run'].filter((k) => row.dataset[k] !== undefined).map((k) => `[data-${k}="${CSS.escape(row.dataset[k])}"]`)[0] : '';
  const own = active.dataset.action ? `[data-action="${CSS.escape(active.dataset.action)}"]` : active.tagName.toLowerCase();
  redraw();
  const again = container.querySelector(rowSel ? `${rowSel} ${own}` : own);
  if (again) again.focus();
}

/// True while a dialog or a menu is open: live refreshes wait then.
export function busyUi() {
  return !!document.querySelector('dialog[open], [aria-expanded="true"]');
}
