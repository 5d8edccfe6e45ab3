// Approvals: the "waiting for me" page (GET /api/v1/approvals, each with its message
// and Approve/Reject), and the panel the run page shows for an approval task (the
// question, the decisions so far, and the buttons while it waits).
import { api, h, t, fmtTime, errorBox, toast, errorText } from './ui.js';
import { userName } from './auth.js';

export async function render(main) {
  document.title = t('approvals.title') + ' · Wharf';
  const list = h('div', { class: 'approvals' });
  main.append(h('div', { class: 'page-head' }, h('h1', {}, t('approvals.title'))), list);
  let stopped = false;
  let poll = null;

  async function refresh() {
    let answer;
    try {
      answer = await api('/approvals');
    } catch (e) {
      list.replaceChildren(errorBox(e, t('approvals.load_failed')));
      return;
    }
    if (!answer.items.length) {
      list.replaceChildren(h('p', { class: 'empty' }, t('approvals.none')));
      return;
    }
    list.replaceChildren(...answer.items.map((w) => h('section', { class: 'approval-card', 'data-run': String(w.run_id), 'data-task': w.task },
      h('h2', {}, h('a', { href: `/runs/${w.run_id}?task=${encodeURIComponent(w.task)}` }, t('approvals.which', { pipeline: w.pipeline, number: w.number, stage: w.stage, task: w.task }))),
      w.started_by ? h('p', { class: 'muted' }, t('approvals.started_by', { user: w.started_by }), ' · ', t('approvals.since', { time: fmtTime(w.since) })) : null,
      decisionPanel(w.run_id, w.task, { message: w.message, approvers: w.approvers, required: w.required, decisions: w.decisions }, true, refresh))));
  }

  async function tick() {
    if (stopped) return;
    await refresh();
    if (!stopped) poll = setTimeout(tick, 3000);
  }
  await tick();
  return () => { stopped = true; clearTimeout(poll); };
}

/// An approval's question, its decisions, and (while `waiting`) a comment box with the
/// Approve and Reject buttons; `done` runs after a decision was taken.
export function decisionPanel(runId, task, approval, waiting, done) {
  const decisions = approval.decisions || [];
  const approvals = decisions.filter((d) => d.verdict === 'approve').length;
  const comment = h('textarea', { name: 'comment', rows: 2, maxlength: 2000, 'aria-label': t('approvals.comment') });
  const decided = decisions.some((d) => d.user === userName());
  async function decide(verb) {
    try {
      const answer = await api(`/runs/${runId}/tasks/${encodeURIComponent(task)}/${verb}`, { method: 'POST', body: { comment: comment.value.trim() } });
      toast(t(`approvals.done_${answer.state}`, { task }));
      if (done) await done();
    } catch (e) {
      toast(errorText(e), 'error');
    }
  }
  return h('div', { class: 'approval-panel', 'data-approval': task },
    approval.message ? h('p', { class: 'approval-message' }, approval.message) : null,
    h('p', { class: 'muted' }, t('approvals.rule', { approvers: approval.approvers.length ? approval.approvers.join(', ') : t('approvals.administrators'), given: approvals, required: approval.required })),
    decisions.length
      ? h('ul', { class: 'decisions' }, decisions.map((d) => h('li', { 'data-user': d.user },
        t(d.verdict === 'approve' ? 'approvals.approved_by' : 'approvals.rejected_by', { user: d.user, time: fmtTime(d.at) }),
        d.comment ? h('q', {}, d.comment) : null)))
      : null,
    waiting && !decided
      ? h('div', { class: 'approval-actions' },
        h('label', {}, t('approvals.comment'), comment),
        h('div', { class: 'buttons' },
          h('button', { type: 'button', class: 'primary', 'data-action': 'approve', onclick: () => decide('approve') }, t('approvals.approve')),
          h('button', { type: 'button', class: 'danger', 'data-action': 'reject', onclick: () => decide('reject') }, t('approvals.reject'))))
      : null);
}
