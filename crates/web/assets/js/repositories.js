// The code repositories page (`/repositories`): repository bindings (a provider
// account's credentials), connecting one through OAuth, browsing its repositories and
// branches, and "log out" (deleting the binding).
import { api, h, t, field, errorBox, errorText, toast, fmtTime, formDialog, confirmDialog } from './ui.js';

// Product names stay as they are; plain git is described in the page's language.
const PROVIDERS = ['github', 'gitlab', 'gitee', 'git'];
const PRODUCT = { github: 'GitHub', gitlab: 'GitLab', gitee: 'Gitee' };
const providerName = (p) => PRODUCT[p] || (p === 'git' ? t('bindings.plain_git') : p);

export async function render(main) {
  document.title = t('nav.repositories') + ' · Wharf';
  const body = h('div', { class: 'list-body' });
  const browse = h('section', { class: 'browse', 'aria-live': 'polite' });
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, t('nav.repositories')), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'primary', 'data-action': 'add-binding', onclick: () => addBinding().then((b) => b && load()) }, t('bindings.add'))),
    body, browse);
  async function load() {
    let data;
    try {
      data = await api('/bindings');
    } catch (e) {
      body.replaceChildren(errorBox(e, t('bindings.load_failed')));
      return;
    }
    body.replaceChildren(table(data, load, browse));
  }
  await load();
}

function secrets(b) {
  const set = [b.has_token && t('bindings.secret_token'), b.has_client_secret && t('bindings.secret_client'), b.has_webhook_secret && t('bindings.secret_webhook')].filter(Boolean);
  return set.length ? set.join(', ') : h('span', { class: 'muted' }, t('common.none'));
}

function table(data, reload, browse) {
  if (!data.items.length) {
    return h('div', { class: 'empty' }, h('p', {}, t('bindings.none_yet')),
      h('p', {}, t('bindings.empty_hint')));
  }
  const rows = data.items.map((b) => {
    const api_ = b.provider !== 'git';
    return h('tr', { 'data-binding': b.name },
      h('td', { class: 'name' }, b.name),
      h('td', {}, providerName(b.provider)),
      h('td', {}, b.url || h('span', { class: 'muted' }, api_ ? t('bindings.public_service') : '—')),
      h('td', { class: 'secrets' }, secrets(b)),
      h('td', {}, b.token_expires_at ? fmtTime(b.token_expires_at) : '—'),
      h('td', { class: 'actions' },
        api_ && b.client_id ? h('button', { type: 'button', class: 'secondary', 'data-action': 'connect', 'aria-label': t('bindings.connect_named', { name: b.name }), onclick: () => connect(b) }, t('bindings.connect')) : null,
        api_ ? h('button', { type: 'button', class: 'secondary', 'data-action': 'set-token', 'aria-label': t('bindings.set_token_of', { name: b.name }), onclick: () => setToken(b).then((ok) => ok && reload()) }, t('bindings.set_token')) : null,
        api_ && b.has_token ? h('button', { type: 'button', class: 'secondary', 'data-action': 'browse', 'aria-label': t('bindings.repos_of', { name: b.name }), onclick: () => showRepos(b, browse) }, t('bindings.repos')) : null,
        h('button', { type: 'button', class: 'secondary danger', 'data-action': 'delete-binding', 'aria-label': t('bindings.log_out_named', { name: b.name }),
          onclick: () => logOut(b).then((ok) => { if (ok) { browse.replaceChildren(); reload(); } }) }, t('bindings.log_out'))));
  });
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list bindings' },
    h('thead', {}, h('tr', {}, [t('common.name'), t('bindings.provider'), t('bindings.instance_url'), t('bindings.secrets_set'), t('bindings.token_expires'), ''].map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows)));
}

function addBinding() {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  const provider = h('select', { name: 'provider' }, PROVIDERS.map((v) => h('option', { value: v }, providerName(v))));
  const url = h('input', { name: 'url', placeholder: t('bindings.url_placeholder') });
  const clientId = h('input', { name: 'client_id', autocomplete: 'off' });
  const clientSecret = h('input', { name: 'client_secret', type: 'password', autocomplete: 'new-password' });
  const token = h('input', { name: 'token', type: 'password', autocomplete: 'new-password' });
  const webhook = h('input', { name: 'webhook_secret', type: 'password', autocomplete: 'new-password' });
  // The callback to register with the provider's OAuth app: the server's own
  // `/devops/repository/<provider>/redirect` at the address this page came from.
  const callback = h('input', { name: 'callback', readonly: true, class: 'token-value' });
  const oauth = h('fieldset', {}, h('legend', {}, t('bindings.oauth')),
    field(t('bindings.callback'), callback, t('bindings.callback_hint')),
    field(t('bindings.client_id'), clientId), field(t('bindings.client_secret'), clientSecret));
  const providerOnly = [field(t('bindings.instance_url'), url, t('bindings.url_hint')), oauth,
    field(t('bindings.webhook_secret'), webhook, t('bindings.webhook_hint'))];
  const sync = () => {
    for (const el of providerOnly) el.hidden = provider.value === 'git';
    callback.value = `${location.origin}/devops/repository/${provider.value}/redirect`;
  };
  provider.addEventListener('change', sync);
  return formDialog(t('bindings.add_title'), (form) => {
    form.append(field(t('common.name'), name, t('bindings.name_hint')), field(t('bindings.provider'), provider), ...providerOnly,
      field(t('bindings.access_token'), token, t('bindings.access_token_hint')));
    sync();
  }, {
    submitLabel: t('common.add'),
    submit: async () => {
      const git = provider.value === 'git';
      const made = await api('/bindings', { method: 'POST', body: {
        name: name.value.trim(), provider: provider.value,
        url: git ? '' : url.value.trim(), client_id: git ? '' : clientId.value.trim(),
        client_secret: git ? '' : clientSecret.value, token: token.value, webhook_secret: git ? '' : webhook.value } });
      toast(t('common.added', { name: made.name }));
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
  return formDialog(t('bindings.set_token_of', { name: b.name }), (form) => form.append(
    field(t('bindings.pat'), token, t('bindings.pat_hint'))), {
    submitLabel: t('common.save'),
    submit: async () => {
      await api(`/bindings/${encodeURIComponent(b.name)}/token`, { method: 'PUT', body: { token: token.value } });
      return true;
    },
  });
}

async function logOut(b) {
  if (!await confirmDialog(t('bindings.log_out_question', { name: b.name }), t('bindings.log_out_text', { name: b.name }), t('bindings.log_out'))) return false;
  try {
    await api(`/bindings/${encodeURIComponent(b.name)}`, { method: 'DELETE' });
    toast(t('bindings.logged_out', { name: b.name }));
    return true;
  } catch (e) {
    toast(errorText(e), 'error');
    return false;
  }
}

async function showRepos(b, browse) {
  const title = h('h2', {}, t('bindings.repos_of', { name: b.name }));
  browse.replaceChildren(title, h('p', { class: 'loading' }, t('common.loading')));
  let data;
  try {
    data = await api(`/bindings/${encodeURIComponent(b.name)}/repos`);
  } catch (e) {
    browse.replaceChildren(title, errorBox(e, t('bindings.repos_failed')));
    return;
  }
  if (!data.items.length) {
    browse.replaceChildren(title, h('div', { class: 'empty' }, h('p', {}, t('bindings.no_repos'))));
    return;
  }
  const branches = h('div', { class: 'branches' });
  const rows = data.items.map((r) => h('tr', { 'data-repo': r.full_name },
    h('td', {}, h('button', { type: 'button', class: 'link', 'data-action': 'branches', onclick: () => showBranches(b, r, branches) }, r.full_name)),
    h('td', {}, r.default_branch || '—'),
    h('td', {}, r.private ? t('bindings.private') : t('bindings.public')),
    h('td', { class: 'muted' }, r.clone_url)));
  browse.replaceChildren(title, h('div', { class: 'split' },
    h('div', { class: 'table-wrap' }, h('table', { class: 'list repos' },
      h('thead', {}, h('tr', {}, [t('details.repository'), t('bindings.default_branch'), t('bindings.visibility'), t('bindings.clone_url')].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows))),
    branches));
}

async function showBranches(b, repo, box) {
  const title = h('h2', {}, t('bindings.branches_of', { name: repo.full_name }));
  box.replaceChildren(title, h('p', { class: 'loading' }, t('common.loading')));
  try {
    const data = await api(`/bindings/${encodeURIComponent(b.name)}/repos/${encodeURIComponent(repo.full_name)}/branches`);
    box.replaceChildren(title, data.items.length ? h('ul', { class: 'image-list' }, data.items.map((br) => h('li', {}, br)))
      : h('p', { class: 'muted' }, t('bindings.no_branches')));
  } catch (e) {
    box.replaceChildren(title, errorBox(e, t('bindings.branches_failed')));
  }
}
