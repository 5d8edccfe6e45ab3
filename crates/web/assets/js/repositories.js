// The code repositories page (`/repositories`): repository bindings (a provider
// account's credentials), connecting one through OAuth, browsing its repositories and
// branches, and "log out" (deleting the binding).
import { api, h, field, errorBox, errorText, toast, fmtTime, formDialog, confirmDialog } from './ui.js';

const PROVIDERS = [
  ['github', 'GitHub'], ['gitlab', 'GitLab'], ['gitee', 'Gitee'], ['git', 'Plain git (no provider API)'],
];

export async function render(main) {
  document.title = 'Code repositories · Wharf';
  const body = h('div', { class: 'list-body' });
  const browse = h('section', { class: 'browse', 'aria-live': 'polite' });
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Code repositories'), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'primary', 'data-action': 'add-binding', onclick: () => addBinding().then((b) => b && load()) }, 'Add a binding')),
    body, browse);
  async function load() {
    let data;
    try {
      data = await api('/bindings');
    } catch (e) {
      body.replaceChildren(errorBox(e, 'The bindings could not be loaded.'));
      return;
    }
    body.replaceChildren(table(data, load, browse));
  }
  await load();
}

function secrets(b) {
  const set = [b.has_token && 'token', b.has_client_secret && 'client secret', b.has_webhook_secret && 'webhook secret'].filter(Boolean);
  return set.length ? set.join(', ') : h('span', { class: 'muted' }, 'none');
}

function table(data, reload, browse) {
  if (!data.items.length) {
    return h('div', { class: 'empty' }, h('p', {}, 'No repository bindings yet.'),
      h('p', {}, 'A binding holds a GitHub, GitLab or Gitee account (OAuth app or token) or plain git credentials; pipelines use it to clone and to receive webhooks.'));
  }
  const rows = data.items.map((b) => {
    const api_ = b.provider !== 'git';
    return h('tr', { 'data-binding': b.name },
      h('td', { class: 'name' }, b.name),
      h('td', {}, (PROVIDERS.find(([k]) => k === b.provider) || [b.provider, b.provider])[1]),
      h('td', {}, b.url || h('span', { class: 'muted' }, api_ ? 'public service' : '—')),
      h('td', { class: 'secrets' }, secrets(b)),
      h('td', {}, b.token_expires_at ? fmtTime(b.token_expires_at) : '—'),
      h('td', { class: 'actions' },
        api_ && b.client_id ? h('button', { type: 'button', class: 'secondary', 'data-action': 'connect', 'aria-label': `Connect ${b.name}`, onclick: () => connect(b) }, 'Connect') : null,
        api_ ? h('button', { type: 'button', class: 'secondary', 'data-action': 'set-token', 'aria-label': `Set the token of ${b.name}`, onclick: () => setToken(b).then((ok) => ok && reload()) }, 'Set token') : null,
        api_ && b.has_token ? h('button', { type: 'button', class: 'secondary', 'data-action': 'browse', 'aria-label': `Repositories of ${b.name}`, onclick: () => showRepos(b, browse) }, 'Repositories') : null,
        h('button', { type: 'button', class: 'secondary danger', 'data-action': 'delete-binding', 'aria-label': `Log out ${b.name}`,
          onclick: () => logOut(b).then((ok) => { if (ok) { browse.replaceChildren(); reload(); } }) }, 'Log out')));
  });
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list bindings' },
    h('thead', {}, h('tr', {}, ['Name', 'Provider', 'Instance URL', 'Secrets set', 'Token expires', ''].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows)));
}

function addBinding() {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  const provider = h('select', { name: 'provider' }, PROVIDERS.map(([v, label]) => h('option', { value: v }, label)));
  const url = h('input', { name: 'url', placeholder: 'https://gitlab.example.com (empty: the public service)' });
  const clientId = h('input', { name: 'client_id', autocomplete: 'off' });
  const clientSecret = h('input', { name: 'client_secret', type: 'password', autocomplete: 'new-password' });
  const token = h('input', { name: 'token', type: 'password', autocomplete: 'new-password' });
  const webhook = h('input', { name: 'webhook_secret', type: 'password', autocomplete: 'new-password' });
  const oauth = h('fieldset', {}, h('legend', {}, 'OAuth application (to connect through the provider)'),
    field('Client id', clientId), field('Client secret', clientSecret));
  const providerOnly = [field('Instance URL', url, 'Only for a private instance.'), oauth,
    field('Webhook secret', webhook, 'Checks that webhooks really come from the provider.')];
  const sync = () => { for (const el of providerOnly) el.hidden = provider.value === 'git'; };
  provider.addEventListener('change', sync);
  return formDialog('Add a repository binding', (form) => {
    form.append(field('Name', name, 'Pipelines name it in source.binding.'), field('Provider', provider), ...providerOnly,
      field('Access token', token, 'A personal access token; or connect through OAuth afterwards.'));
    sync();
  }, {
    submitLabel: 'Add',
    submit: async () => {
      const git = provider.value === 'git';
      const made = await api('/bindings', { method: 'POST', body: {
        name: name.value.trim(), provider: provider.value,
        url: git ? '' : url.value.trim(), client_id: git ? '' : clientId.value.trim(),
        client_secret: git ? '' : clientSecret.value, token: token.value, webhook_secret: git ? '' : webhook.value } });
      toast(`Added ${made.name}.`);
      return made;
    },
  });
}

async function connect(b) {
  try {
    const answer = await api(`/bindings/${encodeURIComponent(b.name)}/authorize`);
    // The provider asks the person, then sends them back to this server's callback.
    location.assign(answer.url);
  } catch (e) {
    toast(errorText(e), 'error');
  }
}

function setToken(b) {
  const token = h('input', { name: 'token', type: 'password', required: true, autocomplete: 'new-password' });
  return formDialog(`Set the token of ${b.name}`, (form) => form.append(
    field('Personal access token', token, 'Replaces the current token (and any OAuth refresh token).')), {
    submitLabel: 'Save',
    submit: async () => {
      await api(`/bindings/${encodeURIComponent(b.name)}/token`, { method: 'PUT', body: { token: token.value } });
      return true;
    },
  });
}

async function logOut(b) {
  if (!await confirmDialog(`Log out ${b.name}?`, `Wharf deletes the binding ${b.name} and its credentials. Pipelines that name it in source.binding keep it from being deleted.`, 'Log out')) return false;
  try {
    await api(`/bindings/${encodeURIComponent(b.name)}`, { method: 'DELETE' });
    toast(`Logged out ${b.name}.`);
    return true;
  } catch (e) {
    toast(errorText(e), 'error');
    return false;
  }
}

async function showRepos(b, browse) {
  const title = h('h2', {}, `Repositories of ${b.name}`);
  browse.replaceChildren(title, h('p', { class: 'loading' }, 'Loading…'));
  let data;
  try {
    data = await api(`/bindings/${encodeURIComponent(b.name)}/repos`);
  } catch (e) {
    browse.replaceChildren(title, errorBox(e, 'The repositories could not be listed.'));
    return;
  }
  if (!data.items.length) {
    browse.replaceChildren(title, h('div', { class: 'empty' }, h('p', {}, 'The binding’s token sees no repository.')));
    return;
  }
  const branches = h('div', { class: 'branches' });
  const rows = data.items.map((r) => h('tr', { 'data-repo': r.full_name },
    h('td', {}, h('button', { type: 'button', class: 'link', 'data-action': 'branches', onclick: () => showBranches(b, r, branches) }, r.full_name)),
    h('td', {}, r.default_branch || '—'),
    h('td', {}, r.private ? 'private' : 'public'),
    h('td', { class: 'muted' }, r.clone_url)));
  browse.replaceChildren(title, h('div', { class: 'split' },
    h('div', { class: 'table-wrap' }, h('table', { class: 'list repos' },
      h('thead', {}, h('tr', {}, ['Repository', 'Default branch', 'Visibility', 'Clone URL'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows))),
    branches));
}

async function showBranches(b, repo, box) {
  const title = h('h2', {}, `Branches of ${repo.full_name}`);
  box.replaceChildren(title, h('p', { class: 'loading' }, 'Loading…'));
  try {
    const data = await api(`/bindings/${encodeURIComponent(b.name)}/repos/${encodeURIComponent(repo.full_name)}/branches`);
    box.replaceChildren(title, data.items.length ? h('ul', { class: 'image-list' }, data.items.map((br) => h('li', {}, br)))
      : h('p', { class: 'muted' }, 'No branches.'));
  } catch (e) {
    box.replaceChildren(title, errorBox(e, 'The branches could not be listed.'));
  }
}
