// The card editor (create and edit). One model — the pipeline as the API's
// `definition` JSON — drawn two ways: as cards (Source, then the stages left to right,
// tasks top to bottom) and as YAML. The YAML is written from the model by the server
// (`POST /pipelines/validate {definition}`), and YAML typed in the tab goes back
// through the same parser (`{yaml}`) to become the model; so the views cannot differ.
// Every change goes through `change()`, which keeps undo/redo and the initial state
// for reset.
import { api, h, t, field, formDialog, menu, toast, errorText, ApiError } from './ui.js';
import { navigate, setLeaveGuard } from './app.js';
import { parameterFields } from './dialogs.js';

/// The task types the editor has a form for; their labels are `type.<name>` in the catalogues.
const TASK_TYPES = ['script', 'image', 'deploy-yaml', 'chart-publish', 'chart-deploy', 'approval'];
const typeLabel = (type) => (TASK_TYPES.includes(type) ? t('type.' + type) : type);

/// Task types by name → `{runs, needs}` as the server answers (fetched once a page).
let typesCache = null;
async function taskTypes() {
  if (!typesCache) {
    try {
      const answer = await api('/task-types');
      typesCache = Object.fromEntries(answer.items.map((t) => [t.name, t]));
    } catch {
      return {}; // an older server: say nothing rather than fail the dialog
    }
  }
  return typesCache;
}

/// Server text without Markdown's backticks (`image` → image).
function plain(text) {
  return (text || '').replace(/`([^`]*)`/g, '$1');
}

/// The starter every new pipeline begins from: the server's one definition (the same as
/// `wharf init` and `POST /pipelines/scratch`), without a name yet.
async function starter() {
  // Seed 000's auto-deploy: Manual review and Release after the build.
  const auto = new URLSearchParams(location.search).get('auto_deploy') === 'true';
  const answer = await api(auto ? '/pipelines/scratch?auto_deploy=true' : '/pipelines/scratch');
  const model = answer.definition;
  model.name = '';
  return model;
}

function newTask(type, name) {
  const base = { name, type };
  switch (type) {
    case 'script': return { ...base, script: 'echo hello\n' };
    case 'image': return { ...base, dockerfile: 'Dockerfile', context: '.', image: '', tag: 'alpha-${BUILD_ID}', workspace: '' };
    case 'deploy-yaml': return { ...base, file: '', cluster: '', namespace: '' };
    case 'chart-publish': return { ...base, chart_dir: '', chart: '', version: '', workspace: '' };
    case 'chart-deploy': return { ...base, release: '', chart: '', version: '', workspace: '', cluster: '', namespace: '' };
    case 'approval': return { ...base, approvers: ['admin'] };
    default: return base;
  }
}

const clone = (x) => JSON.parse(JSON.stringify(x));

/// A name not used yet among `taken`: `base`, `base-2`, …
function freeName(base, taken) {
  if (!taken.includes(base)) return base;
  for (let i = 2; ; i++) if (!taken.includes(`${base}-${i}`)) return `${base}-${i}`;
}

export async function render(main, params, query) {
  const editing = params.length ? params[0] : null;
  let model;
  let original = null;
  try {
    if (editing) {
      original = await api(`/pipelines/${encodeURIComponent(editing)}`);
      model = original.definition;
    } else if (query.get('copy')) {
      const from = await api(`/pipelines/${encodeURIComponent(query.get('copy'))}`);
      model = from.definition;
      model.name = from.name + '-copy';
      // A copy takes the stages, tasks and timeout (seed 002), not the triggers: a new
      // pipeline must not start running by itself on the original's timer or webhook.
      delete model.triggers;
    } else {
      model = await starter();
    }
  } catch (e) {
    main.append(h('div', { class: 'error-box', role: 'alert' }, h('strong', {}, t('editor.load_failed')), h('pre', {}, errorText(e))));
    return;
  }
  document.title = (editing ? t('editor.edit_named', { name: original.name }) : t('pipelines.create')) + ' · Wharf';

  const initial = JSON.stringify(model);
  const undo = [];
  const redo = [];
  let yamlState = { text: '', valid: true, diagnostics: [], dirty: false };
  let tab = 'cards';

  const nameInput = h('input', { id: 'pipeline-name', value: model.name, placeholder: 'my-app', required: true, 'aria-describedby': 'name-hint' });
  // The name is not on any card: its change must not redraw the cards, or the click that
  // took the focus away (on "Add source", "Add task") lands on a card already replaced.
  nameInput.addEventListener('change', () => change((m) => { m.name = nameInput.value.trim(); }, { cards: false }));
  const undoBtn = h('button', { type: 'button', class: 'secondary', 'data-action': 'undo', onclick: () => history(undo, redo) }, t('editor.undo'));
  const redoBtn = h('button', { type: 'button', class: 'secondary', 'data-action': 'redo', onclick: () => history(redo, undo) }, t('editor.redo'));
  const resetBtn = h('button', { type: 'button', class: 'secondary', 'data-action': 'reset', onclick: reset }, t('editor.reset'));
  const varsBtn = h('button', { type: 'button', class: 'secondary', 'data-action': 'edit-vars', onclick: editVariables }, t('editor.vars_params'));
  const saveBtn = h('button', { type: 'button', class: 'primary', 'data-action': 'save', onclick: save }, t('common.save'));
  const cardsTab = h('button', { type: 'button', role: 'tab', class: 'tab', id: 'tab-cards', 'aria-controls': 'panel-cards', onclick: () => showTab('cards') }, t('editor.cards'));
  const yamlTab = h('button', { type: 'button', role: 'tab', class: 'tab', id: 'tab-yaml', 'aria-controls': 'panel-yaml', onclick: () => showTab('yaml') }, t('editor.yaml'));
  const canvas = h('div', { class: 'canvas', id: 'panel-cards', role: 'tabpanel', 'aria-labelledby': 'tab-cards' });
  const banner = h('p', { class: 'banner', role: 'status', hidden: true });
  const yamlText = h('textarea', { class: 'yaml-text', spellcheck: 'false', 'aria-label': t('editor.yaml_label'), wrap: 'off', id: 'yaml-text' });
  const gutter = h('div', { class: 'gutter', 'aria-hidden': 'true' });
  const problems = h('ul', { class: 'problems', 'aria-live': 'polite', id: 'yaml-problems' });
  const yamlPanel = h('div', { class: 'yaml-panel', id: 'panel-yaml', role: 'tabpanel', 'aria-labelledby': 'tab-yaml', hidden: true },
    h('div', { class: 'yaml-editor' }, gutter, yamlText), problems);

  main.append(
    h('nav', { class: 'crumbs', 'aria-label': t('crumbs.label') }, h('a', { href: '/pipelines' }, t('nav.pipelines')), ' / ', editing ? t('editor.edit_named', { name: original.name }) : t('pipelines.create')),
    h('div', { class: 'editor-head' },
      h('div', { class: 'field inline' }, h('label', { for: 'pipeline-name' }, t('editor.pipeline_name')), nameInput,
        h('small', { id: 'name-hint', class: 'hint' }, t('editor.name_hint'))),
      h('span', { class: 'spacer' }),
      h('div', { class: 'toolbar', role: 'toolbar', 'aria-label': t('editor.toolbar') }, varsBtn, undoBtn, redoBtn, resetBtn, saveBtn)),
    h('div', { role: 'tablist', class: 'tabs', 'aria-label': t('editor.view') }, cardsTab, yamlTab),
    banner, canvas, yamlPanel);

  // --- the model and its history -------------------------------------------------
  function change(mutate, { cards = true } = {}) {
    const before = JSON.stringify(model);
    const next = clone(model);
    mutate(next);
    if (JSON.stringify(next) === before) return;
    undo.push(before);
    redo.length = 0;
    model = next;
    redraw({ cards });
  }
  function history(from, to) {
    if (!from.length) return;
    to.push(JSON.stringify(model));
    model = JSON.parse(from.pop());
    redraw();
  }
  function reset() {
    if (JSON.stringify(model) === initial) return;
    undo.push(JSON.stringify(model));
    redo.length = 0;
    model = JSON.parse(initial);
    redraw();
  }
  function redraw({ cards = true } = {}) {
    if (yamlState.dirty) {
      // The model changed (undo, redo, reset) while the YAML tab held an edit: the
      // model wins, so the two views agree again.
      clearTimeout(yamlTimer);
      yamlSeq++;
      yamlState = { text: '', valid: true, diagnostics: [], dirty: false };
      drawProblems();
    }
    nameInput.value = model.name;
    undoBtn.disabled = !undo.length;
    redoBtn.disabled = !redo.length;
    resetBtn.disabled = JSON.stringify(model) === initial;
    if (cards) drawCards();
    if (tab === 'yaml' && !yamlState.dirty) loadYaml();
  }

  // --- the cards -----------------------------------------------------------------
  let drag = null; // {kind: 'stage', index} or {kind: 'task', stage, index}

  function drawCards() {
    const cols = [sourceCard(), plus(0)];
    model.stages.forEach((stage, i) => cols.push(stageCard(stage, i), plus(i + 1)));
    canvas.replaceChildren(...cols);
  }

  function plus(at) {
    return h('button', { type: 'button', class: 'add-stage', 'data-action': 'add-stage', 'aria-label': at === 0 ? t('editor.add_stage_start') : t('editor.add_stage_after', { name: model.stages[at - 1].name }), onclick: () => addStage(at) }, '+');
  }

  function sourceCard() {
    const s = model.source;
    return h('section', { class: 'card stage source', 'aria-label': t('run.source') },
      h('header', {}, h('h3', {}, t('run.source')),
        s ? h('button', { type: 'button', class: 'icon', 'data-action': 'edit-source', 'aria-label': t('editor.edit_source_label'), onclick: editSource }, '✎') : null,
        s ? menu('⋯', [{ label: t('editor.remove_source'), action: 'remove-source', danger: true, run: () => change((m) => { delete m.source; }) }], t('editor.more_source')) : null),
      s ? h('div', { class: 'task source-info' }, h('div', { class: 'repo' }, s.repo), h('div', { class: 'muted' }, t('editor.branch_label'), s.branch || t('common.default')))
        : h('button', { type: 'button', class: 'secondary', 'data-action': 'add-source', onclick: editSource }, t('editor.add_source')));
  }

  function stageCard(stage, i) {
    const el = h('section', { class: 'card stage', 'data-stage': stage.name, 'aria-label': t('editor.stage_named', { name: stage.name }) });
    const handle = h('span', { class: 'handle', title: t('editor.drag_stage'), 'aria-hidden': 'true' }, '⠿');
    const head = h('header', { draggable: 'true' }, handle, h('h3', {}, stage.name),
      h('span', { class: 'mode' }, stage.mode === 'parallel' ? t('editor.parallel') : t('editor.sequential')),
      h('button', { type: 'button', class: 'icon', 'data-action': 'edit-stage', 'aria-label': t('editor.edit_stage_named', { name: stage.name }), onclick: () => editStage(i) }, '✎'),
      menu('⋯', [
        { label: t('editor.copy_stage'), action: 'copy-stage', run: () => copyStage(i) },
        i > 0 ? { label: t('editor.move_left'), action: 'stage-left', run: () => moveStage(i, i - 1) } : null,
        i < model.stages.length - 1 ? { label: t('editor.move_right'), action: 'stage-right', run: () => moveStage(i, i + 1) } : null,
        { label: t('editor.delete_stage'), action: 'delete-stage', danger: true, run: () => change((m) => { m.stages.splice(i, 1); }) },
      ], t('editor.more_stage', { name: stage.name })));
    head.addEventListener('dragstart', (ev) => { drag = { kind: 'stage', index: i }; ev.dataTransfer.effectAllowed = 'move'; ev.dataTransfer.setData('text/plain', stage.name); el.classList.add('dragging'); });
    head.addEventListener('dragend', () => { drag = null; el.classList.remove('dragging'); });
    el.addEventListener('dragover', (ev) => { if (drag && drag.kind === 'stage' && drag.index !== i) { ev.preventDefault(); el.classList.add('drop'); } });
    el.addEventListener('dragleave', () => el.classList.remove('drop'));
    el.addEventListener('drop', (ev) => {
      el.classList.remove('drop');
      if (drag && drag.kind === 'stage') { ev.preventDefault(); moveStage(drag.index, i); }
    });
    const tasks = h('ol', { class: 'tasks' }, stage.tasks.map((t, j) => taskCard(t, i, j)));
    const meta = [];
    if (stage.on_error && stage.on_error !== 'stop') meta.push(t('editor.on_error_meta', { what: t('editor.on_error_' + stage.on_error) }));
    if (stage.timeout) meta.push(t('editor.timeout_meta', { n: Math.round(stage.timeout / 60000) }));
    el.append(head, h('p', { class: 'muted meta', hidden: !meta.length }, meta.join(' · ')), tasks,
      h('button', { type: 'button', class: 'secondary add-task', 'data-action': 'add-task', onclick: () => editTask(i, null) }, t('editor.add_task')));
    return el;
  }

  function taskCard(task, i, j) {
    const stage = model.stages[i];
    const el = h('li', { class: 'task', draggable: 'true', 'data-task': task.name },
      h('span', { class: 'handle', 'aria-hidden': 'true' }, '⠿'),
      h('div', { class: 'task-main' }, h('div', { class: 'task-name' }, task.name), h('div', { class: 'muted' }, typeLabel(task.type))),
      h('button', { type: 'button', class: 'icon', 'data-action': 'edit-task', 'aria-label': t('editor.edit_task_named', { name: task.name }), onclick: () => editTask(i, j) }, '✎'),
      menu('⋯', [
        { label: t('editor.copy_task'), action: 'copy-task', run: () => change((m) => {
          const c = clone(task);
          c.name = freeName(task.name + '-copy', allTaskNames(m));
          m.stages[i].tasks.splice(j + 1, 0, c);
        }) },
        j > 0 ? { label: t('editor.move_up'), action: 'task-up', run: () => moveTask(i, j, j - 1) } : null,
        j < stage.tasks.length - 1 ? { label: t('editor.move_down'), action: 'task-down', run: () => moveTask(i, j, j + 1) } : null,
        { label: t('editor.delete_task'), action: 'delete-task', danger: true, run: () => change((m) => { m.stages[i].tasks.splice(j, 1); }) },
      ], t('editor.more_task', { name: task.name })));
    el.addEventListener('dragstart', (ev) => { ev.stopPropagation(); drag = { kind: 'task', stage: i, index: j }; ev.dataTransfer.effectAllowed = 'move'; ev.dataTransfer.setData('text/plain', task.name); el.classList.add('dragging'); });
    el.addEventListener('dragend', () => { drag = null; el.classList.remove('dragging'); });
    // Within the stage only, as in the seed: other stages do not accept the drop.
    el.addEventListener('dragover', (ev) => { if (drag && drag.kind === 'task' && drag.stage === i && drag.index !== j) { ev.preventDefault(); ev.stopPropagation(); el.classList.add('drop'); } });
    el.addEventListener('dragleave', () => el.classList.remove('drop'));
    el.addEventListener('drop', (ev) => {
      el.classList.remove('drop');
      if (drag && drag.kind === 'task' && drag.stage === i) { ev.preventDefault(); ev.stopPropagation(); moveTask(i, drag.index, j); }
    });
    return el;
  }

  const allTaskNames = (m) => m.stages.flatMap((s) => s.tasks.map((t) => t.name));
  const moveStage = (from, to) => change((m) => { const [s] = m.stages.splice(from, 1); m.stages.splice(to, 0, s); });
  const moveTask = (i, from, to) => change((m) => { const [t] = m.stages[i].tasks.splice(from, 1); m.stages[i].tasks.splice(to, 0, t); });

  function copyStage(i) {
    change((m) => {
      const c = clone(m.stages[i]);
      const taken = m.stages.map((s) => s.name).concat(allTaskNames(m));
      c.name = freeName(c.name + '-copy', taken);
      for (const t of c.tasks) { t.name = freeName(t.name + '-copy', taken.concat(allTaskNames(m))); taken.push(t.name); }
      m.stages.splice(i + 1, 0, c);
    });
  }

  async function addStage(at) {
    const name = freeName('Stage', model.stages.map((s) => s.name));
    const stage = { name, mode: 'sequential', on_error: 'stop', tasks: [newTask('script', freeName(name.toLowerCase() + '-task', allTaskNames(model)))] };
    const edited = await stageDialog(stage, t('editor.add_stage'));
    if (edited) change((m) => { m.stages.splice(at, 0, edited); });
  }

  async function editStage(i) {
    const edited = await stageDialog(clone(model.stages[i]), t('editor.edit_stage'), i);
    if (edited) change((m) => { m.stages[i] = edited; });
  }

  function stageDialog(stage, title, index = -1) {
    const name = h('input', { name: 'stage-name', value: stage.name, required: true });
    const mode = h('select', { name: 'mode' }, h('option', { value: 'sequential' }, t('editor.mode_sequential')), h('option', { value: 'parallel' }, t('editor.mode_parallel')));
    mode.value = stage.mode || 'sequential';
    const onError = h('select', { name: 'on_error' }, h('option', { value: 'stop' }, t('editor.on_error_stop')), h('option', { value: 'ignore' }, t('editor.on_error_ignore')), h('option', { value: 'rollback' }, t('editor.on_error_rollback')));
    onError.value = stage.on_error || 'stop';
    const timeout = h('input', { name: 'stage-timeout', type: 'number', min: 0, step: 1, value: stage.timeout ? Math.round(stage.timeout / 60000) : '' });
    return formDialog(title, (form) => form.append(field(t('editor.stage_name'), name), field(t('editor.tasks_run'), mode), field(t('editor.when_fails'), onError),
      field(t('pipeline.timeout_minutes'), timeout, t('editor.timeout_empty'))), {
      submit: () => {
        const n = name.value.trim();
        if (!n) throw new Error(t('editor.stage_needs_name'));
        if (model.stages.some((s, k) => k !== index && s.name === n)) throw new Error(t('editor.stage_exists', { name: n }));
        const out = { ...stage, name: n, mode: mode.value, on_error: onError.value };
        if (timeout.value === '' || Number(timeout.value) === 0) delete out.timeout; else out.timeout = Math.round(Number(timeout.value) * 60000);
        return out;
      },
    });
  }

  async function editSource() {
    const s = model.source || { repo: '', branch: 'master' };
    const repo = h('input', { name: 'repo', value: s.repo, required: true, placeholder: 'https://git.example.com/team/app.git' });
    const branchList = h('datalist', { id: 'branch-options' });
    const branch = h('input', { name: 'branch', value: s.branch || '', placeholder: 'master', list: 'branch-options' });
    const binding = h('select', { name: 'binding' }, h('option', { value: '' }, t('editor.binding_none')));
    const pickRepo = h('select', { name: 'repo-pick', disabled: true }, h('option', { value: '' }, t('editor.choose_binding')));
    const status = h('p', { class: 'hint', 'aria-live': 'polite' });
    let repos = [];
    // The picker is a help, never a requirement: any URL and branch may be typed.
    try {
      const bindings = await api('/bindings');
      for (const b of bindings.items || []) binding.append(h('option', { value: b.name }, `${b.name} (${b.provider})`));
    } catch (e) { status.textContent = t('editor.bindings_failed', { error: errorText(e) }); }
    if (s.binding && ![...binding.options].some((o) => o.value === s.binding)) binding.append(h('option', { value: s.binding }, s.binding));
    binding.value = s.binding || '';
    const loadBranches = async (fullName) => {
      branchList.replaceChildren();
      try {
        const r = await api(`/bindings/${encodeURIComponent(binding.value)}/repos/${fullName.split('/').map(encodeURIComponent).join('/')}/branches`);
        for (const b of r.items) branchList.append(h('option', { value: b }));
        status.textContent = t('editor.branches_in', { n: r.items.length, repo: fullName });
      } catch (e) { status.textContent = t('editor.branches_failed', { error: errorText(e) }); }
    };
    const loadRepos = async () => {
      pickRepo.replaceChildren(h('option', { value: '' }, binding.value ? t('common.loading') : t('editor.choose_binding')));
      pickRepo.disabled = true;
      if (!binding.value) return;
      try {
        repos = (await api(`/bindings/${encodeURIComponent(binding.value)}/repos`)).items;
        pickRepo.replaceChildren(h('option', { value: '' }, repos.length ? t('editor.choose_repo') : t('editor.no_repos')),
          ...repos.map((r, k) => h('option', { value: k }, r.full_name)));
        pickRepo.disabled = !repos.length;
        const current = repos.findIndex((r) => r.clone_url === repo.value || r.ssh_url === repo.value);
        if (current >= 0) { pickRepo.value = String(current); loadBranches(repos[current].full_name); }
      } catch (e) {
        pickRepo.replaceChildren(h('option', { value: '' }, t('editor.not_available')));
        status.textContent = t('editor.repos_failed', { error: errorText(e) });
      }
    };
    binding.addEventListener('change', loadRepos);
    pickRepo.addEventListener('change', () => {
      const r = repos[Number(pickRepo.value)];
      if (!pickRepo.value || !r) return;
      repo.value = r.clone_url;
      if (r.default_branch) branch.value = r.default_branch;
      loadBranches(r.full_name);
    });
    if (binding.value) loadRepos();
    const out = await formDialog(model.source ? t('editor.edit_source') : t('editor.add_source'), (form) => form.append(
      field(t('editor.binding'), binding, t('editor.binding_hint')),
      field(t('editor.pick_repo'), pickRepo),
      field(t('details.repository'), repo, t('editor.repo_hint')),
      field(t('details.branch'), branch, t('editor.branch_hint')), branchList, status), {
      submit: () => {
        if (!repo.value.trim()) throw new Error(t('editor.repo_needed'));
        const o = { repo: repo.value.trim() };
        if (branch.value.trim()) o.branch = branch.value.trim();
        if (binding.value) o.binding = binding.value;
        return o;
      },
    });
    if (out) change((m) => { m.source = out; });
  }

  // --- the task dialog: fields follow the type ------------------------------------
  async function editTask(i, j) {
    const stage = model.stages[i];
    const task = j === null ? newTask('script', freeName('task', allTaskNames(model))) : clone(stage.tasks[j]);
    const others = allTaskNames(model).filter((n) => j === null || n !== stage.tasks[j].name);
    const name = h('input', { name: 'task-name', value: task.name, required: true });
    const type = h('select', { name: 'task-type' }, TASK_TYPES.map((v) => h('option', { value: v }, typeLabel(v))));
    if (!TASK_TYPES.includes(task.type)) type.append(h('option', { value: task.type }, task.type));
    type.value = task.type;
    const timeout = h('input', { name: 'task-timeout', type: 'number', min: 0, step: 1, value: task.timeout ? Math.round(task.timeout / 60000) : '' });
    const specific = h('div', { class: 'specific' });
    // What this server cannot run is said before the run is refused.
    const typeNote = h('p', { class: 'banner warn', 'data-role': 'type-needs', hidden: true });
    const support = await taskTypes();
    const noteType = () => {
      const verdict = support[type.value];
      typeNote.hidden = !verdict || verdict.runs;
      typeNote.textContent = verdict && !verdict.runs ? t('editor.type_needs', { needs: plain(verdict.needs) }) : '';
    };
    let read = () => ({});
    const byType = {}; // fields kept per type while switching
    const draw = () => {
      noteType();
      const kind = type.value;
      const current = byType[kind] || (kind === task.type ? task : newTask(kind, name.value));
      ({ element: specificEl, read } = taskFields(kind, current, model, i));
      specific.replaceChildren(specificEl);
    };
    let specificEl = null;
    let shownType = task.type;
    type.addEventListener('change', () => {
      // Keep what was typed for the type left behind, when it reads back (a half-filled
      // form does not: switching back then starts from its defaults).
      try { byType[shownType] = { ...task, type: shownType, ...read() }; } catch { /* incomplete */ }
      shownType = type.value;
      draw();
    });
    draw();
    const out = await formDialog(j === null ? t('editor.add_task_to', { name: stage.name }) : t('editor.edit_task_named', { name: task.name }), (form) => form.append(
      field(t('editor.task_name'), name), field(t('editor.task_type'), type), typeNote, specific, field(t('pipeline.timeout_minutes'), timeout, t('editor.timeout_empty'))), {
      wide: true,
      submit: () => {
        const n = name.value.trim();
        if (!n) throw new Error(t('editor.task_needs_name'));
        if (others.includes(n)) throw new Error(t('editor.task_exists', { name: n }));
        const keep = {};
        for (const k of ['env', 'secrets', 'retries', 'outputs']) if (task[k] !== undefined) keep[k] = task[k];
        const o = { ...keep, name: n, type: type.value, ...read() };
        if (timeout.value !== '' && Number(timeout.value) > 0) o.timeout = Math.round(Number(timeout.value) * 60000);
        return o;
      },
    });
    if (out) change((m) => { if (j === null) m.stages[i].tasks.push(out); else m.stages[i].tasks[j] = out; });
  }

  // --- YAML -------------------------------------------------------------------------
  async function loadYaml() {
    try {
      const r = await api('/pipelines/validate', { method: 'POST', body: { definition: model } });
      yamlState = { text: r.yaml, valid: r.valid, diagnostics: r.diagnostics, dirty: false };
      yamlText.value = r.yaml;
      drawProblems();
    } catch (e) { toast(errorText(e), 'error'); }
  }

  let yamlTimer = 0;
  let yamlSeq = 0;
  yamlText.addEventListener('input', () => {
    yamlState.dirty = true;
    drawGutter();
    clearTimeout(yamlTimer);
    yamlTimer = setTimeout(checkYaml, 400);
  });
  yamlText.addEventListener('scroll', () => { gutter.scrollTop = yamlText.scrollTop; });

  async function checkYaml() {
    const seq = ++yamlSeq;
    const text = yamlText.value;
    let r;
    try { r = await api('/pipelines/validate', { method: 'POST', body: { yaml: text } }); } catch (e) { toast(errorText(e), 'error'); return; }
    if (seq !== yamlSeq) return; // a newer edit is being checked
    yamlState = { text, valid: r.valid, diagnostics: r.diagnostics, dirty: !r.valid };
    if (r.valid) {
      // The typed YAML is the model now; the cards follow.
      const before = JSON.stringify(model);
      if (JSON.stringify(r.definition) !== before) {
        undo.push(before);
        redo.length = 0;
        model = r.definition;
        nameInput.value = model.name;
        undoBtn.disabled = false;
        redoBtn.disabled = true;
        resetBtn.disabled = JSON.stringify(model) === initial;
        drawCards();
      }
      yamlState.dirty = false;
    }
    drawProblems();
  }

  function drawGutter() {
    const n = yamlText.value.split('\n').length;
    const bad = new Set(yamlState.diagnostics.map((d) => d.line));
    const frag = document.createDocumentFragment();
    for (let i = 1; i <= n; i++) frag.append(h('div', { class: bad.has(i) ? 'bad' : '', 'data-line': i }, String(i)));
    gutter.replaceChildren(frag);
    gutter.scrollTop = yamlText.scrollTop;
  }

  function drawProblems() {
    drawGutter();
    // While the YAML does not parse, the cards show the last valid pipeline and cannot
    // be edited (an edit there would make the two views disagree).
    canvas.inert = !yamlState.valid;
    nameInput.disabled = !yamlState.valid;
    banner.hidden = yamlState.valid;
    banner.textContent = yamlState.valid ? '' : t('editor.yaml_banner');
    problems.replaceChildren(...yamlState.diagnostics.map((d) => h('li', { class: 'problem', 'data-line': d.line || '' },
      h('button', { type: 'button', class: 'link', onclick: () => goToLine(d.line, d.column) }, d.line ? (d.column ? t('editor.line_column', { line: d.line, column: d.column }) : t('editor.line', { line: d.line })) : t('editor.problem')),
      ': ', d.path ? h('code', {}, d.path) : null, d.path ? ' ' : null, d.message)));
  }

  function goToLine(line, column) {
    if (!line) return;
    const lines = yamlText.value.split('\n');
    let at = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) at += lines[i].length + 1;
    at += Math.max(0, (column || 1) - 1);
    yamlText.focus();
    yamlText.setSelectionRange(at, at);
    const lineHeight = parseFloat(getComputedStyle(yamlText).lineHeight) || 18;
    yamlText.scrollTop = Math.max(0, (line - 5) * lineHeight);
  }

  function showTab(which) {
    tab = which;
    cardsTab.setAttribute('aria-selected', String(which === 'cards'));
    yamlTab.setAttribute('aria-selected', String(which === 'yaml'));
    canvas.hidden = which !== 'cards';
    yamlPanel.hidden = which !== 'yaml';
    if (which === 'yaml' && !yamlState.dirty) loadYaml();
  }

  // --- saving -------------------------------------------------------------------------
  /// The pipeline's variables (`${NAME}` in every task) and the parameters a run asks
  /// for, as rows; the server checks names and clashes when the pipeline is saved.
  async function editVariables() {
    const vars = rowsTable(t('vars.variables'), [t('common.name'), t('common.value')], (model.variables || []).map((v) => [v.name, v.value]), 'var');
    const params = rowsTable(t('vars.parameters'), [t('common.name'), t('vars.default'), t('details.description'), t('vars.choices')],
      (model.parameters || []).map((p) => [p.name, p.default ?? '', p.description ?? '', (p.choices || []).join(', ')]), 'param');
    const done = await formDialog(t('editor.vars_params'), (form) => form.append(
      h('p', { class: 'hint' }, t('vars.hint')),
      vars.element, params.element), { wide: true, submitLabel: t('common.apply'), submit: () => true });
    if (!done) return;
    change((m) => {
      m.variables = vars.read().filter((r) => r[0]).map(([name, value]) => ({ name, value }));
      m.parameters = params.read().filter((r) => r[0]).map(([name, def, description, choices]) => {
        const p = { name };
        if (def !== '') p.default = def;
        if (description !== '') p.description = description;
        const list = choices.split(',').map((c) => c.trim()).filter(Boolean);
        if (list.length) p.choices = list;
        return p;
      });
    });
  }

  async function save() {
    if (tab === 'yaml' && (yamlState.dirty || yamlText.value !== yamlState.text)) {
      // Keystrokes not checked yet: check them first, so the save has them.
      clearTimeout(yamlTimer);
      await checkYaml();
    }
    if (yamlState.dirty && !yamlState.valid) {
      showTab('yaml');
      toast(t('save.fix_yaml'), 'error');
      return;
    }
    if (nameInput.value.trim() !== model.name) change((m) => { m.name = nameInput.value.trim(); });
    const only = h('input', { type: 'radio', name: 'save-how', value: 'only', checked: true });
    const andRun = h('input', { type: 'radio', name: 'save-how', value: 'run' });
    // "Save and run" asks for the parameters, as the Run dialog does.
    const params = parameterFields(model.parameters);
    params.setDisabled(true);
    for (const radio of [only, andRun]) radio.addEventListener('change', () => params.setDisabled(!andRun.checked));
    let runError = null;
    const saved = await formDialog(t('common.save'), (form) => form.append(
      h('label', { class: 'choice' }, only, h('span', {}, h('strong', {}, t('save.only')), h('small', {}, t('save.only_hint')))),
      h('label', { class: 'choice' }, andRun, h('span', {}, h('strong', {}, t('save.and_run')), h('small', {}, t('save.and_run_hint')))),
      ...(params.elements.length ? [h('div', { class: 'save-params' }, ...params.elements)] : [])), {
      submit: async () => {
        const checked = await api('/pipelines/validate', { method: 'POST', body: { definition: model } });
        if (!checked.valid) throw new ApiError(422, t('save.not_valid'), checked.diagnostics);
        const answer = editing
          ? await api(`/pipelines/${original.id}`, { method: 'PUT', body: checked.yaml })
          : await api('/pipelines', { method: 'POST', body: checked.yaml });
        if (andRun.checked) {
          try {
            answer.run = await api(`/pipelines/${answer.id}/runs`, { method: 'POST', body: { parameters: params.values() } });
          } catch (e) {
            runError = e; // saved all the same: say so after the dialog
          }
        }
        return answer;
      },
    });
    if (!saved) return;
    toast(t('save.saved', { name: saved.name, version: saved.version }));
    // The events trigger's webhook: said when a person must do something about it (the
    // server's words).
    if (saved.webhook && !['installed', 'present'].includes(saved.webhook.status)) toast(saved.webhook.message, 'error');
    if (runError) toast(t('save.run_failed', { error: errorText(runError) }), 'error');
    isSaved = true; // leaving is safe now
    navigate(saved.run ? `/runs/${saved.run.id}` : `/pipelines/${saved.id}`);
  }

  let isSaved = false;
  const unsaved = () => !isSaved && JSON.stringify(model) !== initial;
  const beforeUnload = (ev) => { if (unsaved()) { ev.preventDefault(); ev.returnValue = ''; } };
  window.addEventListener('beforeunload', beforeUnload);
  setLeaveGuard(unsaved);
  showTab('cards');
  redraw();
  if (!model.name) nameInput.focus();
  return () => window.removeEventListener('beforeunload', beforeUnload);
}

/// Offers the registered registries and the chosen one's workspaces as choices (the
/// registry's placeholder names the default). Any name, or a `${VAR}`, can still be
/// typed; the server checks them on save. Without the list the fields stay free text.
function offerRegistries(el, registry, workspace) {
  const id = 'choices-' + Math.random().toString(36).slice(2);
  const registries = h('datalist', { id: id + '-registry', 'data-role': 'registry-choices' });
  const workspaces = h('datalist', { id: id + '-workspace', 'data-role': 'workspace-choices' });
  registry.setAttribute('list', registries.id);
  workspace.setAttribute('list', workspaces.id);
  el.append(registries, workspaces);
  api('/registries').then((data) => {
    if (data.default) registry.placeholder = data.default;
    registries.replaceChildren(...data.items.map((r) => h('option', { value: r.name })));
    const fill = () => {
      const chosen = data.items.find((r) => r.name === (registry.value.trim() || data.default));
      workspaces.replaceChildren(...(chosen ? chosen.workspaces : []).map((w) => h('option', { value: w })));
    };
    registry.addEventListener('input', fill);
    fill();
  }).catch(() => { /* free text it stays */ });
}

/// The fields of one task type: an element and a function that reads them back.
function taskFields(type, task, model, stageIndex) {
  const el = h('div', { class: 'type-fields' });
  const inputs = {};
  const text = (key, label, hint, attrs = {}) => {
    const input = h('input', { name: key, value: task[key] ?? '', ...attrs });
    inputs[key] = input;
    el.append(field(label, input, hint));
  };
  const optional = (o, key) => { const v = inputs[key].value.trim(); if (v) o[key] = v; else delete o[key]; };
  switch (type) {
    case 'script': {
      text('image', t('task.image'), t('task.image_hint'));
      text('tag', t('task.image_tag'), t('task.tag_example'));
      const script = h('textarea', { name: 'script', rows: 8, class: 'code', spellcheck: 'false' });
      script.value = task.script || '';
      el.append(field(t('task.script'), script, t('task.script_hint')));
      const env = envTable(task.env || {});
      el.append(env.element);
      return {
        element: el,
        read: () => {
          const o = { script: script.value };
          optional(o, 'image'); optional(o, 'tag');
          const e = env.read();
          if (Object.keys(e).length) o.env = e;
          if (!o.script.trim()) throw new Error(t('task.script_empty'));
          return o;
        },
      };
    }
    case 'image':
      text('dockerfile', t('task.dockerfile'), t('task.dockerfile_hint'), { required: true });
      text('context', t('task.context'), t('task.context_hint'), { required: true });
      text('image', t('task.image_name'), '', { required: true });
      text('tag', t('task.image_tag'), t('task.tag_hint'), { required: true });
      text('workspace', t('common.workspace'), t('task.workspace_hint'), { required: true });
      el.append(h('p', { class: 'hint' }, t('task.no_workspace')));
      text('registry', t('common.registry'), t('task.registry_hint'));
      offerRegistries(el, inputs.registry, inputs.workspace);
      return { element: el, read: () => { const o = { ...pick(inputs, ['dockerfile', 'context', 'image', 'tag', 'workspace']) }; optional(o, 'registry'); if (task.build_args) o.build_args = task.build_args; return o; } };
    case 'deploy-yaml':
      text('file', t('task.yaml_file'), t('task.yaml_file_hint'), { required: true });
      text('cluster', t('common.cluster'), '', { required: true });
      text('namespace', t('common.namespace'), '', { required: true });
      return { element: el, read: () => pick(inputs, ['file', 'cluster', 'namespace']) };
    case 'chart-publish':
      text('chart_dir', t('task.chart_dir'), t('task.chart_dir_hint'), { required: true });
      text('chart', t('task.chart'), '', { required: true });
      text('version', t('task.chart_version'), t('task.chart_version_hint'), { required: true });
      text('workspace', t('common.workspace'), '', { required: true });
      text('registry', t('common.registry'), t('task.default_registry'));
      offerRegistries(el, inputs.registry, inputs.workspace);
      return { element: el, read: () => { const o = pick(inputs, ['chart_dir', 'chart', 'version', 'workspace']); optional(o, 'registry'); return o; } };
    case 'chart-deploy': {
      text('release', t('task.release'), t('task.release_hint'), { required: true });
      // "Select" offers the charts that earlier stages of this pipeline publish;
      // "Type" takes any name and version.
      const published = model.stages.slice(0, stageIndex + 1).flatMap((s) => s.tasks).filter((t) => t.type === 'chart-publish');
      const how = h('select', { name: 'chart-how', 'aria-label': t('task.chart_how') }, h('option', { value: 'type' }, t('task.chart_type')), h('option', { value: 'select' }, t('task.chart_select')));
      const pickChart = h('select', { name: 'chart-select' }, published.map((p, k) => h('option', { value: k }, `${p.chart} ${p.version}`)));
      if (!published.length) { how.querySelector('[value=select]').disabled = true; }
      const selectRow = field(t('task.published_chart'), pickChart, t('task.published_hint'));
      const chartRow = h('div', {});
      el.append(field(t('task.chart_and_version'), how));
      el.append(selectRow, chartRow);
      text('chart', t('task.chart'), '', { required: true });
      text('version', t('task.chart_version'), t('task.variables_ok'), { required: true });
      chartRow.append(el.lastChild.previousSibling, el.lastChild);
      const sync = () => { selectRow.hidden = how.value !== 'select'; chartRow.hidden = how.value === 'select'; };
      how.addEventListener('change', sync);
      sync();
      text('workspace', t('common.workspace'), '', { required: true });
      text('registry', t('common.registry'), t('task.default_registry'));
      offerRegistries(el, inputs.registry, inputs.workspace);
      text('cluster', t('common.cluster'), '', { required: true });
      text('namespace', t('common.namespace'), '', { required: true });
      const values = h('textarea', { name: 'values', rows: 4, class: 'code' });
      values.value = task.values ? JSON.stringify(task.values, null, 2) : '';
      el.append(field(t('task.values'), values, t('task.values_hint')));
      return {
        element: el,
        read: () => {
          const o = pick(inputs, ['release', 'chart', 'version', 'workspace', 'cluster', 'namespace']);
          optional(o, 'registry');
          if (how.value === 'select') {
            const p = published[Number(pickChart.value)];
            o.chart = p.chart; o.version = p.version; o.workspace = p.workspace;
            if (p.registry) o.registry = p.registry; else delete o.registry;
          }
          if (values.value.trim()) {
            let v;
            try { v = JSON.parse(values.value); } catch (e) { throw new Error(t('task.values_bad_json', { error: e.message })); }
            if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(t('task.values_not_object'));
            o.values = v;
          }
          return o;
        },
      };
    }
    case 'approval': {
      const approvers = h('input', { name: 'approvers', value: (task.approvers || []).join(', '), required: true });
      el.append(field(t('task.approvers'), approvers, t('task.approvers_hint')));
      text('message', t('task.message'), t('task.message_hint'));
      const required = h('input', { name: 'required', type: 'number', min: 1, max: 20, step: 1, value: task.required || 1 });
      el.append(field(t('task.approvals_needed'), required, t('task.approvals_needed_hint')));
      return {
        element: el,
        read: () => {
          const o = { approvers: approvers.value.split(',').map((s) => s.trim()).filter(Boolean) };
          if (!o.approvers.length) throw new Error(t('task.approver_needed'));
          optional(o, 'message');
          const n = Number(required.value || 1);
          if (n > 1) o.required = n;
          return o;
        },
      };
    }
    default: {
      // A type without a form here (canary): its fields as JSON.
      const { name: _n, type: _t, env: _e, secrets: _s, timeout: _o, retries: _r, outputs: _u, ...rest } = task;
      const raw = h('textarea', { name: 'fields', rows: 8, class: 'code' });
      raw.value = JSON.stringify(rest, null, 2);
      el.append(field(t('task.fields'), raw));
      return { element: el, read: () => { try { return JSON.parse(raw.value); } catch (e) { throw new Error(t('task.fields_bad_json', { error: e.message })); } } };
    }
  }
}

function pick(inputs, keys) {
  const o = {};
  for (const k of keys) {
    const v = inputs[k].value.trim();
    if (!v) throw new Error(t('task.required', { label: inputs[k].closest('.field').querySelector('label').textContent }));
    o[k] = v;
  }
  return o;
}

/// Rows of text cells under `columns`, one `+` to add and `×` per row to remove;
/// `read()` gives the rows as arrays of trimmed strings (the first cell trimmed).
function rowsTable(legend, columns, rows, kind) {
  const body = h('tbody', {});
  const addRow = (cells = []) => {
    const inputs = columns.map((c, i) => h('input', { class: `${kind}-${i}`, value: cells[i] ?? '', 'aria-label': c }));
    const row = h('tr', {}, ...inputs.map((input) => h('td', {}, input)),
      h('td', {}, h('button', { type: 'button', class: 'icon', 'aria-label': kind === 'var' ? t('vars.remove_variable') : t('vars.remove_parameter'), onclick: () => row.remove() }, '×')));
    body.append(row);
  };
  rows.forEach(addRow);
  const element = h('fieldset', { class: 'env' }, h('legend', {}, legend),
    h('table', {}, h('thead', {}, h('tr', {}, ...columns.map((c) => h('th', { scope: 'col' }, c)), h('th', {}, ''))), body),
    h('button', { type: 'button', class: 'secondary small', 'data-action': `add-${kind}`, onclick: () => addRow() }, kind === 'var' ? t('vars.add_variable') : t('vars.add_parameter')));
  return {
    element,
    read: () => [...body.rows].map((row) => [...row.querySelectorAll('input')].map((input, i) => (i === 0 ? input.value.trim() : input.value))),
  };
}

/// Environment variables as rows of name and value.
function envTable(env) {
  const body = h('tbody', {});
  const addRow = (k = '', v = '') => {
    const key = h('input', { class: 'env-key', value: k, 'aria-label': t('vars.variable_name') });
    const value = h('input', { class: 'env-value', value: v, 'aria-label': t('common.value') });
    const row = h('tr', {}, h('td', {}, key), h('td', {}, value),
      h('td', {}, h('button', { type: 'button', class: 'icon', 'aria-label': t('vars.remove_variable'), onclick: () => row.remove() }, '×')));
    body.append(row);
  };
  for (const [k, v] of Object.entries(env)) addRow(k, v);
  const element = h('fieldset', { class: 'env' }, h('legend', {}, t('vars.env')),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, t('common.name')), h('th', { scope: 'col' }, t('common.value')), h('th', {}, ''))), body),
    h('button', { type: 'button', class: 'secondary small', 'data-action': 'add-env', onclick: () => addRow() }, t('vars.add_variable')));
  return {
    element,
    read: () => {
      const out = {};
      for (const row of body.rows) {
        const k = row.querySelector('.env-key').value.trim();
        if (k) out[k] = row.querySelector('.env-value').value;
      }
      return out;
    },
  };
}
