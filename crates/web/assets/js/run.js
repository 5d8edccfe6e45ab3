// The run page: header (number, status, start, duration, cause), a row per stage and
// task updating live, and the selected task's log streaming live.
import { api, h, t, badge, fmtTime, fmtDuration, describeCause, errorBox, toast, errorText, isTerminal, saveText, keepFocus } from './ui.js';
import { apiFetch } from './auth.js';
import { logView } from './log.js';
import { rerun, retry, stopRun } from './dialogs.js';
import { navigate } from './app.js';
import { decisionPanel } from './approvals.js';

export async function render(main, [id], query) {
  let run;
  try {
    run = await api(`/runs/${encodeURIComponent(id)}`);
  } catch (e) {
    main.append(errorBox(e, t('run.load_failed', { id })));
    return;
  }
  const header = h('div', { class: 'run-head' });
  const steps = h('div', { class: 'steps' });
  const logBox = h('div', { class: 'log-box' });
  const approvalBox = h('div', { class: 'approval-box' });
  const notifications = h('div', { class: 'notifications' });
  let approvalShown = '';
  main.append(header, h('div', { class: 'run-body' }, steps, logBox), notifications);

  // Until the user picks a task, the page follows what they came for (landing below).
  let chosen = Boolean(query.get('task'));
  let selected = query.get('task') || landing(run);
  let view = null;
  let poll = null;
  let stopped = false;

  function select(name) {
    if (view) view.close();
    selected = name;
    const url = new URL(location.href);
    url.searchParams.set('task', name);
    history.replaceState(null, '', url.pathname + url.search);
    view = logView(`/api/v1/runs/${run.id}/tasks/${encodeURIComponent(name)}/log/stream`);
    approvalShown = '';
    drawApproval();
    logBox.replaceChildren(h('h2', { class: 'log-title' }, t('run.log_of'), name), approvalBox, view.element);
    drawSteps();
  }

  /// The selected approval task's question, decisions and buttons; drawn again only
  /// when they change, so a comment being typed survives the live updates.
  function drawApproval() {
    const task = run.stages.flatMap((s) => s.tasks).find((x) => x.name === selected);
    const approval = task && task.approval;
    const shown = approval ? JSON.stringify([task.status, approval.decisions || []]) : '';
    if (shown === approvalShown) return;
    approvalShown = shown;
    approvalBox.replaceChildren(approval
      ? h('section', { 'aria-label': t('approvals.panel') }, h('h3', {}, t('approvals.panel')), decisionPanel(run.id, task.name, approval, task.status === 'waiting', refresh))
      : '');
  }

  /// Every delivery attempt of the run's notifications.
  function drawNotifications() {
    const attempts = run.notifications || [];
    notifications.replaceChildren(attempts.length
      ? h('section', { 'aria-labelledby': 'notifications-title' },
        h('h2', { id: 'notifications-title' }, t('notify.title')),
        h('table', { class: 'list notify-table' },
          h('thead', {}, h('tr', {}, [t('notify.when'), t('notify.event'), t('notify.channel'), t('notify.target'), t('notify.attempt'), t('notify.outcome'), t('notify.detail')].map((x) => h('th', { scope: 'col' }, x)))),
          h('tbody', {}, attempts.map((a) => h('tr', { 'data-outcome': a.outcome },
            h('td', {}, fmtTime(a.at)), h('td', {}, t(`notify.event_${a.event}`)), h('td', {}, a.channel), h('td', {}, h('code', {}, a.target)),
            h('td', {}, String(a.attempt)), h('td', {}, t(`notify.outcome_${a.outcome}`)), h('td', {}, a.detail))))))
      : '');
  }

  function drawHeader() {
    document.title = `#${run.number} ${run.pipeline} · Wharf`;
    const running = !isTerminal(run.status);
    header.replaceChildren(
      h('nav', { class: 'crumbs', 'aria-label': t('crumbs.label') }, h('a', { href: '/pipelines' }, t('nav.pipelines')), ' / ',
        h('a', { href: `/pipelines/${run.pipeline_id}` }, run.pipeline), ' / ', t('run.crumb')),
      h('div', { class: 'page-head' },
        h('h1', {}, t('run.title', { number: run.number })), badge(run.status), h('span', { class: 'spacer' }),
        h('button', { type: 'button', class: 'secondary', 'data-action': 'download', onclick: download }, t('run.download')),
        running ? h('button', { type: 'button', class: 'secondary', 'data-action': 'stop', onclick: () => stopRun(run).then(refresh).catch(fail) }, t('common.stop')) : null,
        h('button', { type: 'button', class: 'secondary', 'data-action': 'rerun', onclick: () => rerun(run).then((r) => r && navigate(`/runs/${r.id}`)).catch(fail) }, t('common.rerun')),
        ['failed', 'timed_out', 'stopped'].includes(run.status)
          ? h('button', { type: 'button', class: 'secondary', 'data-action': 'retry', title: t('run.retry_hint'), onclick: () => retry(run).then((r) => r && navigate(`/runs/${r.id}`)).catch(fail) }, t('run.retry'))
          : null),
      h('dl', { class: 'facts' },
        fact(t('common.status'), badge(run.status)), fact(t('common.started'), fmtTime(run.started_at || null)),
        fact(t('common.duration'), fmtDuration(run.duration_ms)), fact(t('run.cause'), describeCause(run.cause)),
        run.commit ? fact(t('run.commit'), h('code', {}, run.commit.slice(0, 12))) : null,
        run.reason ? fact(t('run.reason'), run.reason) : null));
  }

  function drawSteps() {
    const rows = [];
    if (run.checkout) rows.push(stepRow(t('run.source'), '@checkout', t('run.check_out', { ref: run.checkout.branch || run.checkout.tag || '' }).trim(), run.checkout));
    run.stages.forEach((stage, i) => {
      stage.tasks.forEach((task, j) => rows.push(stepRow(j === 0 ? `${i + 1} ${stage.name}` : '', task.name, task.name, task, stage)));
      if (!stage.tasks.length) rows.push(h('tr', {}, h('td', {}, `${i + 1} ${stage.name}`), h('td', {}, '—'), h('td', {}, badge(stage.status)), h('td', {}, fmtDuration(stage.duration_ms))));
    });
    steps.replaceChildren(h('table', { class: 'list steps-table' },
      h('caption', { class: 'visually-hidden' }, t('run.steps_caption')),
      h('thead', {}, h('tr', {}, [t('run.stage'), t('run.task'), t('common.status'), t('common.duration')].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows)));
  }

  function stepRow(stageLabel, key, label, part) {
    const current = key === selected;
    return h('tr', { class: current ? 'selected' : '', 'data-task': key },
      h('td', {}, stageLabel),
      h('td', {}, h('button', { type: 'button', class: 'link', 'aria-pressed': current ? 'true' : 'false', onclick: () => { chosen = true; select(key); } }, label)),
      h('td', {}, badge(part.status)),
      h('td', {}, fmtDuration(part.duration_ms)));
  }

  async function download() {
    try {
      const response = await apiFetch(`/api/v1/runs/${run.id}/log`);
      if (!response.ok) throw new Error(t('run.download_failed', { status: response.status }));
      saveText(`${run.pipeline}-${run.number}.log`, await response.blob());
    } catch (e) { fail(e); }
  }

  async function refresh() {
    try {
      run = await api(`/runs/${run.id}`);
      keepFocus(header, drawHeader);
      drawApproval();
      drawNotifications();
      const next = chosen ? selected : landing(run);
      if (next && next !== selected) select(next);
      else keepFocus(steps, drawSteps);
    } catch (e) { fail(e); }
  }

  async function tick() {
    if (stopped) return;
    await refresh();
    if (stopped) return;
    // Notifications are sent after the run ends: a few more looks for their attempts.
    if (!isTerminal(run.status) || after++ < 10) poll = setTimeout(tick, 1000);
  }

  drawHeader();
  drawNotifications();
  if (selected) select(selected); else drawSteps();
  // Notifications are sent after the run ends: keep looking a little longer.
  let after = 0;
  if (!isTerminal(run.status)) poll = setTimeout(tick, 1000);
  else if (!(run.notifications || []).length) poll = setTimeout(tick, 1000);
  return () => { stopped = true; clearTimeout(poll); if (view) view.close(); };
}

/// The task a run page opens on: the first that failed or timed out (what a user opens a
/// failed run for), else the one running or waiting now (the newest started), else the
/// first that ran, else the first.
function landing(run) {
  if (run.checkout && ['failed', 'timed_out'].includes(run.checkout.status)) return '@checkout';
  const tasks = run.stages.flatMap((s) => s.tasks);
  const failed = tasks.find((t) => t.status === 'failed' || t.status === 'timed_out');
  if (failed) return failed.name;
  const active = tasks.filter((t) => t.status === 'running' || t.status === 'waiting');
  if (active.length) return active[active.length - 1].name;
  const ran = tasks.find((t) => !['skipped', 'queued', 'pending'].includes(t.status));
  if (ran) return ran.name;
  if (!tasks.length && run.checkout) return '@checkout';
  return tasks.length ? tasks[0].name : null;
}

function fact(label, value) {
  return h('div', {}, h('dt', {}, label), h('dd', {}, value));
}

function fail(e) {
  toast(errorText(e), 'error');
}
