// The pipeline list: name, status, source, last run; run / stop; the "More" menu.
import { api, h, badge, fmtTime, menu, errorBox, toast, errorText, isTerminal, keepFocus, busyUi } from './ui.js';
import * as act from './dialogs.js';
import { navigate } from './app.js';

const PAGE = 50;

export async function render(main, _params, query) {
  document.title = 'Pipelines · Wharf';
  const page = Math.max(1, Number(query.get('page')) || 1);
  const body = h('div', { class: 'list-body' });
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Pipelines'), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'primary', 'data-action': 'create', onclick: () => act.createDialog().catch(fail) }, 'Create pipeline')),
    body);
  let timer = null;
  let stopped = false;
  async function load() {
    clearTimeout(timer);
    if (busyUi()) { timer = setTimeout(load, 1000); return; }
    let data;
    try {
      data = await api(`/pipelines?limit=${PAGE}&page=${page}`);
    } catch (e) {
      body.replaceChildren(errorBox(e, 'The pipelines could not be loaded.'));
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
    return h('div', { class: 'empty' }, h('p', {}, data.total ? 'No pipelines on this page.' : 'No pipelines yet.'),
      h('p', {}, 'Create one from scratch with the card editor, or copy an existing one.'));
  }
  const act1 = (fn, p) => async () => {
    try { if (await fn(p)) reload(); } catch (e) { fail(e); }
  };
  const rows = data.items.map((p) => {
    const last = p.last_run;
    const running = last && !isTerminal(last.status);
    const more = menu('More', [
      { label: 'Edit pipeline', action: 'edit', run: () => navigate(`/pipelines/${p.id}/edit`) },
      { label: 'Edit triggers', action: 'triggers', run: act1(act.editTriggers, p) },
      { label: 'Advanced settings', action: 'advanced', run: act1(act.advancedSettings, p) },
      p.active ? { label: 'Deactivate', action: 'deactivate', run: act1((x) => act.setActive(x, false), p) }
        : { label: 'Activate', action: 'activate', run: act1((x) => act.setActive(x, true), p) },
      { label: 'Copy', action: 'copy', run: act1(act.copyPipeline, p) },
      { label: 'Delete', action: 'delete', danger: true, run: act1(act.deletePipeline, p) },
    ], `More actions for ${p.name}`);
    const source = p.source ? [h('span', { class: 'repo' }, p.source.repo), p.source.branch ? h('span', { class: 'branch' }, p.source.branch) : null] : h('span', { class: 'muted' }, 'none');
    return h('tr', { 'data-pipeline': p.name },
      h('td', {}, h('a', { href: `/pipelines/${p.id}`, class: 'name' }, p.name)),
      h('td', {}, h('span', { class: 'pill ' + (p.active ? 'on' : 'off') }, p.active ? 'Active' : 'Inactive')),
      h('td', { class: 'source' }, source),
      h('td', {}, last ? h('a', { href: `/runs/${last.id}` }, badge(last.status), ` #${last.number}`) : h('span', { class: 'muted' }, 'never run')),
      h('td', {}, last ? fmtTime(last.created_at) : '—'),
      h('td', { class: 'actions' },
        running
          ? h('button', { type: 'button', class: 'secondary', 'data-action': 'stop', 'aria-label': `Stop ${p.name}`, onclick: act1(act.stopLatest, p) }, 'Stop')
          : h('button', { type: 'button', class: 'secondary', 'data-action': 'run', 'aria-label': `Run ${p.name}`, disabled: !p.active, title: p.active ? '' : 'Inactive: activate it to run', onclick: act1(act.runPipeline, p) }, 'Run'),
        more));
  });
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list pipelines' },
    h('thead', {}, h('tr', {}, ['Name', 'Status', 'Source', 'Last run', 'Last run time', ''].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows)));
}

function pager(data, page) {
  const pages = Math.max(1, Math.ceil(data.total / PAGE));
  if (pages === 1) return h('p', { class: 'muted count' }, `${data.total} pipeline${data.total === 1 ? '' : 's'}`);
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    page > 1 ? h('a', { href: `/pipelines?page=${page - 1}` }, '← Previous') : null,
    h('span', {}, `Page ${page} of ${pages} (${data.total} pipelines)`),
    page < pages ? h('a', { href: `/pipelines?page=${page + 1}` }, 'Next →') : null);
}
