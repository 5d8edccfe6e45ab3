// The registries page: registries and their workspaces (`/registries`), and one
// registry's images, tags and tarball upload (`/registries/{name}`).
import { api, h, field, errorBox, errorText, toast, fmtTime, formDialog, confirmDialog, ApiError } from './ui.js';
import { uploadWithProgress } from './auth.js';

export async function render(main, params) {
  if (params[0]) return renderRegistry(main, params[0]);
  document.title = 'Registries · Wharf';
  const body = h('div', { class: 'list-body' });
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Registries'), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'primary', 'data-action': 'add-registry', onclick: () => addRegistry().then((r) => r && load()) }, 'Register a registry')),
    body);
  async function load() {
    let data;
    try {
      data = await api('/registries');
    } catch (e) {
      body.replaceChildren(errorBox(e, 'The registries could not be loaded.'));
      return;
    }
    body.replaceChildren(registryTable(data, load));
  }
  await load();
}

function registryTable(data, reload) {
  if (!data.items.length) {
    return h('div', { class: 'empty' }, h('p', {}, 'No registries yet.'),
      h('p', {}, 'Register an OCI registry (its URL and credentials) to push images from pipelines and upload image tarballs.'));
  }
  const rows = data.items.map((r) => h('tr', { 'data-registry': r.name },
    h('td', {}, h('a', { href: `/registries/${encodeURIComponent(r.name)}`, class: 'name' }, r.name),
      data.default === r.name ? h('span', { class: 'pill on' }, ' default') : null),
    h('td', {}, r.host),
    h('td', {}, r.username || h('span', { class: 'muted' }, 'anonymous')),
    h('td', {}, r.insecure ? 'plain HTTP' : 'HTTPS'),
    h('td', { class: 'workspaces' }, r.workspaces.length ? r.workspaces.join(', ') : h('span', { class: 'muted' }, 'none')),
    h('td', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', 'data-action': 'add-workspace', 'aria-label': `Add a workspace to ${r.name}`,
        onclick: () => addWorkspace(r.name).then((ok) => ok && reload()) }, 'Add workspace'),
      h('button', { type: 'button', class: 'secondary danger', 'data-action': 'delete-registry', 'aria-label': `Remove ${r.name}`,
        onclick: () => removeRegistry(r.name).then((ok) => ok && reload()) }, 'Remove'))));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list registries' },
    h('thead', {}, h('tr', {}, ['Name', 'Host', 'User', 'Transport', 'Workspaces', ''].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows)));
}

function addRegistry() {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  const url = h('input', { name: 'url', required: true, placeholder: 'registry.example.com or http://127.0.0.1:5000' });
  const user = h('input', { name: 'username', autocomplete: 'off' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'new-password' });
  const insecure = h('input', { name: 'insecure', type: 'checkbox' });
  const workspaces = h('input', { name: 'workspaces', placeholder: 'devops, team-a' });
  return formDialog('Register a registry', (form) => form.append(
    field('Name', name, 'How pipelines and people refer to it, e.g. `local`.'),
    field('URL', url, 'host[:port], or with https:// (http:// needs “insecure”). No path.'),
    field('User name', user), field('Password', password),
    h('label', { class: 'check' }, insecure, 'Insecure (plain HTTP, a registry on this machine)'),
    field('Workspaces', workspaces, 'Optional, comma-separated: the path components images go under.'),
  ), {
    submitLabel: 'Register',
    submit: async () => {
      const ws = workspaces.value.split(',').map((s) => s.trim()).filter(Boolean);
      const made = await api('/registries', { method: 'POST', body: {
        name: name.value.trim(), url: url.value.trim(), username: user.value.trim(), password: password.value,
        insecure: insecure.checked, workspaces: ws } });
      toast(`Registered ${made.name}.`);
      return made;
    },
  });
}

async function addWorkspace(registry) {
  const name = h('input', { name: 'workspace', required: true, autocomplete: 'off' });
  return formDialog(`Add a workspace to ${registry}`, (form) => form.append(
    field('Workspace', name, 'One lowercase path component, e.g. devops.')), {
    submitLabel: 'Add',
    submit: async () => {
      await api(`/registries/${encodeURIComponent(registry)}/workspaces`, { method: 'POST', body: { name: name.value.trim() } });
      return true;
    },
  });
}

async function removeRegistry(registry) {
  if (!await confirmDialog(`Remove ${registry}?`, `Wharf forgets the registry ${registry} and its credentials. Its images stay in the registry.`, 'Remove')) return false;
  try {
    await api(`/registries/${encodeURIComponent(registry)}`, { method: 'DELETE' });
    return true;
  } catch (e) {
    toast(errorText(e), 'error');
    return false;
  }
}

/// Bytes → `1.2 MB` (powers of 1,000, as registries and `docker images` show them).
export function fmtSize(bytes) {
  if (bytes === null || bytes === undefined) return '—';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let n = Number(bytes);
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : 1)) + ' ' + units[i];
}

async function renderRegistry(main, name) {
  document.title = `${name} · Registries · Wharf`;
  const enc = encodeURIComponent(name);
  let registry;
  try {
    registry = await api(`/registries/${enc}`);
  } catch (e) {
    main.append(h('p', { class: 'crumbs' }, h('a', { href: '/registries' }, 'Registries')), errorBox(e, `The registry ${name} could not be loaded.`));
    return;
  }
  const images = h('div', { class: 'images' });
  const tags = h('section', { class: 'tags', 'aria-live': 'polite' });
  const uploadBox = uploadForm(registry, () => loadRepos());
  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '/registries' }, 'Registries'), ' / ', name),
    h('div', { class: 'page-head' }, h('h1', {}, name), h('span', { class: 'muted' }, registry.url)),
    uploadBox,
    h('div', { class: 'split' }, h('section', {}, h('h2', {}, 'Images'), images), tags));

  async function loadRepos() {
    let data;
    try {
      data = await api(`/registries/${enc}/repositories`);
    } catch (e) {
      images.replaceChildren(errorBox(e, 'The images could not be listed.'));
      return;
    }
    if (!data.items.length) {
      images.replaceChildren(h('div', { class: 'empty' }, h('p', {}, 'No images in this registry yet.'),
        h('p', {}, 'Upload a `docker save` tarball above, or push one from a pipeline.')));
      return;
    }
    const list = h('ul', { class: 'image-list' }, data.items.map((r) => h('li', { 'data-repository': r.name },
      h('button', { type: 'button', class: 'link', 'data-action': 'show-tags', onclick: () => loadTags(r) }, r.name))));
    const filter = h('input', { type: 'search', class: 'filter', name: 'filter', placeholder: `Filter ${data.total} images`, 'aria-label': 'Filter the images',
      oninput: () => {
        const q = filter.value.trim().toLowerCase();
        for (const li of list.children) li.hidden = !!q && !li.dataset.repository.toLowerCase().includes(q);
      } });
    images.replaceChildren(filter, list);
  }

  async function loadTags(repo) {
    for (const li of images.querySelectorAll('li')) li.toggleAttribute('aria-current', li.dataset.repository === repo.name);
    tags.replaceChildren(h('h2', {}, `Tags of ${repo.name}`), h('p', { class: 'loading' }, 'Loading…'));
    let data;
    try {
      data = await api(`/registries/${enc}/repositories/${encodeURIComponent(repo.workspace)}/${encodeURIComponent(repo.image)}/tags`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) { tags.replaceChildren(); loadRepos(); return; }
      tags.replaceChildren(h('h2', {}, `Tags of ${repo.name}`), errorBox(e, 'The tags could not be listed.'));
      return;
    }
    if (!data.items.length) {
      tags.replaceChildren(h('h2', {}, `Tags of ${repo.name}`), h('div', { class: 'empty' }, h('p', {}, 'No tags left in this image.')));
      return;
    }
    const rows = data.items.map((t) => h('tr', { 'data-tag': t.tag },
      h('td', { class: 'name' }, t.tag),
      h('td', {}, fmtSize(t.size)),
      h('td', {}, fmtTime(t.created)),
      h('td', { class: 'digest', title: t.digest }, (t.digest || '').slice(0, 19)),
      h('td', { class: 'actions' }, h('button', { type: 'button', class: 'secondary danger', 'data-action': 'delete-tag', 'aria-label': `Delete tag ${t.tag}`,
        onclick: () => deleteTag(repo, t, data.items).then((ok) => ok && loadTags(repo)) }, 'Delete'))));
    tags.replaceChildren(h('h2', {}, `Tags of ${repo.name}`), h('div', { class: 'table-wrap' }, h('table', { class: 'list tags' },
      h('thead', {}, h('tr', {}, ['Tag', 'Size', 'Created', 'Digest', ''].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows))));
  }

  async function deleteTag(repo, tag, all) {
    const others = all.filter((t) => t.digest === tag.digest && t.tag !== tag.tag).map((t) => t.tag);
    const text = `The registry deletes by digest: ${repo.name}:${tag.tag} goes` +
      (others.length ? ` together with the tags ${others.join(', ')} (the same image).` : '; no other tag points at this image.');
    if (!await confirmDialog(`Delete ${repo.name}:${tag.tag}?`, text, 'Delete')) return false;
    try {
      const answer = await api(`/registries/${enc}/repositories/${encodeURIComponent(repo.workspace)}/${encodeURIComponent(repo.image)}/tags/${encodeURIComponent(tag.tag)}`, { method: 'DELETE' });
      const also = answer && answer.also_removed && answer.also_removed.length ? ` and ${answer.also_removed.join(', ')}` : '';
      toast(`Deleted ${repo.name}:${tag.tag}${also}.`);
      return true;
    } catch (e) {
      toast(errorText(e), 'error');
      return false;
    }
  }

  await loadRepos();
}

function uploadForm(registry, done) {
  const file = h('input', { type: 'file', name: 'tarball', accept: '.tar,.tar.gz,.tgz,application/x-tar,application/gzip', required: true });
  const workspace = h('select', { name: 'workspace', required: true },
    registry.workspaces.map((w) => h('option', { value: w }, w)));
  const progress = h('progress', { max: 100, value: 0, hidden: true, 'aria-label': 'Upload progress' });
  const status = h('p', { class: 'upload-status', role: 'status' });
  const submit = h('button', { type: 'submit', class: 'primary', 'data-action': 'upload' }, 'Upload');
  const form = h('form', { class: 'upload card-box', 'aria-label': 'Upload an image tarball' },
    h('h2', {}, 'Upload an image tarball'),
    registry.workspaces.length ? null : h('p', { class: 'banner' }, 'This registry has no workspace yet: add one on the ',
      h('a', { href: '/registries' }, 'registries page'), ' first.'),
    h('div', { class: 'row' }, field('Tarball (`docker save`, tar or tar.gz)', file), field('Workspace', workspace), submit),
    progress, status);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const chosen = file.files && file.files[0];
    if (!chosen) { status.textContent = 'Choose a tarball first.'; return; }
    if (!workspace.value) { status.textContent = 'Choose a workspace first.'; return; }
    submit.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    status.className = 'upload-status';
    delete status.dataset.done;
    status.textContent = `Uploading ${chosen.name}…`;
    try {
      const url = `/api/v1/registries/${encodeURIComponent(registry.name)}/upload?workspace=${encodeURIComponent(workspace.value)}`;
      const { status: code, text } = await uploadWithProgress(url, chosen, (sent, total) => {
        progress.value = total ? Math.round((sent / total) * 100) : 0;
        status.textContent = sent >= total ? 'Pushing to the registry…' : `Uploading ${chosen.name}: ${fmtSize(sent)} of ${fmtSize(total)}`;
      });
      let data = null;
      try { data = JSON.parse(text); } catch { data = null; }
      if (code < 200 || code >= 300) {
        const message = data && data.error ? new ApiError(code, data.error.message, data.error.details).describe() : `${code}: ${text.slice(0, 200)}`;
        throw new Error(message);
      }
      progress.value = 100;
      status.textContent = 'Pushed ' + data.items.map((i) => i.image).join(', ') + '.';
      file.value = '';
      await done();
      status.dataset.done = 'true';
    } catch (e) {
      status.className = 'upload-status form-error';
      status.textContent = 'The upload failed: ' + errorText(e);
      progress.hidden = true;
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
