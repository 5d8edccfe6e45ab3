// The actions on a pipeline that the list and the details page share: run, stop,
// edit triggers, advanced settings, activate/deactivate, copy, delete, and the
// create dialog. Each resolves true when something changed.
import { api, h, field, formDialog, confirmDialog, toast, ApiError } from './ui.js';
import { navigate } from './app.js';

const MAX_MINUTES = 14 * 24 * 60;

/// Saves a changed definition as a new version: the server writes the YAML from the
/// model and validates it, as the card editor does.
export async function saveDefinition(id, definition, run = false) {
  const checked = await api('/pipelines/validate', { method: 'POST', body: { definition } });
  if (!checked.valid) {
    throw new ApiError(422, 'the pipeline is not valid', checked.diagnostics);
  }
  return api(`/pipelines/${id}${run ? '?run=true' : ''}`, { method: 'PUT', body: checked.yaml });
}

/// A field per pipeline parameter (as Jenkins' "Build with Parameters"): its default
/// filled in, a list for `choices`, required ones marked, the description as the hint.
/// `values()` gives what to send: every parameter, as typed or chosen.
export function parameterFields(parameters) {
  const controls = (parameters || []).map((p) => {
    const name = typeof p === 'string' ? p : p.name;
    const def = p.default !== undefined ? p.default : (p.choices && p.choices.length ? p.choices[0] : undefined);
    const required = def === undefined;
    const control = p.choices && p.choices.length
      ? h('select', { name: `param-${name}`, 'data-param': name }, p.choices.map((c) => h('option', { value: c, selected: c === def }, c)))
      : h('input', { name: `param-${name}`, 'data-param': name, value: def || '', required, autocomplete: 'off' });
    const hint = [p.description, required ? 'Required: it has no default.' : null].filter(Boolean).join(' · ');
    return { name, control, element: field(required ? `${name} *` : name, control, hint || null) };
  });
  return {
    elements: controls.map((c) => c.element),
    values: () => Object.fromEntries(controls.map((c) => [c.name, c.control.value])),
    setDisabled: (off) => controls.forEach((c) => { c.control.disabled = off; }),
  };
}

/// Starts a run: asks for the pipeline's parameters when it has some, else confirms.
export async function runPipeline(p) {
  const shown = await api(`/pipelines/${p.id}`);
  const parameters = (shown.definition && shown.definition.parameters) || [];
  const fields = parameterFields(parameters);
  const run = await formDialog(parameters.length ? `Run “${p.name}” with parameters` : 'Run pipeline', (form) => {
    form.append(h('p', {}, parameters.length ? `Start a run of “${p.name}” with these parameters:` : `Start a run of “${p.name}” now?`),
      ...fields.elements);
  }, {
    submitLabel: 'Run',
    submit: () => api(`/pipelines/${p.id}/runs`, { method: 'POST', body: { parameters: fields.values() } }),
  });
  if (!run) return false;
  toast(`Run #${run.number} of ${p.name} started.`);
  return run;
}

export async function stopLatest(p) {
  const shown = await api(`/pipelines/${p.id}`);
  const number = shown.active_runs && shown.active_runs[shown.active_runs.length - 1];
  const last = shown.last_run;
  if (!last || !number) { toast(`“${p.name}” has no run in progress.`); return false; }
  if (!await confirmDialog('Stop pipeline', `Stop the latest run of “${p.name}”?`, 'Stop')) return false;
  await api(`/runs/${last.id}/stop`, { method: 'POST' });
  toast(`Stopping run #${last.number}.`);
  return true;
}

export async function stopRun(run) {
  if (!await confirmDialog('Stop run', `Stop run #${run.number}?`, 'Stop')) return false;
  await api(`/runs/${run.id}/stop`, { method: 'POST' });
  toast(`Stopping run #${run.number}.`);
  return true;
}

export async function rerun(run) {
  if (!await confirmDialog('Re-run', `Run #${run.number} again with the configuration it had at the time?`, 'Re-run')) return false;
  const started = await api(`/runs/${run.id}/rerun`, { method: 'POST' });
  toast(`Run #${started.number} started (re-run of #${run.number}).`);
  return started;
}

export async function retry(run) {
  if (!await confirmDialog('Retry', `Start a new run from the stage where run #${run.number} failed, reusing what succeeded?`, 'Retry')) return false;
  const started = await api(`/runs/${run.id}/retry`, { method: 'POST' });
  toast(`Run #${started.number} started (retry of #${run.number}).`);
  return started;
}

export async function setActive(p, active) {
  const verb = active ? 'Activate' : 'Deactivate';
  const text = active ? `Activate “${p.name}”? It will start runs again.` : `Deactivate “${p.name}”? It starts no runs until activated; its history is kept.`;
  if (!await confirmDialog(`${verb} pipeline`, text, verb)) return false;
  await api(`/pipelines/${p.id}/${active ? 'activate' : 'deactivate'}`, { method: 'POST' });
  toast(`${p.name} ${active ? 'activated' : 'deactivated'}.`);
  return true;
}

export async function deletePipeline(p) {
  if (!await confirmDialog('Delete pipeline', `Delete “${p.name}” with all its runs and logs? This cannot be undone.`, 'Delete', true)) return false;
  await api(`/pipelines/${p.id}`, { method: 'DELETE' });
  toast(`${p.name} deleted.`);
  return true;
}

export async function copyPipeline(p) {
  const name = h('input', { name: 'name', value: p.name + '-copy', required: true, pattern: '[A-Za-z0-9_.\\-]{1,64}' });
  const saved = await formDialog('Copy pipeline', (form) => {
    form.append(h('p', {}, `A new pipeline with the stages, tasks and settings of “${p.name}”. It starts inactive, so its triggers fire nothing until you activate it.`),
      field('New name', name, 'Letters, digits, _ . - ; up to 64.'));
  }, { submitLabel: 'Copy', submit: () => api(`/pipelines/${p.id}/copy`, { method: 'POST', body: { name: name.value.trim() } }) });
  if (saved) toast(`Copied to ${saved.name} (inactive until you activate it).`);
  return saved;
}

export async function advancedSettings(p) {
  const shown = await api(`/pipelines/${p.id}`);
  const definition = shown.definition;
  const current = definition.timeout ? Math.round(definition.timeout / 60000) : 0;
  const minutes = h('input', { name: 'timeout', type: 'number', min: 0, max: MAX_MINUTES, step: 1, value: current, required: true });
  const saved = await formDialog('Advanced settings', (form) => {
    form.append(field('Timeout (minutes)', minutes,
      'If a run does not finish within this time it is stopped. 0 = run until it succeeds or fails (at most 14 days).'));
  }, {
    submit: () => {
      const n = Number(minutes.value);
      if (!Number.isInteger(n) || n < 0 || n > MAX_MINUTES) throw new Error(`The timeout is a whole number of minutes from 0 to ${MAX_MINUTES} (14 days).`);
      definition.timeout = n * 60000;
      return saveDefinition(p.id, definition);
    },
  });
  if (saved) toast(`Timeout of ${p.name} saved.`);
  return !!saved;
}

const TIMER_KINDS = ['every_minutes', 'every_hours', 'daily', 'weekly', 'monthly', 'cron'];
const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];

/// The model nests a trigger's fields under its kind: {daily: {daily: "02:30"}}.
function kindOf(trigger) {
  for (const k of ['events', ...TIMER_KINDS]) if (trigger[k] && typeof trigger[k] === 'object' && !Array.isArray(trigger[k])) return [k, trigger[k]];
  return [null, {}];
}

export async function editTriggers(p) {
  const shown = await api(`/pipelines/${p.id}`);
  const definition = shown.definition;
  const triggers = definition.triggers || [];
  const eventTrigger = triggers.map(kindOf).find(([k]) => k === 'events');
  const timer = triggers.map((t) => [t, ...kindOf(t)]).find(([, k]) => TIMER_KINDS.includes(k));
  const ev = eventTrigger ? eventTrigger[1] : { events: [], branches: [] };
  const boxes = ['push', 'merge', 'tag'].map((e) => h('input', { type: 'checkbox', name: 'event-' + e, value: e, checked: ev.events.includes(e) }));
  const labels = { push: 'Code pushed (commit)', merge: 'Merge request', tag: 'Tag pushed' };
  const branches = h('input', { name: 'branches', value: (ev.branches || []).join(', '), placeholder: 'master, release/*' });
  const kind = h('select', { name: 'timer-kind' },
    h('option', { value: '' }, 'No timer'),
    h('option', { value: 'every_minutes' }, 'Every n minutes'),
    h('option', { value: 'every_hours' }, 'Every n hours'),
    h('option', { value: 'daily' }, 'Every day'),
    h('option', { value: 'weekly' }, 'Every week'),
    h('option', { value: 'monthly' }, 'Every month'),
    h('option', { value: 'cron' }, 'Cron expression'));
  const t = timer ? timer[2] : {};
  kind.value = timer ? timer[1] : '';
  const n = h('input', { name: 'n', type: 'number', min: 1, value: t.every_minutes || t.every_hours || t.monthly || 5 });
  const minute = h('input', { name: 'at-minute', type: 'number', min: 0, max: 59, value: t.at_minute ?? 0 });
  const at = h('input', { name: 'at', type: 'time', value: t.daily || t.at || '02:00' });
  const days = DAYS.map((d) => h('input', { type: 'checkbox', name: 'day-' + d, value: d, checked: (t.weekly || []).includes(d) }));
  const cron = h('input', { name: 'cron', value: t.cron || '*/15 * * * *' });
  const hint = h('p', { class: 'hint' });
  const rows = {
    n: field('n', n), minute: field('At minute', minute), at: field('At', at), cron: field('Cron', cron),
    days: h('fieldset', { class: 'days' }, h('legend', {}, 'Days'), days.map((d) => h('label', {}, d, ' ' + d.value))),
  };
  const show = () => {
    const k = kind.value;
    rows.n.hidden = !['every_minutes', 'every_hours', 'monthly'].includes(k);
    rows.n.querySelector('label').textContent = k === 'monthly' ? 'Day of the month' : k === 'every_hours' ? 'Hours' : 'Minutes';
    rows.minute.hidden = k !== 'every_hours';
    rows.at.hidden = !['daily', 'weekly', 'monthly'].includes(k);
    rows.days.hidden = k !== 'weekly';
    rows.cron.hidden = k !== 'cron';
    hint.textContent = k === 'every_minutes' || k === 'every_hours'
      ? 'Fires at the next whole multiple of n (every 2 minutes from 14:53:21 → 14:54, 14:56, …).' : '';
  };
  kind.addEventListener('change', show);
  show();
  const saved = await formDialog('Edit triggers', (form) => {
    form.append(
      h('fieldset', {}, h('legend', {}, 'Event triggers'), boxes.map((b) => h('label', { class: 'check' }, b, ' ' + labels[b.value])),
        field('Branches', branches, 'Comma-separated; * matches within a path segment. Empty = every branch.')),
      h('fieldset', {}, h('legend', {}, 'Timer'), field('Period', kind), rows.n, rows.minute, rows.at, rows.days, rows.cron, hint));
  }, {
    submit: () => {
      const kept = triggers.filter((tr) => { const [k] = kindOf(tr); return k !== 'events' && !TIMER_KINDS.includes(k); });
      const events = boxes.filter((b) => b.checked).map((b) => b.value);
      if (events.length) {
        const list = branches.value.split(',').map((s) => s.trim()).filter(Boolean);
        kept.push({ events: { events, branches: list } });
      }
      const k = kind.value;
      const num = Number(n.value);
      const old = timer ? { timezone: timer[0].timezone, missed: timer[0].missed } : {};
      const base = Object.fromEntries(Object.entries(old).filter(([, v]) => v !== undefined && v !== null));
      if (k === 'every_minutes') kept.push({ ...base, every_minutes: { every_minutes: num } });
      if (k === 'every_hours') kept.push({ ...base, every_hours: { every_hours: num, at_minute: Number(minute.value) } });
      if (k === 'daily') kept.push({ ...base, daily: { daily: at.value } });
      if (k === 'weekly') {
        const chosen = days.filter((d) => d.checked).map((d) => d.value);
        if (!chosen.length) throw new Error('Choose at least one day of the week.');
        kept.push({ ...base, weekly: { weekly: chosen, at: at.value } });
      }
      if (k === 'monthly') kept.push({ ...base, monthly: { monthly: num, at: at.value } });
      if (k === 'cron') kept.push({ ...base, cron: { cron: cron.value.trim() } });
      definition.triggers = kept;
      return saveDefinition(p.id, definition);
    },
  });
  if (saved) toast(`Triggers of ${p.name} saved.`);
  return !!saved;
}

/// "Create pipeline": from scratch (the editor with the default stages) or a copy of
/// an existing pipeline opened in the editor.
export async function createDialog() {
  const scratch = h('input', { type: 'radio', name: 'how', value: 'scratch', checked: true });
  const copy = h('input', { type: 'radio', name: 'how', value: 'copy' });
  const source = h('select', { name: 'source', disabled: true });
  const page = await api('/pipelines?limit=200');
  for (const p of page.items) source.append(h('option', { value: p.id }, p.name));
  if (!page.items.length) copy.disabled = true;
  const sync = () => { source.disabled = !copy.checked; };
  scratch.addEventListener('change', sync);
  copy.addEventListener('change', sync);
  const chosen = await formDialog('Create pipeline', (form) => {
    form.append(
      h('label', { class: 'choice' }, scratch, h('span', {}, h('strong', {}, 'From scratch'), h('small', {}, 'Start from the stages Source, Build, Test and Deploy.'))),
      h('label', { class: 'choice' }, copy, h('span', {}, h('strong', {}, 'Copy an existing pipeline'), h('small', {}, page.items.length ? 'Its stages, tasks and timeout, to edit before saving; the original is unchanged.' : 'There is no pipeline to copy yet.'))),
      field('Pipeline to copy', source));
  }, { submitLabel: 'Next', submit: () => (copy.checked ? { copy: source.value } : { scratch: true }) });
  if (!chosen) return;
  navigate(chosen.copy ? `/pipelines/new?copy=${encodeURIComponent(chosen.copy)}` : '/pipelines/new');
}
