// The registries page: registries and their workspaces (`/registries`), and one
// registry's images, tags and tarball upload (`/registries/{name}`).
import { api, h, t, field, errorBox, errorText, toast, fmtTime, fmtSize, formDialog, confirmDialog, ApiError } from './ui.js';
import { uploadWithProgress } from './auth.js';

export async function render(main, params) {
  if (params[0]) return renderRegistry(main, params[0]);
  document.title = t('nav.registries') + ' · Wharf';
  const body = h('div', { class: 'list-body' });
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, t('nav.registries')), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'primary', 'data-action': 'add-registry', onclick: () => addRegistry().then((r) => r && load()) }, t('registries.register'))),
    body);
  async function load() {
    let data;
    try {
      data = await api('/registries');
    } catch (e) {
      body.replaceChildren(errorBox(e, t('registries.load_failed')));
      return;
    }
    body.replaceChildren(registryTable(data, load));
  }
  await load();
}

function registryTable(data, reload) {
  if (!data.items.length) {
    return h('div', { class: 'empty' }, h('p', {}, t('registries.none_yet')),
      h('p', {}, t('registries.empty_hint')));
  }
  const rows = data.items.map((r) => h('tr', { 'data-registry': r.name },
    h('td', {}, h('a', { href: `/registries/${encodeURIComponent(r.name)}`, class: 'name' }, r.name),
      data.default === r.name ? [' ', h('span', { class: 'pill on' }, t('common.default'))] : null),
    h('td', {}, r.host),
    h('td', {}, r.username || h('span', { class: 'muted' }, t('registries.anonymous'))),
    h('td', {}, r.insecure ? t('registries.plain_http') : 'HTTPS'),
    h('td', { class: 'workspaces' }, r.workspaces.length ? r.workspaces.join(', ') : h('span', { class: 'muted' }, t('common.none'))),
    h('td', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', 'data-action': 'add-workspace', 'aria-label': t('registries.add_workspace_to', { name: r.name }),
        onclick: () => addWorkspace(r.name).then((ok) => ok && reload()) }, t('registries.add_workspace')),
      h('button', { type: 'button', class: 'secondary danger', 'data-action': 'delete-registry', 'aria-label': t('common.remove_named', { name: r.name }),
        onclick: () => removeRegistry(r.name).then((ok) => ok && reload()) }, t('common.remove')))));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list registries' },
    h('thead', {}, h('tr', {}, [t('common.name'), t('registries.host'), t('registries.user'), t('registries.transport'), t('registries.workspaces'), ''].map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows)));
}

function addRegistry() {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  const url = h('input', { name: 'url', required: true, placeholder: t('registries.url_placeholder') });
  const user = h('input', { name: 'username', autocomplete: 'off' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'new-password' });
  const insecure = h('input', { name: 'insecure', type: 'checkbox' });
  const workspaces = h('input', { name: 'workspaces', placeholder: 'devops, team-a' });
  return formDialog(t('registries.register'), (form) => form.append(
    field(t('common.name'), name, t('registries.name_hint')),
    field(t('registries.url'), url, t('registries.url_hint')),
    field(t('common.user_name'), user), field(t('common.password'), password),
    h('label', { class: 'check' }, insecure, t('registries.insecure')),
    field(t('registries.workspaces'), workspaces, t('registries.workspaces_hint')),
  ), {
    submitLabel: t('registries.register_button'),
    submit: async () => {
      const ws = workspaces.value.split(',').map((s) => s.trim()).filter(Boolean);
      const made = await api('/registries', { method: 'POST', body: {
        name: name.value.trim(), url: url.value.trim(), username: user.value.trim(), password: password.value,
        insecure: insecure.checked, workspaces: ws } });
      toast(t('registries.registered', { name: made.name }));
      return made;
    },
  });
}

async function addWorkspace(registry) {
  const name = h('input', { name: 'workspace', required: true, autocomplete: 'off' });
  return formDialog(t('registries.add_workspace_to', { name: registry }), (form) => form.append(
    field(t('common.workspace'), name, t('registries.workspace_hint'))), {
    submitLabel: t('common.add'),
    submit: async () => {
      await api(`/registries/${encodeURIComponent(registry)}/workspaces`, { method: 'POST', body: { name: name.value.trim() } });
      return true;
    },
  });
}

async function removeRegistry(registry) {
  if (!await confirmDialog(t('common.remove_question', { name: registry }), t('registries.remove_text', { name: registry }), t('common.remove'))) return false;
  try {
    await api(`/registries/${encodeURIComponent(registry)}`, { method: 'DELETE' });
    return true;
  } catch (e) {
    toast(errorText(e), 'error');
    return false;
  }
}

/// Bytes → `5.59 MiB`, as the CLI writes them (the one definition is in i18n.js).
export { fmtSize };

async function renderRegistry(main, name) {
  document.title = `${name} · ${t('nav.registries')} · Wharf`;
  const enc = encodeURIComponent(name);
  let registry;
  try {
    registry = await api(`/registries/${enc}`);
  } catch (e) {
    main.append(h('p', { class: 'crumbs' }, h('a', { href: '/registries' }, t('nav.registries'))), errorBox(e, t('registries.one_failed', { name })));
    return;
  }
  const images = h('div', { class: 'images' });
  const charts = h('div', { class: 'charts' });
  const tags = h('section', { class: 'tags', 'aria-live': 'polite' });
  const uploadBox = uploadForm(registry, () => loadRepos());
  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '/registries' }, t('nav.registries')), ' / ', name),
    h('div', { class: 'page-head' }, h('h1', {}, name), h('span', { class: 'muted' }, registry.url)),
    uploadBox,
    h('div', { class: 'split' },
      h('section', {}, h('h2', {}, t('registries.images')), images, h('h2', {}, t('registries.charts')), charts), tags));

  async function loadRepos() {
    let data;
    try {
      data = await api(`/registries/${enc}/repositories`);
    } catch (e) {
      images.replaceChildren(errorBox(e, t('registries.images_failed')));
      charts.replaceChildren();
      return;
    }
    // Charts (Helm charts stored as OCI artifacts) beside the images.
    const imageItems = data.items.filter((r) => r.artifact !== 'chart');
    const chartItems = data.items.filter((r) => r.artifact === 'chart');
    const listOf = (items) => h('ul', { class: 'image-list' }, items.map((r) => h('li', { 'data-repository': r.name, 'data-artifact': r.artifact || 'image' },
      h('button', { type: 'button', class: 'link', 'data-action': 'show-tags', onclick: () => loadTags(r) }, r.name))));
    const imageList = listOf(imageItems);
    const chartList = listOf(chartItems);
    if (!chartItems.length) {
      charts.replaceChildren(h('div', { class: 'empty' }, h('p', {}, t('registries.no_charts'))));
    } else {
      charts.replaceChildren(chartList);
    }
    if (!data.items.length) {
      images.replaceChildren(h('div', { class: 'empty' }, h('p', {}, t('registries.no_images')),
        h('p', {}, t('registries.no_images_hint'))));
      return;
    }
    const filter = h('input', { type: 'search', class: 'filter', name: 'filter', placeholder: t('registries.filter', { n: data.total }), 'aria-label': t('registries.filter_label'),
      oninput: () => {
        const q = filter.value.trim().toLowerCase();
        for (const li of [...imageList.children, ...chartList.children]) li.hidden = !!q && !li.dataset.repository.toLowerCase().includes(q);
      } });
    images.replaceChildren(filter, imageItems.length ? imageList : h('div', { class: 'empty' }, h('p', {}, t('registries.no_images'))));
  }

  async function loadTags(repo) {
    for (const li of main.querySelectorAll('.image-list li')) li.toggleAttribute('aria-current', li.dataset.repository === repo.name);
    const chart = repo.artifact === 'chart';
    const heading = () => h('h2', {}, t(chart ? 'registries.versions_of' : 'registries.tags_of', { name: repo.name }));
    tags.replaceChildren(heading(), h('p', { class: 'loading' }, t('common.loading')));
    let data;
    try {
      data = await api(`/registries/${enc}/repositories/${encodeURIComponent(repo.workspace)}/${encodeURIComponent(repo.image)}/tags`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) { tags.replaceChildren(); loadRepos(); return; }
      tags.replaceChildren(heading(), errorBox(e, t('registries.tags_failed')));
      return;
    }
    if (!data.items.length) {
      tags.replaceChildren(heading(), h('div', { class: 'empty' }, h('p', {}, t('registries.no_tags'))));
      return;
    }
    // Helm tags version `1.0.0+b.3` as `1.0.0_b.3` (OCI tags have no `+`).
    const rows = data.items.map((tg) => h('tr', { 'data-tag': tg.tag, 'data-artifact': tg.artifact || 'image' },
      h('td', { class: 'name' }, chart ? tg.tag.replaceAll('_', '+') : tg.tag),
      h('td', {}, fmtSize(tg.size)),
      h('td', {}, fmtTime(tg.created)),
      h('td', { class: 'digest', title: tg.digest }, (tg.digest || '').slice(0, 19)),
      h('td', { class: 'actions' }, h('button', { type: 'button', class: 'secondary danger', 'data-action': 'delete-tag', 'aria-label': t('registries.delete_tag', { tag: tg.tag }),
        onclick: () => deleteTag(repo, tg, data.items).then((ok) => ok && loadTags(repo)) }, t('common.delete')))));
    tags.replaceChildren(heading(), h('div', { class: 'table-wrap' }, h('table', { class: 'list tags' },
      h('thead', {}, h('tr', {}, [t(chart ? 'registries.version' : 'registries.tag'), t('registries.size'), t('common.created'), t('registries.digest'), ''].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows))));
  }

  async function deleteTag(repo, tag, all) {
    const others = all.filter((x) => x.digest === tag.digest && x.tag !== tag.tag).map((x) => x.tag);
    const image = `${repo.name}:${tag.tag}`;
    const text = others.length ? t('registries.delete_with_others', { image, others: others.join(', ') }) : t('registries.delete_alone', { image });
    if (!await confirmDialog(t('registries.delete_question', { image }), text, t('common.delete'))) return false;
    try {
      const answer = await api(`/registries/${enc}/repositories/${encodeURIComponent(repo.workspace)}/${encodeURIComponent(repo.image)}/tags/${encodeURIComponent(tag.tag)}`, { method: 'DELETE' });
      const also = answer && answer.also_removed && answer.also_removed.length ? answer.also_removed.join(', ') : '';
      toast(also ? t('registries.deleted_also', { image, also }) : t('registries.deleted', { image }));
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
  const progress = h('progress', { max: 100, value: 0, hidden: true, 'aria-label': t('upload.progress') });
  const status = h('p', { class: 'upload-status', role: 'status' });
  const submit = h('button', { type: 'submit', class: 'primary', 'data-action': 'upload' }, t('upload.button'));
  const form = h('form', { class: 'upload card-box', 'aria-label': t('upload.title') },
    h('h2', {}, t('upload.title')),
    registry.workspaces.length ? null : h('p', { class: 'banner' }, t('upload.no_workspace'), ' ',
      h('a', { href: '/registries' }, t('upload.registries_page'))),
    h('div', { class: 'row' }, field(t('upload.tarball'), file), field(t('common.workspace'), workspace), submit),
    progress, status);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const chosen = file.files && file.files[0];
    if (!chosen) { status.textContent = t('upload.choose_tarball'); return; }
    if (!workspace.value) { status.textContent = t('upload.choose_workspace'); return; }
    submit.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    status.className = 'upload-status';
    delete status.dataset.done;
    status.textContent = t('upload.uploading', { name: chosen.name });
    try {
      const url = `/api/v1/registries/${encodeURIComponent(registry.name)}/upload?workspace=${encodeURIComponent(workspace.value)}`;
      const { status: code, text } = await uploadWithProgress(url, chosen, (sent, total) => {
        progress.value = total ? Math.round((sent / total) * 100) : 0;
        status.textContent = sent >= total ? t('upload.pushing') : t('upload.progress_text', { name: chosen.name, sent: fmtSize(sent), total: fmtSize(total) });
      });
      let data = null;
      try { data = JSON.parse(text); } catch { data = null; }
      if (code < 200 || code >= 300) {
        const message = data && data.error ? new ApiError(code, data.error.message, data.error.details).describe() : `${code}: ${text.slice(0, 200)}`;
        throw new Error(message);
      }
      progress.value = 100;
      status.textContent = t('upload.pushed', { images: data.items.map((i) => i.image).join(', ') });
      file.value = '';
      await done();
      status.dataset.done = 'true';
    } catch (e) {
      status.className = 'upload-status form-error';
      status.textContent = t('upload.failed', { error: errorText(e) });
      progress.hidden = true;
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
