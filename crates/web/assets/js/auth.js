// How the UI proves who it is: the ONE module that knows. Everything else calls
// `apiFetch`.
//
// Now (until users and sessions land, issue 6): the login page's password is an API
// token (the server's WHARF_ADMIN_TOKEN), kept in sessionStorage for this tab and
// sent as `Authorization: Bearer`.
//
// Later (cookie sessions): `login()` POSTs {name, password} to /login, the server sets
// a session cookie and answers a CSRF token; `apiFetch` then sends
// `credentials: 'same-origin'` and echoes the CSRF token in a header on writes;
// `logout()` POSTs /logout. Only this file changes.

const TOKEN_KEY = 'wharf.token';
const USER_KEY = 'wharf.user';

export function loggedIn() {
  return !!sessionStorage.getItem(TOKEN_KEY);
}

export function userName() {
  return sessionStorage.getItem(USER_KEY) || '';
}

/// Checks the credentials against the API and keeps them; throws with a message a
/// person can act on.
export async function login(name, password) {
  if (!password) throw new Error('Enter the API token (the server’s WHARF_ADMIN_TOKEN) as the password.');
  const response = await fetch('/api/v1/pipelines?limit=1', { headers: { Authorization: 'Bearer ' + password } });
  if (response.status === 401) throw new Error('Wrong user name or API token.');
  if (!response.ok) throw new Error(`The server answered ${response.status} ${response.statusText}; try again.`);
  sessionStorage.setItem(TOKEN_KEY, password);
  sessionStorage.setItem(USER_KEY, name || 'admin');
}

export function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
}

/// `fetch` with the credentials. A 401 ends the session and goes to the login page,
/// coming back here after it.
export async function apiFetch(url, init = {}) {
  const headers = new Headers(init.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.set('Authorization', 'Bearer ' + token);
  const response = await fetch(url, { ...init, headers, credentials: 'same-origin' });
  if (response.status === 401) {
    logout();
    const next = location.pathname + location.search;
    location.assign('/login?next=' + encodeURIComponent(next));
  }
  return response;
}
