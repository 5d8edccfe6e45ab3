// The instances page (seed "模板实例"): Helm releases in every cluster the person may
// see — those chart-deploy tasks installed and those `helm install` made — with their
// status (`/instances`), and one release with its history, where it can be rolled back
// to any earlier revision, upgraded to another chart version, or uninstalled
// (`/instances/{cluster}/{namespace}/{release}`).
import { api, h, t, field, errorBox, errorText, toast, formDialog, confirmDialog } from './ui.js';
import { fmtTime, fmtAgo } from './i18n.js';
import { navigate } from './app.js';

const enc = encodeURIComponent;
const releasePath = (cluster, ns, name) => `/clusters/${enc(cluster)}/namespaces/${enc(ns)}/releases/${enc(name)}`;
const pagePath = (cluster, ns, name) => `/instances/${enc(cluster)}/${enc(ns)}/${enc(name)}`;

/// Helm's status words, shown in the page's language; `data-status` keeps Helm's word.
const STATUSES = new Set(['deployed', 'failed', 'superseded', 'uninstalled', 'uninstalling', 'pending-install', 'pending-upgrade', 'pending-rollback', 'unknown']);
function statusBadge(status) {
  const cls = status === 'deployed' ? 'succeeded' : status === 'failed' ? 'failed' : status.startsWith('pending') || status === 'uninstalling' ? 'running' : 'none';
  return h('span', { class: 'badge release-status s-' + cls, 'data-status': status }, STATUSES.has(status) ? t('instances.status.' + status) : status);
}

function updated(rfc3339) {
  const ms = Date.parse(rfc3339);
  if (isNaN(ms)) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: rfc3339, title: fmtTime(ms) }, fmtAgo(ms));
}

export async function render(main, params) {
  if (params.length === 3) return renderRelease(main, params.map(decodeURIComponent));
  document.title = t('nav.instances') + ' · Wharf';
  const body = h('div', { class: 'list-body' });
  main.append(h('div', { class: 'page-head' }, h('h1', {}, t('nav.instances'))), body);
  const load = async () => {
    let clusters;
    try {
      clusters = (await api('/clusters')).items;
    } catch (e) {
      body.replaceChildren(errorBox(e, t('instances.load_failed')));
      return;
    }
    if (!clusters.length) {
      body.replaceChildren(h('div', { class: 'empty' }, h('p', {}, h('strong', {}, t('instances.no_clusters'))),
        h('p', {}, t('instances.no_clusters_hint'), ' ', h('a', { href: '/clusters' }, t('nav.clusters')))));
      return;
    }
    // Every cluster at once; one that does not answer is said under the table.
    const answers = await Promise.all(clusters.map((c) => api(`/clusters/${enc(c.name)}/releases`)
      .then((data) => ({ cluster: c.name, data }), (error) => ({ cluster: c.name, error }))));
    const rows = [];
    const problems = [];
    for (const a of answers) {
      if (a.error) { problems.push(h('p', { class: 'error-line', 'data-cluster': a.cluster }, t('instances.cluster_failed', { cluster: a.cluster, error: errorText(a.error) }))); continue; }
      for (const r of a.data.items) rows.push(releaseRow(a.cluster, r, load));
      for (const why of a.data.unreadable || []) problems.push(h('p', { class: 'error-line' }, t('instances.unreadable', { cluster: a.cluster, error: why })));
    }
    const table = rows.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'list instances' },
        h('thead', {}, h('tr', {}, [t('common.cluster'), t('common.namespace'), t('common.name'), t('instances.chart'), t('instances.app_version'), t('instances.revision'), t('common.status'), t('instances.updated'), '']
          .map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, rows)))
      : h('div', { class: 'empty' }, h('p', {}, h('strong', {}, t('instances.none_yet'))), h('p', {}, t('instances.empty_hint')),
        h('pre', { class: 'snippet' }, `- name: install\n  type: chart-deploy\n  release: my-app\n  chart: my-app\n  version: 1.0.\${BUILD_ID}\n  workspace: charts\n  cluster: ${clusters[0].name}\n  namespace: my-app`));
    body.replaceChildren(table, ...problems);
  };
  await load();
}

function releaseRow(cluster, r, reload) {
  return h('tr', { 'data-release': r.name, 'data-cluster': cluster, 'data-namespace': r.namespace },
    h('td', {}, cluster),
    h('td', { class: 'namespace' }, r.namespace),
    h('td', {}, h('a', { href: pagePath(cluster, r.namespace, r.name), class: 'name' }, r.name)),
    h('td', { class: 'chart' }, `${r.chart}-${r.version}`),
    h('td', { class: 'app-version' }, r.app_version || h('span', { class: 'muted' }, '—')),
    h('td', { class: 'revision' }, String(r.revision)),
    h('td', { class: 'status-cell', title: r.description }, statusBadge(r.status)),
    h('td', { class: 'updated' }, updated(r.updated)),
    h('td', { class: 'actions' },
      h('a', { class: 'button secondary', href: pagePath(cluster, r.namespace, r.name), 'data-action': 'history' }, t('instances.history')),
      h('button', { type: 'button', class: 'secondary danger', 'data-action': 'uninstall', 'aria-label': t('instances.uninstall_named', { name: r.name }),
        onclick: () => uninstall(cluster, r.namespace, r.name).then((ok) => ok && reload()) }, t('instances.uninstall'))));
}

/// Asks, uninstalls (hooks run, objects and history deleted), says how it went.
async function uninstall(cluster, ns, name) {
  const sure = await confirmDialog(t('instances.uninstall_question', { name }), t('instances.uninstall_text', { name, namespace: ns, cluster }), t('instances.uninstall'), true);
  if (!sure) return false;
  try {
    const done = await api(releasePath(cluster, ns, name), { method: 'DELETE' });
    toast(t('instances.uninstalled', { name, count: done.objects.length }));
    return true;
  } catch (e) {
    toast(errorText(e), 'error');
    return false;
  }
}

async function renderRelease(main, [cluster, ns, name]) {
  document.title = `${name} · ${t('nav.instances')} · Wharf`;
  const crumbs = h('p', { class: 'crumbs' }, h('a', { href: '/instances' }, t('nav.instances')), ' / ', `${cluster} / ${ns} / ${name}`);
  let d;
  try {
    d = await api(releasePath(cluster, ns, name));
  } catch (e) {
    main.append(crumbs, errorBox(e, t('instances.one_failed', { name })));
    return;
  }
  const r = d.release;
  const reload = () => navigate(location.pathname, true);
  const row = (label, value) => h('div', {}, h('dt', {}, label), h('dd', {}, value));
  const history = d.history.slice().reverse().map((v) => h('tr', { 'data-revision': v.revision },
    h('td', {}, String(v.revision)),
    h('td', {}, updated(v.updated)),
    h('td', {}, statusBadge(v.status)),
    h('td', {}, `${v.chart}-${v.version}`),
    h('td', {}, v.app_version || '—'),
    h('td', { class: 'description' }, v.description),
    h('td', { class: 'actions' }, v.revision === r.revision ? null
      : h('button', { type: 'button', class: 'secondary', 'data-action': 'rollback', 'data-revision': v.revision,
        onclick: () => rollback(cluster, ns, name, v.revision).then((ok) => ok && reload()) }, t('instances.rollback_to', { revision: v.revision })))));
  main.append(...h('div', {},
    crumbs,
    h('div', { class: 'page-head' }, h('h1', {}, name), statusBadge(r.status), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'primary', 'data-action': 'upgrade', onclick: () => upgrade(cluster, ns, name, d).then((ok) => ok && reload()) }, t('instances.upgrade')),
      h('button', { type: 'button', class: 'secondary danger', 'data-action': 'uninstall', 'aria-label': t('instances.uninstall_named', { name }),
        onclick: () => uninstall(cluster, ns, name).then((ok) => ok && navigate('/instances', true)) }, t('instances.uninstall'))),
    h('div', { class: 'cards' },
      h('section', { class: 'card' }, h('h2', {}, t('instances.release')), h('dl', { class: 'kv' },
        row(t('common.cluster'), cluster),
        row(t('common.namespace'), ns),
        row(t('instances.chart'), `${r.chart}-${r.version}`),
        row(t('instances.app_version'), r.app_version || '—'),
        row(t('instances.revision'), String(r.revision)),
        row(t('instances.updated'), fmtTime(Date.parse(r.updated))),
        row(t('instances.description'), r.description))),
      h('section', { class: 'card' }, h('h2', {}, t('instances.source')), h('dl', { class: 'kv' },
        row(t('instances.source'), d.source ? h('code', { class: 'source' }, d.source) : t('instances.not_by_wharf')),
        row(t('instances.values'), h('pre', { class: 'values' }, JSON.stringify(d.values, null, 2)))))),
    h('section', { class: 'card' }, h('h2', {}, t('instances.history')),
      h('div', { class: 'table-wrap' }, h('table', { class: 'list history' },
        h('thead', {}, h('tr', {}, [t('instances.revision'), t('instances.updated'), t('common.status'), t('instances.chart'), t('instances.app_version'), t('instances.description'), '']
          .map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, history)))),
    d.notes ? h('section', { class: 'card' }, h('h2', {}, t('instances.notes')), h('pre', { class: 'notes' }, d.notes)) : null).childNodes);
}

async function rollback(cluster, ns, name, revision) {
  const sure = await confirmDialog(t('instances.rollback_question', { name, revision }), t('instances.rollback_text', { revision }), t('instances.rollback'));
  if (!sure) return false;
  try {
    const done = await api(releasePath(cluster, ns, name) + '/rollback', { method: 'POST', body: { revision } });
    toast(t('instances.rolled_back', { name, revision, made: done.revision }));
    return true;
  } catch (e) {
    toast(errorText(e), 'error');
    return false;
  }
}

/// The version to pull and the values (kept as they are unless changed).
function upgrade(cluster, ns, name, d) {
  const version = h('input', { name: 'version', required: true, autocomplete: 'off', placeholder: d.release.version });
  const values = h('textarea', { name: 'values', class: 'code', rows: 8, spellcheck: 'false' });
  values.value = JSON.stringify(d.values, null, 2);
  const registry = h('input', { name: 'registry', autocomplete: 'off' });
  const workspace = h('input', { name: 'workspace', autocomplete: 'off' });
  return formDialog(t('instances.upgrade_named', { name }), (form) => form.append(
    field(t('instances.chart_version'), version, d.source ? t('instances.version_hint', { source: d.source }) : t('instances.version_hint_helm')),
    field(t('instances.values'), values, t('instances.values_hint')),
    d.source ? h('span', {}) : h('div', { class: 'row-2' }, field(t('common.registry'), registry), field(t('common.workspace'), workspace)),
  ), {
    submitLabel: t('instances.upgrade'),
    wide: true,
    submit: async () => {
      const body = { version: version.value.trim() };
      let parsed;
      try { parsed = JSON.parse(values.value || '{}'); } catch (e) { throw new Error(t('task.values_bad_json', { error: e.message })); }
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error(t('task.values_not_object'));
      body.values = parsed;
      if (registry.value.trim()) body.registry = registry.value.trim();
      if (workspace.value.trim()) body.workspace = workspace.value.trim();
      const done = await api(releasePath(cluster, ns, name) + '/upgrade', { method: 'POST', body });
      toast(t('instances.upgraded', { name, version: body.version, revision: done.revision }));
      return true;
    },
  });
}
