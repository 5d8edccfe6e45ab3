// The UI's language: one message catalogue per language (`i18n/en.js`, `i18n/zh-CN.js`,
// the same keys in each, checked by a test in crates/web), `t(key, params)` to read one,
// and the locale-aware formats (dates, durations, sizes). The language is the one chosen
// in the header (kept in localStorage), else the browser's first language we have,
// else English. Server messages stay as the server sends them.
import en from './i18n/en.js';
import zhCN from './i18n/zh-CN.js';

const CATALOGUES = { en, 'zh-CN': zhCN };
/// The languages offered in the switch, each named in itself.
export const LANGUAGES = [['en', 'English'], ['zh-CN', '简体中文']];
const STORE_KEY = 'wharf.lang';

function choose() {
  let stored = null;
  try { stored = localStorage.getItem(STORE_KEY); } catch { /* storage off: the browser decides */ }
  if (stored && CATALOGUES[stored]) return stored;
  for (const tag of navigator.languages || [navigator.language]) {
    const lower = String(tag || '').toLowerCase();
    if (lower === 'zh' || lower.startsWith('zh-cn') || lower.startsWith('zh-hans') || lower === 'zh-sg') return 'zh-CN';
    if (lower.startsWith('en')) return 'en';
  }
  return 'en';
}

export const locale = choose();
const messages = CATALOGUES[locale];
const plurals = new Intl.PluralRules(locale);

/// Keeps `lang` for the next pages and shows this one again in it.
export function setLocale(lang) {
  if (!CATALOGUES[lang]) return;
  try { localStorage.setItem(STORE_KEY, lang); } catch { /* kept for this page only */ }
  location.reload();
}

/// The message `key` with `{name}` replaced by `params.name`. A message may be plural
/// (`{one, other}`), chosen by `params.n`. A missing key shows the key itself (the test
/// of the catalogues keeps that from shipping).
export function t(key, params = {}) {
  let message = messages[key] ?? en[key] ?? key;
  if (typeof message === 'object') message = message[plurals.select(Number(params.n) || 0)] ?? message.other;
  return message.replace(/\{(\w+)\}/g, (whole, name) => (params[name] !== undefined ? String(params[name]) : whole));
}

const dateTime = new Intl.DateTimeFormat(locale, {
  year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
});
const clock = new Intl.DateTimeFormat(locale, { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
const oneDecimal = new Intl.NumberFormat(locale, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const twoDecimals = new Intl.NumberFormat(locale, { minimumFractionDigits: 2, maximumFractionDigits: 2 });

/// Epoch milliseconds or RFC 3339 → the date and time in the browser's zone, written
/// as the language writes it.
export function fmtTime(value) {
  if (value === null || value === undefined || value === '') return '—';
  const d = new Date(value);
  if (isNaN(d)) return String(value);
  return dateTime.format(d);
}

/// A Date → its time of day (HH:MM:SS) in the browser's zone.
export function fmtClock(d) {
  return clock.format(d);
}

const pad = (n) => String(n).padStart(2, '0');

/// Milliseconds → `350ms`, `1.2s`, `2m05s`, `1h02m` (as the CLI writes them) or the
/// language's own words (`350毫秒`, `1.2秒`).
export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return '—';
  const n = Math.max(0, Math.round(ms));
  if (n < 1000) return t('duration.ms', { n });
  if (n < 59950) return t('duration.s', { s: oneDecimal.format(n / 1000) });
  const s = Math.floor(n / 1000);
  if (s < 3600) return t('duration.m_s', { m: Math.floor(s / 60), s: pad(s % 60) });
  return t('duration.h_m', { h: Math.floor(s / 3600), m: pad(Math.floor(s / 60) % 60) });
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/// Bytes → `512 B`, `5.59 MiB` (powers of 1,024, as the CLI writes them).
export function fmtSize(bytes) {
  if (bytes === null || bytes === undefined) return '—';
  let n = Number(bytes);
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : twoDecimals.format(n)) + ' ' + UNITS[i];
}

/// Puts the catalogue's words into the page shell: `data-i18n` (text),
/// `data-i18n-label` (aria-label), and the document's `lang`.
export function translateShell(root = document) {
  document.documentElement.lang = locale;
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
}

const relative = new Intl.RelativeTimeFormat(locale, { numeric: 'always', style: 'short' });

/// Epoch milliseconds in the past → `12 sec. ago`, `5 min. ago`, `3 hr. ago` (`12秒前`…),
/// or the date once it is a day old.
export function fmtAgo(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return relative.format(-s, 'second');
  if (s < 3600) return relative.format(-Math.floor(s / 60), 'minute');
  if (s < 86400) return relative.format(-Math.floor(s / 3600), 'hour');
  return new Intl.DateTimeFormat(locale, { year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date(ms));
}
