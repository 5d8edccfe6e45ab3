// Pipeline details: basic info, triggers, advanced settings, latest run, and the run
// records (latest 50, then more) as a list or a timeline, each with re-run / stop.
import { api, h, t, badge, fmtTime, fmtDuration, describeCause, errorBox, toast, errorText, isTerminal, menu } from './ui.js';
import * as act from './dialogs.js';
import { navigate } from './app.js';

const PAGE = 50;

export async function render(main, [key]) {
  let p;
  try {
    p = await api(`/pipelines/${encodeURIComponent(key)}`);
  } catch (e) {
    main.append(errorBox(e, t('details.load_failed', { key })));
    return;
  }
  document.title = `${p.name} · Wharf`;
  const d = p.definition;
  const reload = () => navigate(location.pathname + location.search, true);
  const wrap = (fn) => async () => { try { if (await fn(p)) reload(); } catch (e) { toast(errorText(e), 'error'); } };
  main.append(
    h('nav', { class: 'crumbs', 'aria-label': t('crumbs.label') }, h('a', { href: '/pipelines' }, t('nav.pipelines')), ' / ', p.name),
    h('div', { class: 'page-head' }, h('h1', {}, p.name),
      h('span', { class: 'pill ' + (p.active ? 'on' : 'off') }, p.active ? t('common.active') : t('common.inactive')), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'primary', 'data-action': 'run', disabled: !p.active, onclick: async () => {
        try { const r = await act.runPipeline(p); if (r) navigate(`/runs/${r.id}`); } catch (e) { toast(errorText(e), 'error'); }
      } }, t('common.run')),
      h('a', { class: 'button secondary', href: `/pipelines/${p.id}/edit` }, t('common.edit')),
      menu(t('common.more'), [
        { label: t('pipeline.edit_triggers'), action: 'triggers', run: wrap(act.editTriggers) },
        { label: t('pipeline.advanced'), action: 'advanced', run: wrap(act.advancedSettings) },
        p.active ? { label: t('pipeline.deactivate'), action: 'deactivate', run: wrap((x) => act.setActive(x, false)) }
          : { label: t('pipeline.activate'), action: 'activate', run: wrap((x) => act.setActive(x, true)) },
        { label: t('common.copy'), action: 'copy', run: async () => { try { const c = await act.copyPipeline(p); if (c) navigate(`/pipelines/${c.id}`); } catch (e) { toast(errorText(e), 'error'); } } },
        { label: t('common.delete'), action: 'delete', danger: true, run: async () => { try { if (await act.deletePipeline(p)) navigate('/pipelines'); } catch (e) { toast(errorText(e), 'error'); } } },
      ], t('pipeline.more_for', { name: p.name }))),
    h('div', { class: 'cards' },
      card(t('details.basic'), [
        [t('common.name'), p.name], [t('common.status'), p.active ? t('common.active') : t('common.inactive')],
        [t('details.repository'), d.source ? d.source.repo : t('common.none')], [t('details.branch'), d.source && d.source.branch ? d.source.branch : '—'],
        [t('details.project'), p.project], [t('details.description'), d.description || '—'],
        [t('details.version'), String(p.version)], [t('common.created'), fmtTime(p.created_at)], [t('details.updated'), fmtTime(p.updated_at)],
      ]),
      card(t('details.triggers'), triggerRows(d.triggers || [])),
      card(t('pipeline.advanced'), [[t('pipeline.timeout_minutes'), d.timeout ? String(Math.round(d.timeout / 60000)) : t('details.no_timeout')], [t('details.concurrency'), d.concurrency || 'queue']]),
      card(t('details.latest_run'), p.last_run
        ? [[t('details.run'), h('a', { href: `/runs/${p.last_run.id}` }, `#${p.last_run.number}`)], [t('common.status'), badge(p.last_run.status)], [t('common.started'), fmtTime(p.last_run.created_at)]]
        : [['', t('details.never_run')]])),
    await records(p));
}

function card(title, rows) {
  return h('section', { class: 'card' }, h('h2', {}, title),
    h('dl', { class: 'kv' }, rows.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))));
}

function triggerRows(triggers) {
  if (!triggers.length) return [[t('details.manual_only'), t('details.no_triggers')]];
  return triggers.map((tr) => {
    const kind = Object.keys(tr).find((k) => tr[k] && typeof tr[k] === 'object' && !Array.isArray(tr[k]));
    const f = kind ? tr[kind] : {};
    const text = {
      events: () => f.branches && f.branches.length ? t('trigger.events_on', { events: f.events.join(', '), branches: f.branches.join(', ') }) : f.events.join(', '),
      every_minutes: () => t('trigger.every_minutes', { n: f.every_minutes }),
      every_hours: () => t('trigger.every_hours', { n: f.every_hours, minute: f.at_minute }),
      daily: () => t('trigger.daily', { at: f.daily }),
      weekly: () => t('trigger.weekly', { days: f.weekly.map((d) => t('day.' + d)).join(', '), at: f.at }),
      monthly: () => t('trigger.monthly', { day: f.monthly, at: f.at }),
      cron: () => t('trigger.cron', { cron: f.cron }),
    }[kind];
    return [kind === 'events' ? t('details.events') : t('cause.timer'), (text ? text() : kind) + (tr.timezone ? ` (${tr.timezone})` : '')];
  });
}

async function records(p) {
  const section = h('section', { class: 'records' });
  const listBtn = h('button', { type: 'button', class: 'tab', role: 'tab', 'aria-selected': 'true' }, t('details.list'));
  const timeBtn = h('button', { type: 'button', class: 'tab', role: 'tab', 'aria-selected': 'false' }, t('details.timeline'));
  const body = h('div', { role: 'tabpanel' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true, 'data-action': 'more-runs' }, t('details.show_more'));
  let items = [];
  let page = 0;
  let total = 0;
  let mode = 'list';
  section.append(h('div', { class: 'page-head' }, h('h2', {}, t('details.records')), h('span', { class: 'spacer' }),
    h('div', { role: 'tablist', 'aria-label': t('details.show_as') }, listBtn, timeBtn)), body, more);

  const act1 = (fn, r) => async () => {
    try { const x = await fn(r); if (x && x.id) navigate(`/runs/${x.id}`); else if (x) await reloadAll(); } catch (e) { toast(errorText(e), 'error'); }
  };
  const actions = (r) => [
    h('button', { type: 'button', class: 'secondary small', 'data-action': 'rerun', 'aria-label': t('run.rerun_number', { number: r.number }), onclick: act1(act.rerun, r) }, t('common.rerun')),
    isTerminal(r.status) ? null : h('button', { type: 'button', class: 'secondary small', 'data-action': 'stop', 'aria-label': t('run.stop_number', { number: r.number }), onclick: act1(act.stopRun, r) }, t('common.stop')),
  ];
  const ref = (r) => r.tag ? t('details.tag_ref', { tag: r.tag }) : r.branch || '—';
  function draw() {
    if (!items.length) {
      body.replaceChildren(h('p', { class: 'empty' }, t('details.no_runs')));
    } else if (mode === 'list') {
      body.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'list runs' },
        h('thead', {}, h('tr', {}, [t('details.run'), t('common.status'), t('run.cause'), t('details.branch'), t('run.commit'), t('common.started'), t('common.duration'), ''].map((x) => h('th', { scope: 'col' }, x)))),
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
  try { await load(); } catch (e) { body.replaceChildren(errorBox(e, t('details.records_failed'))); }
  return section;
}
