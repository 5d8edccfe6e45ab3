// The pipeline list: name, status, source, last run; run / stop; the "More" menu.
import { api, h, t, badge, fmtTime, menu, errorBox, toast, errorText, isTerminal, keepFocus, busyUi } from './ui.js';
import * as act from './dialogs.js';
import { navigate } from './app.js';

const PAGE = 50;

export async function render(main, _params, query) {
  document.title = t('nav.pipelines') + ' · Wharf';
  const page = Math.max(1, Number(query.get('page')) || 1);
  const body = h('div', { class: 'list-body' });
  // A normal user may not create pipelines (the permission matrix): say so rather than
  // offer a button the server refuses. If /me fails, offer it; the server still decides.
  const me = await api('/me').catch(() => null);
  const mayCreate = !me || me.role !== 'user';
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, t('nav.pipelines')), h('span', { class: 'spacer' }),
      mayCreate ? null : h('span', { class: 'muted', id: 'create-refused' }, t('pipelines.create_refused')),
      h('button', { type: 'button', class: 'primary', 'data-action': 'create', disabled: !mayCreate,
        'aria-describedby': mayCreate ? null : 'create-refused', onclick: () => act.createDialog().catch(fail) }, t('pipelines.create'))),
    body);
  let timer = null;
  let stopped = false;
  async function load() {
    clearTimeout(timer);
    if (busyUi()) { timer = setTimeout(load, 1000); return; }
    let data;
    try {
      data = await api(`/pipelines?limit=${PAGE}&page=${page}`);
      data.mayCreate = mayCreate;
    } catch (e) {
      body.replaceChildren(errorBox(e, t('pipelines.load_failed')));
      return;
    }
    keepFocus(body, () => body.replaceChildren(table(data, load), pager(data, page)));
    // Keep the last-run column fresh while something runs.
    const busy = data.items.some((p) => p.last_run && !isTerminal(p.last_run.status));
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(load, busy ? 2000 : 15000);
  }
  await load();
  return () => { stopped = true; clearTimeout(timer); };
}

function fail(e) {
  toast(errorText(e), 'error');
}

function table(data, reload) {
  if (!data.items.length) {
    return h('div', { class: 'empty' }, h('p', {}, data.total ? t('pipelines.none_on_page') : t('pipelines.none_yet')),
      h('p', {}, data.mayCreate ? t('pipelines.empty_hint') : t('pipelines.empty_hint_user')));
  }
  const act1 = (fn, p) => async () => {
    try { if (await fn(p)) reload(); } catch (e) { fail(e); }
  };
  const rows = data.items.map((p) => {
    const last = p.last_run;
    const running = last && !isTerminal(last.status);
    const more = menu(t('common.more'), [
      { label: t('pipeline.edit'), action: 'edit', run: () => navigate(`/pipelines/${p.id}/edit`) },
      { label: t('pipeline.edit_triggers'), action: 'triggers', run: act1(act.editTriggers, p) },
      { label: t('pipeline.advanced'), action: 'advanced', run: act1(act.advancedSettings, p) },
      p.active ? { label: t('pipeline.deactivate'), action: 'deactivate', run: act1((x) => act.setActive(x, false), p) }
        : { label: t('pipeline.activate'), action: 'activate', run: act1((x) => act.setActive(x, true), p) },
      { label: t('common.copy'), action: 'copy', run: act1(act.copyPipeline, p) },
      { label: t('common.delete'), action: 'delete', danger: true, run: act1(act.deletePipeline, p) },
    ], t('pipeline.more_for', { name: p.name }));
    const source = p.source ? [h('span', { class: 'repo' }, p.source.repo), p.source.branch ? h('span', { class: 'branch' }, p.source.branch) : null] : h('span', { class: 'muted' }, t('common.none'));
    return h('tr', { 'data-pipeline': p.name },
      h('td', {}, h('a', { href: `/pipelines/${p.id}`, class: 'name' }, p.name)),
      h('td', {}, h('span', { class: 'pill ' + (p.active ? 'on' : 'off') }, p.active ? t('common.active') : t('common.inactive'))),
      h('td', { class: 'source' }, source),
      h('td', {}, last ? h('a', { href: `/runs/${last.id}` }, badge(last.status), ` #${last.number}`) : h('span', { class: 'muted' }, t('pipelines.never_run'))),
      h('td', {}, last ? fmtTime(last.created_at) : '—'),
      h('td', { class: 'actions' },
        running
          ? h('button', { type: 'button', class: 'secondary', 'data-action': 'stop', 'aria-label': t('pipeline.stop_named', { name: p.name }), onclick: act1(act.stopLatest, p) }, t('common.stop'))
          : h('button', { type: 'button', class: 'secondary', 'data-action': 'run', 'aria-label': t('pipeline.run_named', { name: p.name }), disabled: !p.active, title: p.active ? '' : t('pipelines.inactive_hint'), onclick: act1(act.runPipeline, p) }, t('common.run')),
        more));
  });
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list pipelines' },
    h('thead', {}, h('tr', {}, [t('common.name'), t('common.status'), t('pipelines.col_source'), t('pipelines.col_last_run'), t('pipelines.col_last_run_time'), ''].map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows)));
}

function pager(data, page) {
  const pages = Math.max(1, Math.ceil(data.total / PAGE));
  if (pages === 1) return h('p', { class: 'muted count' }, t('pipelines.count', { n: data.total }));
  return h('nav', { class: 'pager', 'aria-label': t('pager.label') },
    page > 1 ? h('a', { href: `/pipelines?page=${page - 1}` }, t('pager.previous')) : null,
    h('span', {}, t('pipelines.page_of', { page, pages, total: data.total })),
    page < pages ? h('a', { href: `/pipelines?page=${page + 1}` }, t('pager.next')) : null);
}
