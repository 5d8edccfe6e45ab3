// The users and projects page (`/users`): for administrators, the users with their
// role and projects, the departments and their projects; for everyone, their own API
// tokens (a new token is shown once, with a copy button).
import { api, h, t, field, errorBox, errorText, toast, fmtTime, formDialog, confirmDialog } from './ui.js';

const ROLES = ['user', 'manager', 'admin'];
const roleName = (r) => (ROLES.includes(r) ? t('role.' + r) : r);

export async function render(main) {
  document.title = t('nav.users') + ' · Wharf';
  let me;
  try {
    me = await api('/me');
  } catch (e) {
    main.append(errorBox(e, t('users.me_failed')));
    return;
  }
  main.append(h('div', { class: 'page-head' }, h('h1', {}, t('nav.users'))));
  if (me.role === 'admin') {
    const users = h('section', { class: 'users' });
    const projects = h('section', { class: 'projects' });
    main.append(h('div', { class: 'split wide-left' }, users, projects));
    const reload = async () => {
      let data;
      try {
        data = await Promise.all([api('/users'), api('/projects'), api('/departments')]);
      } catch (e) {
        users.replaceChildren(errorBox(e, t('users.load_failed')));
        return;
      }
      const [u, p, d] = data;
      users.replaceChildren(...userSection(u.items, p.items, reload, me.name));
      projects.replaceChildren(...projectSection(p.items, d.items, reload));
    };
    await reload();
  } else {
    main.append(h('div', { class: 'banner refused', role: 'note' },
      h('strong', {}, t('users.admins_only')), ' ',
      me.projects && me.projects.length ? t('users.you_are_in', { name: me.name, role: roleName(me.role), projects: me.projects.join(', ') })
        : t('users.you_are', { name: me.name, role: roleName(me.role) })));
  }
  const tokens = h('section', { class: 'tokens' });
  main.append(tokens);
  await tokenSection(tokens, me.name);
}

function userSection(users, projects, reload, me) {
  // Disable, enable and delete; the server refuses yourself and the built-in admin.
  const act = (u, action, title, text, request) => h('button', { type: 'button', class: 'secondary' + (action === 'enable' ? '' : ' danger'),
    'data-action': `${action}-user`, 'aria-label': t('users.act_named', { action: title, name: u.name }),
    onclick: async () => {
      if (!await confirmDialog(t('users.act_question', { action: title, name: u.name }), text, title)) return;
      try { await api(`/users/${encodeURIComponent(u.name)}`, request); reload(); } catch (e) { toast(errorText(e), 'error'); }
    } }, title);
  // Editing role and projects is offered for everyone; the server refuses what it must
  // (the built-in admin, your own role) and the dialog shows why.
  const edit = (u) => h('button', { type: 'button', class: 'secondary', 'data-action': 'edit-user',
    'aria-label': t('users.act_named', { action: t('common.edit'), name: u.name }),
    onclick: () => editUser(u, projects).then((ok) => ok && reload()) }, t('common.edit'));
  const actions = (u) => (u.name === me || u.name === 'admin') ? edit(u) : [
    edit(u),
    u.disabled_at
      ? act(u, 'enable', t('users.enable'), t('users.enable_text'), { method: 'PUT', body: { disabled: false } })
      : act(u, 'disable', t('users.disable'), t('users.disable_text'), { method: 'PUT', body: { disabled: true } }),
    act(u, 'delete', t('common.delete'), t('users.delete_text'), { method: 'DELETE' }),
  ];
  const rows = users.map((u) => h('tr', { 'data-user': u.name },
    h('td', { class: 'name' }, u.name),
    h('td', { class: 'role', 'data-role': u.role }, roleName(u.role)),
    h('td', { class: 'projects' }, u.projects.length ? u.projects.join(', ') : h('span', { class: 'muted' }, t('common.none'))),
    h('td', {}, fmtTime(u.created_at)),
    h('td', { class: 'state' }, u.disabled_at ? t('users.disabled_at', { time: fmtTime(u.disabled_at) }) : t('users.enabled')),
    h('td', { class: 'actions' }, actions(u))));
  return [
    h('div', { class: 'page-head' }, h('h2', {}, t('users.users')), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'primary', 'data-action': 'add-user', onclick: () => addUser(projects).then((ok) => ok && reload()) }, t('users.add'))),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list users' },
      h('thead', {}, h('tr', {}, [t('common.name'), t('users.role'), t('users.projects'), t('common.created'), t('users.state'), ''].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows))),
  ];
}

function addUser(projects) {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  const password = h('input', { name: 'password', type: 'password', required: true, minlength: 8, autocomplete: 'new-password' });
  const role = h('select', { name: 'role' }, ROLES.map((v) => h('option', { value: v }, t('role_hint.' + v))));
  const boxes = projects.map((p) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'project', value: p.name }), p.name));
  return formDialog(t('users.add'), (form) => form.append(
    field(t('common.name'), name), field(t('common.password'), password, t('users.password_hint')), field(t('users.role'), role),
    h('fieldset', {}, h('legend', {}, t('users.projects')), boxes.length ? boxes : h('p', { class: 'muted' }, t('users.no_projects')))), {
    submitLabel: t('common.add'),
    submit: async (form) => {
      const chosen = [...form.querySelectorAll('input[name=project]:checked')].map((c) => c.value);
      await api('/users', { method: 'POST', body: { name: name.value.trim(), password: password.value, role: role.value, projects: chosen } });
      toast(t('common.added', { name: name.value.trim() }));
      return true;
    },
  });
}

function editUser(u, projects) {
  const role = h('select', { name: 'role' }, ROLES.map((v) => h('option', { value: v, selected: v === u.role }, t('role_hint.' + v))));
  const known = new Set(projects.map((p) => p.name));
  const names = [...projects.map((p) => p.name), ...u.projects.filter((p) => !known.has(p))];
  const boxes = names.map((p) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', name: 'project', value: p, checked: u.projects.includes(p) }), p));
  return formDialog(t('users.edit_named', { name: u.name }), (form) => form.append(
    field(t('users.role'), role),
    h('fieldset', {}, h('legend', {}, t('users.projects')), boxes.length ? boxes : h('p', { class: 'muted' }, t('users.no_projects')))), {
    submit: async (form) => {
      const chosen = [...form.querySelectorAll('input[name=project]:checked')].map((c) => c.value);
      await api(`/users/${encodeURIComponent(u.name)}`, { method: 'PUT', body: { role: role.value, projects: chosen } });
      toast(t('users.saved', { name: u.name }));
      return true;
    },
  });
}

function projectSection(projects, departments, reload) {
  const byDept = departments.map((d) => h('li', { 'data-department': d }, h('strong', {}, d),
    h('ul', {}, projects.filter((p) => p.department === d).map((p) => h('li', { 'data-project': p.name }, p.name)))));
  return [
    h('div', { class: 'page-head' }, h('h2', {}, t('users.departments')), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'secondary', 'data-action': 'add-department', onclick: () => addDepartment().then((ok) => ok && reload()) }, t('users.add_department')),
      h('button', { type: 'button', class: 'primary', 'data-action': 'add-project', onclick: () => addProject(departments).then((ok) => ok && reload()) }, t('users.add_project'))),
    h('ul', { class: 'image-list departments' }, byDept),
  ];
}

function addDepartment() {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  return formDialog(t('users.add_department'), (form) => form.append(field(t('common.name'), name)), {
    submitLabel: t('common.add'),
    submit: async () => { await api('/departments', { method: 'POST', body: { name: name.value.trim() } }); return true; },
  });
}

function addProject(departments) {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  const dept = h('select', { name: 'department' }, departments.map((d) => h('option', { value: d }, d)));
  return formDialog(t('users.add_project'), (form) => form.append(field(t('common.name'), name), field(t('users.department'), dept)), {
    submitLabel: t('common.add'),
    submit: async () => {
      await api('/projects', { method: 'POST', body: { name: name.value.trim(), department: dept.value } });
      return true;
    },
  });
}

async function tokenSection(box, user) {
  const base = `/users/${encodeURIComponent(user)}/tokens`;
  const head = h('div', { class: 'page-head' }, h('h2', {}, t('tokens.mine')), h('span', { class: 'spacer' }),
    h('button', { type: 'button', class: 'primary', 'data-action': 'add-token', onclick: () => addToken(base).then((ok) => ok && load()) }, t('tokens.create')));
  const list = h('div', {});
  box.replaceChildren(head, list);
  async function load() {
    let data;
    try {
      data = await api(base);
    } catch (e) {
      list.replaceChildren(errorBox(e, t('tokens.load_failed')));
      return;
    }
    if (!data.items.length) {
      list.replaceChildren(h('div', { class: 'empty' }, h('p', {}, t('tokens.none_yet')),
        h('p', {}, t('tokens.empty_hint'))));
      return;
    }
    const rows = data.items.map((tk) => h('tr', { 'data-token': tk.name },
      h('td', { class: 'name' }, tk.name), h('td', {}, ['read', 'write'].includes(tk.scope) ? t('scope.' + tk.scope) : tk.scope),
      h('td', {}, tk.expires_at ? fmtTime(tk.expires_at) : t('tokens.never_expires')),
      h('td', {}, tk.last_used_at ? fmtTime(tk.last_used_at) : t('common.never')),
      h('td', { class: 'state' }, tk.revoked_at ? t('tokens.revoked_at', { time: fmtTime(tk.revoked_at) }) : t('tokens.active')),
      h('td', { class: 'actions' }, tk.revoked_at ? null : h('button', { type: 'button', class: 'secondary danger', 'data-action': 'revoke', 'aria-label': t('tokens.revoke_named', { name: tk.name }),
        onclick: async () => {
          if (!await confirmDialog(t('tokens.revoke_question', { name: tk.name }), t('tokens.revoke_text'), t('tokens.revoke'))) return;
          try { await api(`${base}/${encodeURIComponent(tk.name)}`, { method: 'DELETE' }); load(); } catch (e) { toast(errorText(e), 'error'); }
        } }, t('tokens.revoke')))));
    list.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'list tokens' },
      h('thead', {}, h('tr', {}, [t('common.name'), t('tokens.scope'), t('tokens.expires'), t('tokens.last_used'), t('users.state'), ''].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows))));
  }
  await load();
}

async function addToken(base) {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  const scope = h('select', { name: 'scope' }, h('option', { value: 'write' }, t('tokens.scope_write')), h('option', { value: 'read' }, t('tokens.scope_read')));
  const days = h('input', { name: 'expires_in_days', type: 'number', min: 1, value: '90' });
  const made = await formDialog(t('tokens.create_title'), (form) => form.append(field(t('common.name'), name), field(t('tokens.scope'), scope),
    field(t('tokens.expires_days'), days, t('tokens.expires_hint'))), {
    submitLabel: t('common.create'),
    submit: async () => api(base, { method: 'POST', body: {
      name: name.value.trim(), scope: scope.value, expires_in_days: days.value ? Number(days.value) : null } }),
  });
  if (!made) return false;
  const shown = h('input', { name: 'new-token', readonly: true, value: made.token, class: 'token-value', 'aria-label': t('tokens.new_token') });
  const copy = h('button', { type: 'button', class: 'secondary', 'data-action': 'copy-token', onclick: async () => {
    shown.select();
    try { await navigator.clipboard.writeText(made.token); } catch { document.execCommand('copy'); }
    copy.textContent = t('tokens.copied');
  } }, t('common.copy'));
  await formDialog(t('tokens.token_named', { name: made.name }), (form) => form.append(
    h('p', {}, t('tokens.copy_now')),
    h('div', { class: 'row token-row' }, shown, copy)), { submitLabel: t('common.done') });
  return true;
}
