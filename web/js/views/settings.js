// Settings: who can message you, read receipts, display name, and the
// account itself: password, sign out everywhere, export, delete; for a
// business also its greeting, quick replies and the Message-button generator.
// Switches apply at once (and roll back if the server says no), because a
// privacy setting that needs a separate "Save" is one people think is on
// when it isn't.

import * as api from '../api.js';
import * as store from '../store.js';
import { h, avatar, mount, uid } from '../dom.js';
import { fullTime } from '../format.js';
import { businessSettings } from './business-settings.js';

export function openSettings({ onSignOut, onSignedOut = () => location.replace('/') }) {
  const me = store.state.me;
  const settings = store.state.settings;
  const status = h('p', { class: 'dialog-status', role: 'status' });
  const closeBtn = h('button', { class: 'icon-btn dialog-close', type: 'button', 'aria-label': 'Close', onclick: () => dlg.close() },
    h('span', { class: 'icon icon-close', 'aria-hidden': 'true' }));

  function toggle(labelText, description, checked, apply) {
    const id = uid('switch');
    const descId = uid('desc');
    const input = h('input', { id, type: 'checkbox', role: 'switch', class: 'switch', checked, 'aria-describedby': descId });
    input.addEventListener('change', async () => {
      const want = input.checked;
      input.disabled = true;
      status.textContent = 'Saving…';
      try {
        await apply(want);
        status.textContent = 'Saved.';
      } catch (e) {
        input.checked = !want;
        status.textContent = e.detail;
      } finally {
        input.disabled = false;
      }
    });
    return h('div', { class: 'setting' },
      h('div', { class: 'setting-text' },
        h('label', { for: id, class: 'setting-label' }, labelText),
        h('p', { class: 'setting-desc', id: descId }, description)),
      input);
  }

  const nameInput = h('input', { id: 'settings-name', class: 'input', type: 'text', value: me.name || '', maxlength: '50', autocomplete: 'name' });
  const nameForm = h('form', { class: 'setting setting-name', novalidate: true },
    h('div', { class: 'field' },
      h('label', { for: 'settings-name' }, 'Display name'),
      h('div', { class: 'inline-field' }, nameInput, h('button', { class: 'btn', type: 'submit' }, 'Save'))));
  nameForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.textContent = 'Saving…';
    try {
      await store.updateSettings({ name: nameInput.value.trim() });
      status.textContent = 'Name saved.';
    } catch (e) {
      status.textContent = e.detail;
    }
  });

  function passwordField(id, label, autocomplete) {
    const input = h('input', { id, class: 'input', type: 'password', autocomplete, required: true });
    return [h('div', { class: 'field' }, h('label', { for: id }, label), input), input];
  }

  const [currentField, currentInput] = passwordField('settings-current-password', 'Current password', 'current-password');
  const [newField, newInput] = passwordField('settings-new-password', 'New password (8 characters or more)', 'new-password');
  const passwordForm = h('form', { class: 'setting setting-name setting-password', novalidate: true },
    currentField, newField,
    h('button', { class: 'btn', type: 'submit' }, 'Change password'));
  passwordForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.textContent = 'Saving…';
    try {
      await api.changePassword(currentInput.value, newInput.value);
      currentInput.value = '';
      newInput.value = '';
      status.textContent = 'Password changed. Your other sessions were signed out.';
    } catch (e) {
      status.textContent = e.detail;
    }
  });

  // Two steps instead of a native confirm(): the first click asks, the second acts.
  let everywhereArmed = false;
  async function everywhere(ev) {
    if (!everywhereArmed) {
      everywhereArmed = true;
      ev.currentTarget.textContent = 'Sign out on every device, this one too?';
      ev.currentTarget.classList.add('btn-danger');
      return;
    }
    try {
      await api.signOutEverywhere();
    } catch (e) {
      if (e.status !== 401) { status.textContent = e.detail; return; }
    }
    dlg.close();
    onSignedOut();
  }

  // Where you are signed in, each with its own sign-out (this device: use Sign out).
  const sessionList = h('ul', { class: 'session-list', 'aria-label': 'Where you are signed in' });
  async function drawSessions() {
    let found;
    try {
      found = (await api.sessions()).sessions;
    } catch (e) {
      mount(sessionList, h('li', { class: 'setting-desc' }, e.detail));
      return;
    }
    mount(sessionList, found.map((s) => h('li', { class: 'session' },
      h('div', { class: 'session-text' },
        h('p', { class: 'session-agent' }, s.user_agent || 'Unknown browser or app'),
        h('p', { class: 'setting-desc' }, `${s.ip || 'unknown address'} · since ${fullTime(s.created_at)}`)),
      s.current
        ? h('span', { class: 'session-current' }, 'This device')
        : h('button', {
          class: 'btn', type: 'button', 'aria-label': `Sign out ${s.user_agent || 'session'} ${s.id}`,
          onclick: async () => {
            try {
              await api.endSession(s.id);
              status.textContent = 'Signed out there.';
            } catch (e) {
              status.textContent = e.detail;
            }
            drawSessions();
          },
        }, 'Sign out'))));
  }
  drawSessions();

  const [deleteField, deleteInput] = passwordField('settings-delete-password', 'Your password, to confirm', 'current-password');
  const deleteForm = h('form', { class: 'setting setting-name setting-delete', novalidate: true, hidden: true },
    h('p', { class: 'setting-desc' },
      'Deleting your account signs you out everywhere and removes your profile, follows and blocks. ' +
      'People you talked to keep their conversations. Your handle stays reserved. This cannot be undone.'),
    deleteField,
    h('button', { class: 'btn btn-danger', type: 'submit' }, 'Delete my account for good'));
  deleteForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.textContent = 'Deleting…';
    try {
      await api.deleteAccount(deleteInput.value);
    } catch (e) {
      status.textContent = e.detail;
      return;
    }
    dlg.close();
    onSignedOut();
  });

  const dlg = h('dialog', { class: 'dialog settings-dialog', 'aria-labelledby': 'settings-title' },
    h('div', { class: 'dialog-head' }, h('h2', { id: 'settings-title', class: 'dialog-title' }, 'Settings'), closeBtn),
    h('div', { class: 'dialog-body' },
      h('div', { class: 'person-head' },
        avatar(me, 'lg'),
        h('div', { class: 'person-names' },
          h('p', { class: 'person-name' }, me.name || `@${me.handle}`,
            me.kind === 'business' && h('span', { class: 'tag' }, 'Business')),
          h('p', { class: 'person-handle' }, `Signed in as @${me.handle}`))),
      h('h3', { class: 'setting-group' }, 'Privacy'),
      toggle('Receive messages from anyone',
        'When on, anyone can message you, and messages from people you don’t follow wait in Requests until you accept, delete or block them.',
        Boolean(me.open_dms),
        (v) => store.updateSettings({ open_dms: v })),
      toggle('Read receipts',
        'Let people see when you’ve read their messages. When off, you won’t see when they’ve read yours either.',
        settings.read_receipts !== false,
        (v) => store.updateSettings({ read_receipts: v })),
      h('h3', { class: 'setting-group' }, 'Profile'),
      nameForm,
      me.kind === 'business' && businessSettings(status),
      h('h3', { class: 'setting-group' }, 'Account'),
      passwordForm,
      h('h3', { class: 'setting-group' }, 'Where you are signed in'),
      sessionList,
      h('div', { class: 'setting setting-actions' },
        h('a', { class: 'btn', href: api.EXPORT_URL, download: '' }, 'Download my data'),
        h('button', { class: 'btn', type: 'button', onclick: everywhere }, 'Sign out everywhere'),
        h('button', { class: 'btn btn-danger-ghost', type: 'button', onclick: () => { deleteForm.hidden = false; deleteInput.focus(); } }, 'Delete account…')),
      deleteForm,
      h('div', { class: 'setting-foot' },
        h('button', { class: 'btn btn-danger-ghost', type: 'button', onclick: () => { dlg.close(); onSignOut(); } }, 'Sign out'))),
    status);
  dlg.addEventListener('close', () => dlg.remove());
  dlg.addEventListener('click', (ev) => { if (ev.target === dlg) dlg.close(); });
  document.body.appendChild(dlg);
  dlg.showModal();
}
