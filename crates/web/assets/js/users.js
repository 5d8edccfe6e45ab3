// The users and projects page (`/users`): for administrators, the users with their
// role and projects, the departments and their projects; for everyone, their own API
// tokens (a new token is shown once, with a copy button).
import { api, h, field, errorBox, errorText, toast, fmtTime, formDialog, confirmDialog } from './ui.js';

const ROLES = [['user', 'User: sees what it created'], ['manager', 'Manager: acts in its projects'], ['admin', 'Administrator: everything']];

export async function render(main) {
  document.title = 'Users and projects · Wharf';
  let me;
  try {
    me = await api('/me');
  } catch (e) {
    main.append(errorBox(e, 'Who you are could not be loaded.'));
    return;
  }
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Users and projects')));
  if (me.role === 'admin') {
    const users = h('section', { class: 'users' });
    const projects = h('section', { class: 'projects' });
    main.append(h('div', { class: 'split wide-left' }, users, projects));
    const reload = async () => {
      let data;
      try {
        data = await Promise.all([api('/users'), api('/projects'), api('/departments')]);
      } catch (e) {
        users.replaceChildren(errorBox(e, 'The users could not be loaded.'));
        return;
      }
      const [u, p, d] = data;
      users.replaceChildren(...userSection(u.items, p.items, reload, me.name));
      projects.replaceChildren(...projectSection(p.items, d.items, reload));
    };
    await reload();
  } else {
    main.append(h('div', { class: 'banner refused', role: 'note' },
      h('strong', {}, 'Only administrators manage users, departments and projects. '),
      `You are ${me.name}, a ${me.role}` + (me.projects && me.projects.length ? ` in ${me.projects.join(', ')}` : '') + '.'));
  }
  const tokens = h('section', { class: 'tokens' });
  main.append(tokens);
  await tokenSection(tokens, me.name);
}

function userSection(users, projects, reload, me) {
  // Disable, enable and delete; the server refuses yourself and the built-in admin.
  const act = (u, action, title, text, request) => h('button', { type: 'button', class: 'secondary' + (action === 'enable' ? '' : ' danger'),
    'data-action': `${action}-user`, 'aria-label': `${title} ${u.name}`,
    onclick: async () => {
      if (!await confirmDialog(`${title} ${u.name}?`, text, title)) return;
      try { await api(`/users/${encodeURIComponent(u.name)}`, request); reload(); } catch (e) { toast(errorText(e), 'error'); }
    } }, title);
  const actions = (u) => (u.name === me || u.name === 'admin') ? null : [
    u.disabled_at
      ? act(u, 'enable', 'Enable', 'They can log in again and their API tokens work again.', { method: 'PUT', body: { disabled: false } })
      : act(u, 'disable', 'Disable', 'They cannot log in; their sessions end and their API tokens stop working at once.', { method: 'PUT', body: { disabled: true } }),
    act(u, 'delete', 'Delete', 'The user, their API tokens, sessions and memberships are removed. What they created stays.', { method: 'DELETE' }),
  ];
  const rows = users.map((u) => h('tr', { 'data-user': u.name },
    h('td', { class: 'name' }, u.name),
    h('td', { class: 'role' }, u.role),
    h('td', { class: 'projects' }, u.projects.length ? u.projects.join(', ') : h('span', { class: 'muted' }, 'none')),
    h('td', {}, fmtTime(u.created_at)),
    h('td', { class: 'state' }, u.disabled_at ? `disabled ${fmtTime(u.disabled_at)}` : 'enabled'),
    h('td', { class: 'actions' }, actions(u))));
  return [
    h('div', { class: 'page-head' }, h('h2', {}, 'Users'), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'primary', 'data-action': 'add-user', onclick: () => addUser(projects).then((ok) => ok && reload()) }, 'Add a user')),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list users' },
      h('thead', {}, h('tr', {}, ['Name', 'Role', 'Projects', 'Created', 'State', ''].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows))),
  ];
}

function addUser(projects) {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  const password = h('input', { name: 'password', type: 'password', required: true, minlength: 8, autocomplete: 'new-password' });
  const role = h('select', { name: 'role' }, ROLES.map(([v, label]) => h('option', { value: v }, label)));
  const boxes = projects.map((p) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'project', value: p.name }), p.name));
  return formDialog('Add a user', (form) => form.append(
    field('Name', name), field('Password', password, '8 characters or more.'), field('Role', role),
    h('fieldset', {}, h('legend', {}, 'Projects'), boxes.length ? boxes : h('p', { class: 'muted' }, 'No projects yet.'))), {
    submitLabel: 'Add',
    submit: async (form) => {
      const chosen = [...form.querySelectorAll('input[name=project]:checked')].map((c) => c.value);
      await api('/users', { method: 'POST', body: { name: name.value.trim(), password: password.value, role: role.value, projects: chosen } });
      toast(`Added ${name.value.trim()}.`);
      return true;
    },
  });
}

function projectSection(projects, departments, reload) {
  const byDept = departments.map((d) => h('li', { 'data-department': d }, h('strong', {}, d),
    h('ul', {}, projects.filter((p) => p.department === d).map((p) => h('li', { 'data-project': p.name }, p.name)))));
  return [
    h('div', { class: 'page-head' }, h('h2', {}, 'Departments and projects'), h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'secondary', 'data-action': 'add-department', onclick: () => addDepartment().then((ok) => ok && reload()) }, 'Add a department'),
      h('button', { type: 'button', class: 'primary', 'data-action': 'add-project', onclick: () => addProject(departments).then((ok) => ok && reload()) }, 'Add a project')),
    h('ul', { class: 'image-list departments' }, byDept),
  ];
}

function addDepartment() {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  return formDialog('Add a department', (form) => form.append(field('Name', name)), {
    submitLabel: 'Add',
    submit: async () => { await api('/departments', { method: 'POST', body: { name: name.value.trim() } }); return true; },
  });
}

function addProject(departments) {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  const dept = h('select', { name: 'department' }, departments.map((d) => h('option', { value: d }, d)));
  return formDialog('Add a project', (form) => form.append(field('Name', name), field('Department', dept)), {
    submitLabel: 'Add',
    submit: async () => {
      await api('/projects', { method: 'POST', body: { name: name.value.trim(), department: dept.value } });
      return true;
    },
  });
}

async function tokenSection(box, user) {
  const base = `/users/${encodeURIComponent(user)}/tokens`;
  const head = h('div', { class: 'page-head' }, h('h2', {}, 'My API tokens'), h('span', { class: 'spacer' }),
    h('button', { type: 'button', class: 'primary', 'data-action': 'add-token', onclick: () => addToken(base).then((ok) => ok && load()) }, 'Create a token'));
  const list = h('div', {});
  box.replaceChildren(head, list);
  async function load() {
    let data;
    try {
      data = await api(base);
    } catch (e) {
      list.replaceChildren(errorBox(e, 'Your tokens could not be loaded.'));
      return;
    }
    if (!data.items.length) {
      list.replaceChildren(h('div', { class: 'empty' }, h('p', {}, 'No API tokens yet.'),
        h('p', {}, 'A token lets scripts and the `wharf` command line call the API as you.')));
      return;
    }
    const rows = data.items.map((t) => h('tr', { 'data-token': t.name },
      h('td', { class: 'name' }, t.name), h('td', {}, t.scope),
      h('td', {}, t.expires_at ? fmtTime(t.expires_at) : 'never'),
      h('td', {}, t.last_used_at ? fmtTime(t.last_used_at) : 'never'),
      h('td', { class: 'state' }, t.revoked_at ? `revoked ${fmtTime(t.revoked_at)}` : 'active'),
      h('td', { class: 'actions' }, t.revoked_at ? null : h('button', { type: 'button', class: 'secondary danger', 'data-action': 'revoke', 'aria-label': `Revoke ${t.name}`,
        onclick: async () => {
          if (!await confirmDialog(`Revoke ${t.name}?`, 'Whatever uses this token stops working at once.', 'Revoke')) return;
          try { await api(`${base}/${encodeURIComponent(t.name)}`, { method: 'DELETE' }); load(); } catch (e) { toast(errorText(e), 'error'); }
        } }, 'Revoke'))));
    list.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'list tokens' },
      h('thead', {}, h('tr', {}, ['Name', 'Scope', 'Expires', 'Last used', 'State', ''].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows))));
  }
  await load();
}

async function addToken(base) {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  const scope = h('select', { name: 'scope' }, h('option', { value: 'write' }, 'write (everything you may do)'), h('option', { value: 'read' }, 'read (GET only)'));
  const days = h('input', { name: 'expires_in_days', type: 'number', min: 1, value: '90' });
  const made = await formDialog('Create an API token', (form) => form.append(field('Name', name), field('Scope', scope),
    field('Expires in days', days, 'Empty: never.')), {
    submitLabel: 'Create',
    submit: async () => api(base, { method: 'POST', body: {
      name: name.value.trim(), scope: scope.value, expires_in_days: days.value ? Number(days.value) : null } }),
  });
  if (!made) return false;
  const shown = h('input', { name: 'new-token', readonly: true, value: made.token, class: 'token-value', 'aria-label': 'The new token' });
  const copy = h('button', { type: 'button', class: 'secondary', 'data-action': 'copy-token', onclick: async () => {
    shown.select();
    try { await navigator.clipboard.writeText(made.token); } catch { document.execCommand('copy'); }
    copy.textContent = 'Copied';
  } }, 'Copy');
  await formDialog(`Token ${made.name}`, (form) => form.append(
    h('p', {}, 'Copy the token now: it is shown this once and Wharf keeps only its hash.'),
    h('div', { class: 'row token-row' }, shown, copy)), { submitLabel: 'Done' });
  return true;
}
