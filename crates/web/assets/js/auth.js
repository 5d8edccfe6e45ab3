// How the UI proves who it is: the ONE module that knows. Everything else calls
// `apiFetch`.
//
// A login session (issue 6): `login()` POSTs {name, password} to /api/v1/login; the
// server sets the session cookie (HttpOnly, SameSite=Strict: scripts never see it)
// and answers a CSRF token, kept in sessionStorage for this tab. `apiFetch` sends the
// cookie (`credentials: 'same-origin'`) and echoes the CSRF token in X-CSRF-Token on
// every request that changes something; `logout()` POSTs /api/v1/logout.

import { t } from './i18n.js';

const CSRF_KEY = 'wharf.csrf';
const USER_KEY = 'wharf.user';

export function loggedIn() {
  return !!sessionStorage.getItem(CSRF_KEY);
}

export function userName() {
  return sessionStorage.getItem(USER_KEY) || '';
}

async function serverMessage(response) {
  try {
    const body = await response.json();
    return body.message || body.error || '';
  } catch (_) {
    return '';
  }
}

/// Logs in and keeps the session's CSRF token; throws with a message a person can act on.
export async function login(name, password) {
  if (!name || !password) throw new Error(t('login.missing'));
  const response = await fetch('/api/v1/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name, password }),
    credentials: 'same-origin',
  });
  if (response.status === 401) throw new Error(t('login.wrong'));
  if (response.status === 429) {
    throw new Error((await serverMessage(response)) || t('login.too_many'));
  }
  if (!response.ok) {
    const why = await serverMessage(response);
    throw new Error(t('login.server_answered', { status: `${response.status} ${response.statusText}${why ? ': ' + why : ''}` }));
  }
  const session = await response.json();
  sessionStorage.setItem(CSRF_KEY, session.csrf_token);
  sessionStorage.setItem(USER_KEY, session.name || name);
}

/// Ends the session on the server (best effort) and forgets it here.
export async function logout() {
  const csrf = sessionStorage.getItem(CSRF_KEY);
  sessionStorage.removeItem(CSRF_KEY);
  sessionStorage.removeItem(USER_KEY);
  if (csrf) {
    try {
      await fetch('/api/v1/logout', { method: 'POST', headers: { 'X-CSRF-Token': csrf }, credentials: 'same-origin' });
    } catch (_) {
      // The session expires by itself.
    }
  }
}

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

/// `fetch` with the session. A 401 ends the session and goes to the login page,
/// coming back here after it.
export async function apiFetch(url, init = {}) {
  const headers = new Headers(init.headers || {});
  const method = (init.method || 'GET').toUpperCase();
  const csrf = sessionStorage.getItem(CSRF_KEY);
  if (csrf && !SAFE.has(method)) headers.set('X-CSRF-Token', csrf);
  const response = await fetch(url, { ...init, headers, credentials: 'same-origin' });
  if (response.status === 401) {
    sessionStorage.removeItem(CSRF_KEY);
    const next = location.pathname + location.search;
    location.assign('/login?next=' + encodeURIComponent(next));
  }
  return response;
}

/// POSTs `body` (a File or Blob) with the session and its CSRF token through
/// XMLHttpRequest, which (unlike fetch) reports upload progress: `onProgress(sent,
/// total)`. Resolves with `{status, text}` once the server has answered; rejects only
/// when the connection fails. A 401 goes to the login page, as in `apiFetch`.
export function uploadWithProgress(url, body, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url);
    xhr.withCredentials = true;
    const csrf = sessionStorage.getItem(CSRF_KEY);
    if (csrf) xhr.setRequestHeader('X-CSRF-Token', csrf);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.addEventListener('progress', (ev) => onProgress(ev.loaded, ev.lengthComputable ? ev.total : body.size));
    xhr.addEventListener('load', () => {
      if (xhr.status === 401) {
        sessionStorage.removeItem(CSRF_KEY);
        location.assign('/login?next=' + encodeURIComponent(location.pathname + location.search));
      }
      resolve({ status: xhr.status, text: xhr.responseText });
    });
    xhr.addEventListener('error', () => reject(new Error(t('upload.connection_failed'))));
    xhr.addEventListener('abort', () => reject(new Error(t('upload.cancelled'))));
    xhr.send(body);
  });
}
