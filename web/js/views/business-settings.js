// A business's part of Settings: the greeting new customers see, up to 10
// quick replies (a label people tap, metadata their bot reads), and the way
// to the Message-button generator.

import * as store from '../store.js';
import * as api from '../api.js';
import { h, mount } from '../dom.js';

const MAX_REPLIES = 10;
const MAX_LABEL = 36;
const MAX_METADATA = 200;
const MAX_GREETING = 500;

export function businessSettings(status) {
  const me = store.state.me;

  const greetingInput = h('textarea', {
    id: 'settings-greeting', class: 'input', rows: '3', maxlength: String(MAX_GREETING),
    placeholder: 'Hi! How can we help?', 'aria-describedby': 'settings-greeting-hint',
  });
  greetingInput.value = me.greeting || '';
  const greetingForm = h('form', { class: 'setting-block', novalidate: true },
    h('label', { for: 'settings-greeting', class: 'setting-label' }, 'Greeting'),
    h('p', { class: 'setting-desc', id: 'settings-greeting-hint' },
      'Shown to anyone who opens a new conversation with you, before they write.'),
    greetingInput,
    h('div', null, h('button', { class: 'btn', type: 'submit' }, 'Save greeting')));
  greetingForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.textContent = 'Saving…';
    try {
      await store.updateSettings({ greeting: greetingInput.value.trim() || null });
      status.textContent = 'Greeting saved.';
    } catch (e) {
      status.textContent = e.detail;
    }
  });

  // Quick replies: rows of two inputs, edited locally and saved together.
  let rows = (me.quick_replies || []).map((r) => ({ ...r }));
  const rowsBox = h('div', { class: 'setting-block', role: 'group', 'aria-label': 'Quick replies' });
  const addBtn = h('button', { class: 'btn btn-sm', type: 'button', onclick: () => { rows.push({ label: '', metadata: '' }); draw(true); } }, 'Add a quick reply');
  const repliesForm = h('form', { class: 'setting-block', novalidate: true },
    h('p', { class: 'setting-label' }, 'Quick replies'),
    h('p', { class: 'setting-desc' },
      `Up to ${MAX_REPLIES} options shown with your greeting. Tapping one sends its label; the metadata goes with it for your bot or team.`),
    rowsBox,
    h('div', { class: 'qr-actions' }, addBtn, h('button', { class: 'btn', type: 'submit' }, 'Save quick replies')));

  function draw(focusLast = false) {
    addBtn.disabled = rows.length >= MAX_REPLIES;
    mount(rowsBox,
      rows.length > 0 && h('div', { class: 'qr-row qr-head', 'aria-hidden': 'true' }, h('span', null, 'Label'), h('span', null, 'Metadata'), h('span')),
      rows.map((row, i) => {
        const label = h('input', { class: 'input', type: 'text', value: row.label, maxlength: String(MAX_LABEL), 'aria-label': `Quick reply ${i + 1} label`, placeholder: 'Track my order' });
        const meta = h('input', { class: 'input', type: 'text', value: row.metadata, maxlength: String(MAX_METADATA), 'aria-label': `Quick reply ${i + 1} metadata`, placeholder: 'intent:track' });
        label.addEventListener('input', () => { row.label = label.value; });
        meta.addEventListener('input', () => { row.metadata = meta.value; });
        return h('div', { class: 'qr-row' }, label, meta,
          h('button', { class: 'btn btn-ghost btn-sm', type: 'button', 'aria-label': `Remove quick reply ${i + 1}`, onclick: () => { rows.splice(i, 1); draw(); } }, 'Remove'));
      }));
    if (focusLast) {
      const inputs = rowsBox.querySelectorAll('input');
      if (inputs.length) inputs[inputs.length - 2].focus();
    }
  }
  repliesForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const replies = rows
      .map((r) => ({ label: r.label.trim(), metadata: r.metadata.trim() }))
      .filter((r) => r.label || r.metadata);
    status.textContent = 'Saving…';
    try {
      const res = await store.updateSettings({ quick_replies: replies });
      rows = (res.user.quick_replies || []).map((r) => ({ ...r }));
      draw();
      status.textContent = 'Quick replies saved.';
    } catch (e) {
      status.textContent = e.detail;
    }
  });
  draw();

  return h('div', { class: 'setting-block' },
    h('h3', { class: 'setting-group' }, 'Business'),
    greetingForm,
    repliesForm,
    teamSettings(status),
    h('div', { class: 'setting-block' },
      h('p', { class: 'setting-label' }, 'Message button'),
      h('p', { class: 'setting-desc' }, 'Put a “Message” button on your website that opens a conversation with you.'),
      h('div', null, h('a', { class: 'btn btn-primary btn-sm', href: '/buttons' }, 'Make a Message button'))));
}

// The team: agents answer as the business with their own logins.
function teamSettings(status) {
  const listBox = h('ul', { class: 'team-members', 'aria-label': 'Agents' });
  const input = h('input', {
    id: 'settings-agent', class: 'input', type: 'text', placeholder: 'handle',
    autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false',
  });
  const form = h('form', { class: 'setting-block', novalidate: true },
    h('p', { class: 'setting-label' }, 'Team'),
    h('p', { class: 'setting-desc' },
      'Agents answer your customers as you, each with their own sign-in. They see who wrote what and can leave internal notes.'),
    listBox,
    h('div', { class: 'qr-actions' },
      h('label', { for: 'settings-agent', class: 'sr-only' }, 'Handle of a new agent'),
      input, h('button', { class: 'btn', type: 'submit' }, 'Add agent')));

  async function load() {
    try {
      const res = await api.team();
      mount(listBox, res.users.length
        ? res.users.map((u) => h('li', { class: 'team-member' },
          h('span', null, `@${u.handle}`),
          h('button', {
            class: 'btn btn-ghost btn-sm', type: 'button', 'aria-label': `Remove @${u.handle} from the team`,
            onclick: async () => {
              try {
                await api.removeAgent(u.handle);
                status.textContent = `@${u.handle} left the team.`;
                load();
              } catch (e) {
                status.textContent = e.detail;
              }
            },
          }, 'Remove')))
        : h('li', { class: 'setting-desc' }, 'No agents yet.'));
    } catch (e) {
      status.textContent = e.detail;
    }
  }
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const handle = input.value.trim().replace(/^@+/, '');
    if (!handle) return;
    status.textContent = 'Adding…';
    try {
      await api.addAgent(handle);
      input.value = '';
      status.textContent = `@${handle} is in the team.`;
      load();
    } catch (e) {
      status.textContent = e.detail;
    }
  });
  load();
  return form;
}
