// Pipeline details: basic info, triggers, advanced settings, latest run, and the run
// records (latest 50, then more) as a list or a timeline, each with re-run / stop.
import { api, h, badge, fmtTime, fmtDuration, describeCause, errorBox, toast, errorText, isTerminal, menu } from './ui.js';
import * as act from './dialogs.js';
import { navigate } from './app.js';

const PAGE = 50;

export async function render(main, [key]) {
  let p;
  try {
    p = await api(`/pipelines/${encodeURIComponent(key)}`);
  } catch (e) {
    main.append(errorBox(e, `Pipeline ${key} could not be loaded.`));
    return;
  }
  document.title = `${p.name} · Wharf`;
  const d = p.definition;
  const reload = () => navigate(location.pathname + location.search, true);
  const wrap = (fn) => async () => { try { if (await fn(p)) reload(); } catch (e) { toast(errorText(e), 'error'); } };
  main.append(
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '/pipelines' }, 'Pipelines'), ' / ', p.name),
    h('div', { class: 'page-head' }, h('h1', {}, p.name),
      h('span', { class: 'pill ' + (p.active ? 'on' : 'off') }, p.active ? 'Active' : 'Inactive'), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'primary', 'data-action': 'run', disabled: !p.active, onclick: async () => {
        try { const r = await act.runPipeline(p); if (r) navigate(`/runs/${r.id}`); } catch (e) { toast(errorText(e), 'error'); }
      } }, 'Run'),
      h('a', { class: 'button secondary', href: `/pipelines/${p.id}/edit` }, 'Edit'),
      menu('More', [
        { label: 'Edit triggers', action: 'triggers', run: wrap(act.editTriggers) },
        { label: 'Advanced settings', action: 'advanced', run: wrap(act.advancedSettings) },
        p.active ? { label: 'Deactivate', action: 'deactivate', run: wrap((x) => act.setActive(x, false)) }
          : { label: 'Activate', action: 'activate', run: wrap((x) => act.setActive(x, true)) },
        { label: 'Copy', action: 'copy', run: async () => { try { const c = await act.copyPipeline(p); if (c) navigate(`/pipelines/${c.id}`); } catch (e) { toast(errorText(e), 'error'); } } },
        { label: 'Delete', action: 'delete', danger: true, run: async () => { try { if (await act.deletePipeline(p)) navigate('/pipelines'); } catch (e) { toast(errorText(e), 'error'); } } },
      ], `More actions for ${p.name}`)),
    h('div', { class: 'cards' },
      card('Basic information', [
        ['Name', p.name], ['Status', p.active ? 'Active' : 'Inactive'],
        ['Repository', d.source ? d.source.repo : 'none'], ['Branch', d.source && d.source.branch ? d.source.branch : '—'],
        ['Project', p.project], ['Description', d.description || '—'],
        ['Version', String(p.version)], ['Created', fmtTime(p.created_at)], ['Updated', fmtTime(p.updated_at)],
      ]),
      card('Triggers', triggerRows(d.triggers || [])),
      card('Advanced settings', [['Timeout (minutes)', d.timeout ? String(Math.round(d.timeout / 60000)) : '0 (until done, at most 14 days)'], ['Concurrency', d.concurrency || 'queue']]),
      card('Latest run', p.last_run
        ? [['Run', h('a', { href: `/runs/${p.last_run.id}` }, `#${p.last_run.number}`)], ['Status', badge(p.last_run.status)], ['Started', fmtTime(p.last_run.created_at)]]
        : [['', 'Never run']])),
    await records(p));
}

function card(title, rows) {
  return h('section', { class: 'card' }, h('h2', {}, title),
    h('dl', { class: 'kv' }, rows.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))));
}

function triggerRows(triggers) {
  if (!triggers.length) return [['Manual only', 'No event or timer triggers']];
  return triggers.map((t) => {
    const kind = Object.keys(t).find((k) => t[k] && typeof t[k] === 'object' && !Array.isArray(t[k]));
    const f = kind ? t[kind] : {};
    const text = {
      events: () => `${f.events.join(', ')}${f.branches && f.branches.length ? ' on ' + f.branches.join(', ') : ''}`,
      every_minutes: () => `every ${f.every_minutes} minutes`,
      every_hours: () => `every ${f.every_hours} hours at minute ${f.at_minute}`,
      daily: () => `every day at ${f.daily}`,
      weekly: () => `${f.weekly.join(', ')} at ${f.at}`,
      monthly: () => `day ${f.monthly} of each month at ${f.at}`,
      cron: () => `cron ${f.cron}`,
    }[kind];
    return [kind === 'events' ? 'Events' : 'Timer', (text ? text() : kind) + (t.timezone ? ` (${t.timezone})` : '')];
  });
}

async function records(p) {
  const section = h('section', { class: 'records' });
  const listBtn = h('button', { type: 'button', class: 'tab', role: 'tab', 'aria-selected': 'true' }, 'List');
  const timeBtn = h('button', { type: 'button', class: 'tab', role: 'tab', 'aria-selected': 'false' }, 'Timeline');
  const body = h('div', { role: 'tabpanel' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true, 'data-action': 'more-runs' }, 'Show more');
  let items = [];
  let page = 0;
  let total = 0;
  let mode = 'list';
  section.append(h('div', { class: 'page-head' }, h('h2', {}, 'Run records'), h('span', { class: 'spacer' }),
    h('div', { role: 'tablist', 'aria-label': 'Show the records as' }, listBtn, timeBtn)), body, more);

  const act1 = (fn, r) => async () => {
    try { const x = await fn(r); if (x && x.id) navigate(`/runs/${x.id}`); else if (x) await reloadAll(); } catch (e) { toast(errorText(e), 'error'); }
  };
  const actions = (r) => [
    h('button', { type: 'button', class: 'secondary small', 'data-action': 'rerun', 'aria-label': `Re-run #${r.number}`, onclick: act1(act.rerun, r) }, 'Re-run'),
    isTerminal(r.status) ? null : h('button', { type: 'button', class: 'secondary small', 'data-action': 'stop', 'aria-label': `Stop #${r.number}`, onclick: act1(act.stopRun, r) }, 'Stop'),
  ];
  const ref = (r) => r.tag ? `tag ${r.tag}` : r.branch || '—';
  function draw() {
    if (!items.length) {
      body.replaceChildren(h('p', { class: 'empty' }, 'No runs yet. Start one with Run.'));
    } else if (mode === 'list') {
      body.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'list runs' },
        h('thead', {}, h('tr', {}, ['Run', 'Status', 'Cause', 'Branch', 'Commit', 'Started', 'Duration', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, items.map((r) => h('tr', { 'data-run': r.number },
          h('td', {}, h('a', { href: `/runs/${r.id}` }, `#${r.number}`)), h('td', {}, badge(r.status)),
          h('td', {}, describeCause(r.cause)), h('td', {}, ref(r)), h('td', {}, r.commit ? h('code', {}, r.commit.slice(0, 10)) : '—'),
          h('td', {}, fmtTime(r.started_at || r.created_at)), h('td', {}, fmtDuration(r.duration_ms)),
          h('td', { class: 'actions' }, actions(r))))))));
    } else {
      body.replaceChildren(h('ol', { class: 'timeline' }, items.map((r) => h('li', { 'data-run': r.number },
        h('time', {}, fmtTime(r.started_at || r.created_at)), badge(r.status),
        h('a', { href: `/runs/${r.id}` }, ` #${r.number}`), h('span', { class: 'muted' }, ` ${describeCause(r.cause)} · ${ref(r)} · ${fmtDuration(r.duration_ms)}`),
        h('span', { class: 'actions' }, actions(r))))));
    }
    more.hidden = items.length >= total;
  }
  async function load() {
    page += 1;
    const data = await api(`/pipelines/${p.id}/runs?full=true&limit=${PAGE}&page=${page}`);
    items = items.concat(data.items);
    total = data.total;
    draw();
  }
  async function reloadAll() { items = []; page = 0; await load(); }
  const setMode = (m) => {
    mode = m;
    listBtn.setAttribute('aria-selected', String(m === 'list'));
    timeBtn.setAttribute('aria-selected', String(m === 'timeline'));
    draw();
  };
  listBtn.addEventListener('click', () => setMode('list'));
  timeBtn.addEventListener('click', () => setMode('timeline'));
  more.addEventListener('click', () => load().catch((e) => toast(errorText(e), 'error')));
  try { await load(); } catch (e) { body.replaceChildren(errorBox(e, 'The run records could not be loaded.')); }
  return section;
}
