// The clusters page: Kubernetes clusters pipelines deploy to, with their health
// (`/clusters`), and one cluster in full (`/clusters/{name}`). A kubeconfig is typed or
// chosen only in the Add dialog; the server never answers it back.
import { api, h, t, field, errorBox, errorText, toast, fmtTime, formDialog, ApiError, busyUi } from './ui.js';
import { fmtAgo } from './i18n.js';
import { navigate } from './app.js';

const REFRESH_MS = 30000;

const HEALTH = new Set(['healthy', 'unreachable', 'unauthorized', 'forbidden', 'refused', 'error', 'unchecked']);
const healthText = (status) => (HEALTH.has(status) ? t('health.' + status) : status);

export async function render(main, params) {
  if (params[0]) return renderCluster(main, params[0]);
  document.title = t('nav.clusters') + ' · Wharf';
  const body = h('div', { class: 'list-body' });
  const add = () => addCluster().then((c) => c && load(true));
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, t('nav.clusters')), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'primary', 'data-action': 'add-cluster', onclick: add }, t('clusters.add'))),
    body);
  let shown = '';
  async function load(force = false) {
    let data;
    try {
      data = await api('/clusters');
    } catch (e) {
      body.replaceChildren(errorBox(e, t('clusters.load_failed')));
      shown = '';
      return;
    }
    // Redraw only what changed, so a refresh never moves the focus or a hover.
    const text = JSON.stringify(data);
    if (!force && text === shown) return;
    shown = text;
    body.replaceChildren(clusterTable(data, add, () => load(true)));
  }
  await load(true);
  const timer = setInterval(() => { if (!busyUi() && !document.hidden) load(); }, REFRESH_MS);
  return () => clearInterval(timer);
}

/// `healthy` as a coloured badge; the error (the API server's words) on hover.
export function healthBadge(health) {
  const status = (health && health.status) || 'unchecked';
  const title = [health && health.error, health && health.checked_at ? t('clusters.checked_at', { time: fmtTime(health.checked_at) }) : t('clusters.never_checked')]
    .filter(Boolean).join('\n');
  return h('span', { class: `badge health h-${status}`, 'data-health': status, title }, healthText(status));
}

/// `12 s ago`, `5 min ago`, `3 h ago`, else the date; the exact time on hover.
function ago(ms) {
  if (ms === null || ms === undefined) return h('span', { title: t('clusters.never_checked') }, t('common.never'));
  return h('time', { datetime: new Date(ms).toISOString(), title: fmtTime(ms) }, fmtAgo(ms));
}

/// `https://10.0.0.1:6443` → `10.0.0.1:6443` (HTTPS is the norm; plain HTTP and a path stay
/// visible). The whole URL is on hover.
function serverShort(url) {
  try {
    const u = new URL(url);
    const path = u.pathname === '/' ? '' : u.pathname;
    return (u.protocol === 'https:' ? '' : u.protocol + '//') + u.host + path;
  } catch {
    return url;
  }
}

function nodes(n) {
  if (!n) return h('span', { class: 'muted' }, '—');
  return h('span', { class: 'nodes' + (n.ready < n.total ? ' short' : ''), title: t('clusters.nodes_ready_title', { ready: n.ready, total: n.total }) }, `${n.ready}/${n.total}`);
}

function clusterTable(data, add, reload) {
  if (!data.items.length) {
    return h('div', { class: 'empty' }, h('p', {}, h('strong', {}, t('clusters.none_yet'))),
      h('p', {}, t('clusters.empty_hint')),
      h('p', {}, h('button', { type: 'button', class: 'primary', 'data-action': 'add-cluster-empty', onclick: add }, t('clusters.add'))),
      h('p', {}, t('clusters.or_terminal'), ' ', h('code', {}, 'wharf clusters add NAME --kubeconfig ~/.kube/config [--context CONTEXT]')));
  }
  const rows = data.items.map((c) => h('tr', { 'data-cluster': c.name },
    h('td', {}, h('a', { href: `/clusters/${encodeURIComponent(c.name)}`, class: 'name' }, c.name)),
    h('td', {}, c.project),
    h('td', { class: 'server', title: c.server }, serverShort(c.server)),
    h('td', { class: 'version' }, c.version || h('span', { class: 'muted' }, '—')),
    h('td', { class: 'nodes-cell' }, nodes(c.nodes)),
    h('td', { class: 'namespace' }, c.namespace),
    h('td', { class: 'health-cell' }, healthBadge(c.health), ' ', h('small', { class: 'checked muted' }, ago(c.health.checked_at)),
      c.health.error ? h('small', { class: 'health-error', title: c.health.error }, c.health.error) : null),
    h('td', { class: 'actions' },
      checkButton(c, reload),
      h('button', { type: 'button', class: 'secondary danger', 'data-action': 'remove-cluster', 'aria-label': t('common.remove_named', { name: c.name }),
        onclick: () => removeCluster(c).then((ok) => ok && reload()) }, t('common.remove')))));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list clusters' },
    h('thead', {}, h('tr', {}, [t('common.name'), t('details.project'), t('clusters.server'), t('details.version'), t('clusters.nodes'), t('clusters.pipeline_namespace'), t('clusters.health_checked'), '']
      .map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows)));
}

/// "Check now": asks the server to check the cluster (and apply its pipeline namespace
/// again), then says how it went.
function checkButton(c, done, label = t('clusters.check')) {
  const button = h('button', { type: 'button', class: 'secondary', 'data-action': 'check-cluster', 'aria-label': t('clusters.check_named', { name: c.name }),
    title: t('clusters.check_hint') }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    button.textContent = t('clusters.checking');
    try {
      const checked = await api(`/clusters/${encodeURIComponent(c.name)}/check`, { method: 'POST' });
      const status = healthText(checked.health.status);
      toast(`${c.name}: ${status}${checked.health.error ? ': ' + checked.health.error : ''}`, checked.health.status === 'healthy' ? 'info' : 'error');
    } catch (e) {
      toast(errorText(e), 'error');
    } finally {
      button.disabled = false;
      button.textContent = label;
      done();
    }
  });
  return button;
}

/// The context names and the current-context of a kubeconfig's text, for the context
/// field's suggestions. A line scan, not a YAML parser: the server reads the file.
export function contextsOf(text) {
  const names = [];
  let current = '';
  let inContexts = false;
  let column = -1;
  const unquote = (v) => v.replace(/^["']|["']$/g, '').trim();
  for (const line of String(text).split(/\r?\n/)) {
    const top = line.match(/^([A-Za-z-]+):\s*(.*)$/);
    if (top) {
      inContexts = top[1] === 'contexts';
      if (top[1] === 'current-context') current = unquote(top[2]);
      continue;
    }
    if (!inContexts) continue;
    // `name:` at the list item's own column (`- name: x`, or under `- context:`); a
    // context's `cluster:` and `user:` sit deeper.
    const dash = line.match(/^\s*-\s+(.*)$/);
    const rest = dash ? dash[1] : line.trimStart();
    const at = line.length - rest.length;
    if (dash) column = at;
    const named = at === column && rest.match(/^name:\s*(.+?)\s*$/);
    if (named) names.push(unquote(named[1]));
  }
  return { names, current };
}

async function projectChoices() {
  try {
    const data = await api('/projects');
    return data.items.map((p) => p.name);
  } catch {
    return [];
  }
}

async function addCluster() {
  const projects = await projectChoices();
  const name = h('input', { name: 'name', required: true, autocomplete: 'off', maxlength: 64, placeholder: 'prod-eu' });
  const kubeconfig = h('textarea', { name: 'kubeconfig', class: 'code kubeconfig', rows: 9, required: true, spellcheck: 'false',
    autocomplete: 'off', placeholder: 'apiVersion: v1\nkind: Config\nclusters:\n- name: …' });
  const file = h('input', { type: 'file', name: 'kubeconfig-file', accept: '.yaml,.yml,.conf,.config,.kubeconfig,text/*,application/yaml' });
  const contexts = h('datalist', { id: 'kube-contexts-' + Math.random().toString(36).slice(2) });
  const context = h('input', { name: 'context', autocomplete: 'off', list: contexts.id });
  const contextField = field(t('clusters.context'), context, ' ');
  const contextHint = contextField.querySelector('.hint');
  const project = projects.length
    ? h('select', { name: 'project' }, projects.map((p) => h('option', { value: p, selected: p === 'admin' }, p)))
    : h('input', { name: 'project', placeholder: 'admin' });
  const verify = h('input', { name: 'verify', type: 'checkbox', checked: true });
  const fileNote = h('small', { class: 'hint', role: 'status' });

  const readContexts = () => {
    const found = contextsOf(kubeconfig.value);
    contexts.replaceChildren(...found.names.map((n) => h('option', { value: n })));
    contextHint.textContent = found.current
      ? t('clusters.context_current', { current: found.current }) + (found.names.length > 1 ? ' ' + t('clusters.contexts', { names: found.names.join(', ') }) : '')
      : t('clusters.context_empty');
  };
  kubeconfig.addEventListener('input', readContexts);
  file.addEventListener('change', async () => {
    const chosen = file.files && file.files[0];
    if (!chosen) return;
    if (chosen.size > 1024 * 1024) { fileNote.textContent = t('clusters.file_too_big', { name: chosen.name }); file.value = ''; return; }
    kubeconfig.value = await chosen.text();
    fileNote.textContent = t('clusters.file_read', { name: chosen.name });
    file.value = '';
    readContexts();
  });
  readContexts();

  return formDialog(t('clusters.add'), (form) => form.append(
    field(t('common.name'), name, t('clusters.name_hint')),
    field(t('clusters.kubeconfig'), kubeconfig, t('clusters.kubeconfig_hint')),
    h('div', { class: 'field file-pick' }, h('label', {}, t('clusters.choose_file'), ' ', file), fileNote),
    contexts,
    h('div', { class: 'row-2' }, contextField, field(t('details.project'), project, t('clusters.project_hint'))),
    h('label', { class: 'check' }, verify, t('clusters.verify')),
  ), {
    submitLabel: t('common.add'),
    wide: true,
    submit: async () => {
      const body = { name: name.value.trim(), kubeconfig: kubeconfig.value };
      if (context.value.trim()) body.context = context.value.trim();
      if (project.value.trim()) body.project = project.value.trim();
      const made = await api('/clusters' + (verify.checked ? '' : '?verify=false'), { method: 'POST', body });
      // The dialog goes away; nothing of the kubeconfig is kept in the page.
      kubeconfig.value = '';
      const health = healthText(made.health.status);
      toast(made.nodes ? t('clusters.added_nodes', { name: made.name, health, ready: made.nodes.ready, total: made.nodes.total }) : t('clusters.added', { name: made.name, health }));
      return made;
    },
  });
}

/// Asks, then removes; a 409 names the pipelines still deploying to it, in the dialog.
function removeCluster(c) {
  const blocked = h('div', { class: 'in-use', hidden: true });
  return formDialog(t('common.remove_question', { name: c.name }), (form) => form.append(
    h('p', {}, t('clusters.remove_text', { name: c.name, server: c.server, namespace: c.namespace })),
    blocked), {
    submitLabel: t('common.remove'),
    submit: async () => {
      try {
        await api(`/clusters/${encodeURIComponent(c.name)}`, { method: 'DELETE' });
      } catch (e) {
        const names = e instanceof ApiError && e.status === 409 ? inUse(e) : [];
        if (!names.length) throw e;
        blocked.hidden = false;
        blocked.replaceChildren(h('p', {}, t('clusters.in_use')),
          h('ul', { class: 'pipelines-in-use' }, names.map((p) => h('li', { 'data-pipeline': p }, p))));
        throw new Error(e.message);
      }
      toast(t('common.removed', { name: c.name }));
      return true;
    },
  }).then((ok) => !!ok);
}

/// The pipeline names of a 409: `ClusterInUse.pipelines`, or the details of the common
/// error body.
function inUse(e) {
  if (e.body && Array.isArray(e.body.pipelines)) return e.body.pipelines;
  return e.details.map((d) => d.message).filter(Boolean);
}

async function renderCluster(main, name) {
  document.title = `${name} · ${t('nav.clusters')} · Wharf`;
  let c;
  try {
    c = await api(`/clusters/${encodeURIComponent(name)}`);
  } catch (e) {
    main.append(h('p', { class: 'crumbs' }, h('a', { href: '/clusters' }, t('nav.clusters'))), errorBox(e, t('clusters.one_failed', { name })));
    return;
  }
  const row = (label, value) => h('div', {}, h('dt', {}, label), h('dd', {}, value));
  const n = c.nodes;
  // Through h(), which skips the absent error box (append() would write "null").
  main.append(...h('div', {},
    h('p', { class: 'crumbs' }, h('a', { href: '/clusters' }, t('nav.clusters')), ' / ', c.name),
    h('div', { class: 'page-head' }, h('h1', {}, c.name), healthBadge(c.health), h('span', { class: 'spacer' }),
      checkButton(c, () => navigate(location.pathname, true), t('clusters.check_now')),
      h('button', { type: 'button', class: 'secondary danger', 'data-action': 'remove-cluster', 'aria-label': t('common.remove_named', { name: c.name }),
        onclick: () => removeCluster(c).then((ok) => ok && navigate('/clusters', true)) }, t('common.remove'))),
    c.health.error ? h('div', { class: 'error-box health-detail', role: 'note' },
      h('strong', {}, t('clusters.health_at', { health: healthText(c.health.status), time: fmtTime(c.health.checked_at) })),
      h('pre', {}, c.health.error)) : null,
    h('div', { class: 'cards' },
      h('section', { class: 'card' }, h('h2', {}, t('common.cluster')), h('dl', { class: 'kv' },
        row(t('clusters.server'), c.server),
        row(t('clusters.context'), c.context),
        row(t('clusters.kubernetes'), c.version || '—'),
        row(t('clusters.nodes'), n ? t('clusters.nodes_ready', { ready: n.ready, total: n.total }) : '—'),
        row(t('clusters.health'), healthBadge(c.health)),
        row(t('clusters.checked'), c.health.checked_at ? fmtTime(c.health.checked_at) : t('common.never')))),
      h('section', { class: 'card' }, h('h2', {}, t('clusters.in_wharf')), h('dl', { class: 'kv' },
        row(t('details.project'), c.project),
        row(t('clusters.pipeline_namespace'), h('code', {}, c.namespace)),
        row(t('clusters.added_row'), t('clusters.added_by', { time: fmtTime(c.created_at), user: c.created_by }))))),
    h('section', { class: 'card' }, h('h2', {}, t('clusters.deploy_snippet')),
      h('pre', { class: 'snippet' },
        `- name: deploy\n  type: deploy-yaml\n  file: k8s/deploy.yaml\n  cluster: ${c.name}\n  namespace: my-app`))).childNodes);
}

