// The client-side router: every page path is served the same shell; this picks the
// page module, renders it into <main>, and stops the previous page's live updates.
import { login, loggedIn, logout, userName } from './auth.js';
import { h, field, errorText, toast } from './ui.js';
import { t, locale, LANGUAGES, setLocale, translateShell } from './i18n.js';

const routes = [
  [/^\/login$/, () => ({ render: renderLogin })],
  [/^\/pipelines\/?$/, () => import('./pipelines.js')],
  [/^\/pipelines\/new$/, () => import('./editor.js')],
  [/^\/pipelines\/([^/]+)\/edit$/, () => import('./editor.js')],
  [/^\/pipelines\/([^/]+)$/, () => import('./details.js')],
  [/^\/runs\/([^/]+)$/, () => import('./run.js')],
  [/^\/approvals\/?$/, () => import('./approvals.js')],
  [/^\/users\/?$/, () => import('./users.js')],
  [/^\/repositories\/?$/, () => import('./repositories.js')],
  [/^\/registries\/?$/, () => import('./registries.js')],
  [/^\/registries\/([^/]+)$/, () => import('./registries.js')],
  [/^\/clusters\/?$/, () => import('./clusters.js')],
  [/^\/clusters\/([^/]+)$/, () => import('./clusters.js')],
  [/^\/instances\/?$/, () => import('./instances.js')],
  [/^\/instances\/([^/]+)\/([^/]+)\/([^/]+)$/, () => import('./instances.js')],
];

let cleanup = null;
let leaveGuard = null;

/// A page with unsaved work sets a function that says so; leaving then asks first.
export function setLeaveGuard(fn) {
  leaveGuard = fn;
}

export function navigate(url, replace = false) {
  if (leaveGuard && leaveGuard() && !confirm(t('app.leave'))) return;
  leaveGuard = null;
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  render();
}

let currentUrl = location.pathname + location.search;

async function render() {
  currentUrl = location.pathname + location.search;
  if (cleanup) { try { cleanup(); } catch { /* the old page is gone anyway */ } cleanup = null; }
  const main = document.getElementById('main');
  const path = location.pathname;
  if (path !== '/login' && !loggedIn()) {
    location.replace('/login?next=' + encodeURIComponent(path + location.search));
    return;
  }
  // The app's links lead only to pages that need a login: none on the login page.
  document.getElementById('nav').hidden = !loggedIn();
  document.getElementById('logout').hidden = !loggedIn();
  document.getElementById('user').textContent = loggedIn() ? userName() : '';
  for (const link of document.querySelectorAll('#nav a')) {
    link.toggleAttribute('aria-current', path.startsWith(link.getAttribute('href')));
  }
  for (const [pattern, load] of routes) {
    const match = path.match(pattern);
    if (!match) continue;
    main.replaceChildren(h('p', { class: 'loading' }, t('common.loading')));
    try {
      const page = await load();
      const params = match.slice(1).map(decodeURIComponent);
      main.replaceChildren();
      cleanup = (await page.render(main, params, new URLSearchParams(location.search))) || null;
    } catch (e) {
      main.replaceChildren(h('div', { class: 'error-box', role: 'alert' }, h('strong', {}, t('app.page_failed')), h('pre', {}, errorText(e))));
    }
    return;
  }
  main.replaceChildren(h('h1', {}, t('app.not_found')), h('p', {}, t('app.no_page'), ' ', h('a', { href: '/pipelines' }, t('app.go_pipelines'))));
}

function renderLogin(main, _params, query) {
  document.title = t('login.title') + ' · Wharf';
  const name = h('input', { name: 'username', autocomplete: 'username', value: 'admin', required: true });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const message = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, t('login.submit'));
  const form = h('form', { class: 'login', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, t('login.heading')),
    field(t('login.user'), name),
    field(t('login.password'), password),
    message, submit);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    try {
      await login(name.value.trim(), password.value.trim());
      const next = query.get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/pipelines', true);
    } catch (e) {
      message.hidden = false;
      message.textContent = errorText(e);
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  main.append(form);
  (loggedIn() ? submit : password).focus();
}

// A bug in a page should say so, not leave a button that silently does nothing. The
// count is also what the browser test checks.
function reportBug(message) {
  const root = document.documentElement;
  root.dataset.jsErrors = String(Number(root.dataset.jsErrors || 0) + 1);
  root.dataset.lastJsError = String(message).slice(0, 300);
  toast(t('app.bug', { message }), 'error');
}
window.addEventListener('error', (ev) => reportBug(ev.message));
window.addEventListener('unhandledrejection', (ev) => reportBug(errorText(ev.reason)));

// Links inside the app navigate without a reload.
document.addEventListener('click', (ev) => {
  const a = ev.target.closest && ev.target.closest('a[href]');
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  if (a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/')) return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', () => {
  if (leaveGuard && leaveGuard() && !confirm(t('app.leave'))) {
    history.pushState(null, '', currentUrl);
    return;
  }
  leaveGuard = null;
  render();
});
// The language switch in the header; the page is shown again in the chosen one.
const languages = document.getElementById('language');
for (const [tag, name] of LANGUAGES) languages.append(h('option', { value: tag, lang: tag, selected: tag === locale }, name));
languages.addEventListener('change', () => setLocale(languages.value));
translateShell();
document.getElementById('logout').addEventListener('click', async () => {
  await logout();
  navigate('/login', true);
});
render();
