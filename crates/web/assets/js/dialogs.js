// The actions on a pipeline that the list and the details page share: run, stop,
// edit triggers, advanced settings, activate/deactivate, copy, delete, and the
// create dialog. Each resolves true when something changed.
import { api, h, t, field, formDialog, confirmDialog, toast, ApiError } from './ui.js';
import { navigate } from './app.js';

const MAX_MINUTES = 14 * 24 * 60;

/// Saves a changed definition as a new version: the server writes the YAML from the
/// model and validates it, as the card editor does.
export async function saveDefinition(id, definition, run = false) {
  const checked = await api('/pipelines/validate', { method: 'POST', body: { definition } });
  if (!checked.valid) {
    throw new ApiError(422, t('pipeline.not_valid'), checked.diagnostics);
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
    const hint = [p.description, required ? t('params.required') : null].filter(Boolean).join(' · ');
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
  const run = await formDialog(parameters.length ? t('run_dialog.title_params', { name: p.name }) : t('run_dialog.title'), (form) => {
    form.append(h('p', {}, parameters.length ? t('run_dialog.text_params', { name: p.name }) : t('run_dialog.text', { name: p.name })),
      ...fields.elements);
  }, {
    submitLabel: t('common.run'),
    submit: () => api(`/pipelines/${p.id}/runs`, { method: 'POST', body: { parameters: fields.values() } }),
  });
  if (!run) return false;
  toast(t('run_dialog.started', { number: run.number, name: p.name }));
  return run;
}

export async function stopLatest(p) {
  const shown = await api(`/pipelines/${p.id}`);
  const number = shown.active_runs && shown.active_runs[shown.active_runs.length - 1];
  const last = shown.last_run;
  if (!last || !number) { toast(t('stop.none', { name: p.name })); return false; }
  if (!await confirmDialog(t('stop.pipeline_title'), t('stop.pipeline_text', { name: p.name }), t('common.stop'))) return false;
  await api(`/runs/${last.id}/stop`, { method: 'POST' });
  toast(t('stop.stopping', { number: last.number }));
  return true;
}

export async function stopRun(run) {
  if (!await confirmDialog(t('stop.run_title'), t('stop.run_text', { number: run.number }), t('common.stop'))) return false;
  await api(`/runs/${run.id}/stop`, { method: 'POST' });
  toast(t('stop.stopping', { number: run.number }));
  return true;
}

export async function rerun(run) {
  if (!await confirmDialog(t('common.rerun'), t('rerun.text', { number: run.number }), t('common.rerun'))) return false;
  const started = await api(`/runs/${run.id}/rerun`, { method: 'POST' });
  toast(t('rerun.started', { number: started.number, of: run.number }));
  return started;
}

export async function retry(run) {
  if (!await confirmDialog(t('retry.title'), t('retry.text', { number: run.number }), t('retry.title'))) return false;
  const started = await api(`/runs/${run.id}/retry`, { method: 'POST' });
  toast(t('retry.started', { number: started.number, of: run.number }));
  return started;
}

export async function setActive(p, active) {
  const verb = active ? t('pipeline.activate') : t('pipeline.deactivate');
  const text = active ? t('activate.text', { name: p.name }) : t('deactivate.text', { name: p.name });
  if (!await confirmDialog(active ? t('activate.title') : t('deactivate.title'), text, verb)) return false;
  await api(`/pipelines/${p.id}/${active ? 'activate' : 'deactivate'}`, { method: 'POST' });
  toast(active ? t('activate.done', { name: p.name }) : t('deactivate.done', { name: p.name }));
  return true;
}

export async function deletePipeline(p) {
  if (!await confirmDialog(t('delete.title'), t('delete.text', { name: p.name }), t('common.delete'), true)) return false;
  await api(`/pipelines/${p.id}`, { method: 'DELETE' });
  toast(t('delete.done', { name: p.name }));
  return true;
}

export async function copyPipeline(p) {
  const name = h('input', { name: 'name', value: p.name + '-copy', required: true, pattern: '[A-Za-z0-9_.\\-]{1,64}' });
  const saved = await formDialog(t('copy.title'), (form) => {
    form.append(h('p', {}, t('copy.text', { name: p.name })),
      field(t('copy.new_name'), name, t('copy.name_hint')));
  }, { submitLabel: t('common.copy'), submit: () => api(`/pipelines/${p.id}/copy`, { method: 'POST', body: { name: name.value.trim() } }) });
  if (saved) toast(t('copy.done', { name: saved.name }));
  return saved;
}

export async function advancedSettings(p) {
  const shown = await api(`/pipelines/${p.id}`);
  const definition = shown.definition;
  const current = definition.timeout ? Math.round(definition.timeout / 60000) : 0;
  const minutes = h('input', { name: 'timeout', type: 'number', min: 0, max: MAX_MINUTES, step: 1, value: current, required: true });
  const saved = await formDialog(t('pipeline.advanced'), (form) => {
    form.append(field(t('pipeline.timeout_minutes'), minutes, t('advanced.timeout_hint')));
  }, {
    submit: () => {
      const n = Number(minutes.value);
      if (!Number.isInteger(n) || n < 0 || n > MAX_MINUTES) throw new Error(t('advanced.timeout_bad', { max: MAX_MINUTES }));
      definition.timeout = n * 60000;
      return saveDefinition(p.id, definition);
    },
  });
  if (saved) toast(t('advanced.saved', { name: p.name }));
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
  const labels = { push: t('triggers.push'), merge: t('triggers.merge'), tag: t('triggers.tag') };
  const branches = h('input', { name: 'branches', value: (ev.branches || []).join(', '), placeholder: 'master, release/*' });
  const kind = h('select', { name: 'timer-kind' },
    h('option', { value: '' }, t('triggers.no_timer')),
    h('option', { value: 'every_minutes' }, t('triggers.every_minutes')),
    h('option', { value: 'every_hours' }, t('triggers.every_hours')),
    h('option', { value: 'daily' }, t('triggers.daily')),
    h('option', { value: 'weekly' }, t('triggers.weekly')),
    h('option', { value: 'monthly' }, t('triggers.monthly')),
    h('option', { value: 'cron' }, t('triggers.cron')));
  const tm = timer ? timer[2] : {};
  kind.value = timer ? timer[1] : '';
  const n = h('input', { name: 'n', type: 'number', min: 1, value: tm.every_minutes || tm.every_hours || tm.monthly || 5 });
  const minute = h('input', { name: 'at-minute', type: 'number', min: 0, max: 59, value: tm.at_minute ?? 0 });
  const at = h('input', { name: 'at', type: 'time', value: tm.daily || tm.at || '02:00' });
  const days = DAYS.map((d) => h('input', { type: 'checkbox', name: 'day-' + d, value: d, checked: (tm.weekly || []).includes(d) }));
  const cron = h('input', { name: 'cron', value: tm.cron || '*/15 * * * *' });
  const hint = h('p', { class: 'hint' });
  const rows = {
    n: field('n', n), minute: field(t('triggers.at_minute'), minute), at: field(t('triggers.at'), at), cron: field(t('triggers.cron_field'), cron),
    days: h('fieldset', { class: 'days' }, h('legend', {}, t('triggers.days')), days.map((d) => h('label', {}, d, ' ' + t('day.' + d.value)))),
  };
  const show = () => {
    const k = kind.value;
    rows.n.hidden = !['every_minutes', 'every_hours', 'monthly'].includes(k);
    rows.n.querySelector('label').textContent = k === 'monthly' ? t('triggers.day_of_month') : k === 'every_hours' ? t('triggers.hours') : t('triggers.minutes');
    rows.minute.hidden = k !== 'every_hours';
    rows.at.hidden = !['daily', 'weekly', 'monthly'].includes(k);
    rows.days.hidden = k !== 'weekly';
    rows.cron.hidden = k !== 'cron';
    hint.textContent = k === 'every_minutes' || k === 'every_hours'
      ? t('triggers.multiple_hint') : '';
  };
  kind.addEventListener('change', show);
  show();
  const saved = await formDialog(t('pipeline.edit_triggers'), (form) => {
    form.append(
      h('fieldset', {}, h('legend', {}, t('triggers.events')), boxes.map((b) => h('label', { class: 'check' }, b, ' ' + labels[b.value])),
        field(t('triggers.branches'), branches, t('triggers.branches_hint'))),
      h('fieldset', {}, h('legend', {}, t('cause.timer')), field(t('triggers.period'), kind), rows.n, rows.minute, rows.at, rows.days, rows.cron, hint));
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
        if (!chosen.length) throw new Error(t('triggers.choose_day'));
        kept.push({ ...base, weekly: { weekly: chosen, at: at.value } });
      }
      if (k === 'monthly') kept.push({ ...base, monthly: { monthly: num, at: at.value } });
      if (k === 'cron') kept.push({ ...base, cron: { cron: cron.value.trim() } });
      definition.triggers = kept;
      return saveDefinition(p.id, definition);
    },
  });
  if (saved) toast(t('triggers.saved', { name: p.name }));
  return !!saved;
}

/// "Create pipeline": from scratch (the editor with the default stages) or a copy of
/// an existing pipeline opened in the editor.
export async function createDialog() {
  const scratch = h('input', { type: 'radio', name: 'how', value: 'scratch', checked: true });
  const copy = h('input', { type: 'radio', name: 'how', value: 'copy' });
  const source = h('select', { name: 'source', disabled: true });
  const autoDeploy = h('input', { type: 'checkbox', name: 'auto_deploy' });
  const page = await api('/pipelines?limit=200');
  for (const p of page.items) source.append(h('option', { value: p.id }, p.name));
  if (!page.items.length) copy.disabled = true;
  const sync = () => { source.disabled = !copy.checked; autoDeploy.disabled = copy.checked; };
  scratch.addEventListener('change', sync);
  copy.addEventListener('change', sync);
  const chosen = await formDialog(t('pipelines.create'), (form) => {
    form.append(
      h('label', { class: 'choice' }, scratch, h('span', {}, h('strong', {}, t('create.scratch')), h('small', {}, t('create.scratch_hint')))),
      h('label', { class: 'choice' }, autoDeploy, h('span', {}, h('strong', {}, t('create.auto_deploy')), h('small', {}, t('create.auto_deploy_hint')))),
      h('label', { class: 'choice' }, copy, h('span', {}, h('strong', {}, t('create.copy')), h('small', {}, page.items.length ? t('create.copy_hint') : t('create.nothing_to_copy')))),
      field(t('create.pipeline_to_copy'), source));
  }, { submitLabel: t('common.next'), submit: () => (copy.checked ? { copy: source.value } : { scratch: true, autoDeploy: autoDeploy.checked }) });
  if (!chosen) return;
  navigate(chosen.copy ? `/pipelines/new?copy=${encodeURIComponent(chosen.copy)}`
    : chosen.autoDeploy ? '/pipelines/new?auto_deploy=true' : '/pipelines/new');
}
