// Profile card: who the person is, how you relate, and the actions that
// change it (follow, block, report). A native <dialog> gives focus
// trapping, Escape to close and focus return for free.

import * as store from '../store.js';
import * as api from '../api.js';
import { h, mount, avatar, displayName, hasOwnName } from '../dom.js';
import { hrefFor, go } from '../router.js';
import { relationText, verdict, dmsText } from './people.js';

export function openProfile(handle) {
  const body = h('div', { class: 'dialog-body' }, h('p', { class: 'older-note' }, 'Loading…'));
  const status = h('p', { class: 'dialog-status', role: 'status' });
  const closeBtn = h('button', { class: 'icon-btn dialog-close', type: 'button', 'aria-label': 'Close', onclick: () => dlg.close() },
    h('span', { class: 'icon icon-close', 'aria-hidden': 'true' }));
  const dlg = h('dialog', { class: 'dialog profile-dialog', 'aria-labelledby': 'profile-title' },
    h('div', { class: 'dialog-head' }, h('h2', { id: 'profile-title', class: 'dialog-title' }, 'Profile'), closeBtn),
    body, status);
  dlg.addEventListener('close', () => dlg.remove());
  // Click on the backdrop closes, like every other modal people know.
  dlg.addEventListener('click', (ev) => { if (ev.target === dlg) dlg.close(); });
  document.body.appendChild(dlg);
  dlg.showModal();

  let data = null;
  let reporting = false;

  async function load() {
    try {
      data = await store.getUser(handle);
      draw();
    } catch (e) {
      mount(body, h('p', { class: 'form-error', role: 'alert' },
        e.status === 404 ? `There’s no one with the handle @${handle}.` : e.detail));
    }
  }

  async function run(label, fn, done) {
    status.textContent = `${label}…`;
    try {
      await fn();
      data = await store.getUser(handle);
      status.textContent = done;
      draw();
    } catch (e) {
      status.textContent = e.detail;
    }
  }

  function draw() {
    const { user, relationship: rel } = data;
    const v = verdict(rel, user);
    const at = `@${user.handle}`;
    const buttons = [];
    if (rel.can_message) {
      buttons.push(h('button', { class: 'btn btn-primary', type: 'button', onclick: () => { dlg.close(); go(hrefFor.thread(user.handle)); } }, 'Message'));
    }
    buttons.push(rel.following
      ? h('button', { class: 'btn', type: 'button', onclick: () => run('Unfollowing', () => api.unfollow(user.handle), `You no longer follow ${at}.`) }, 'Unfollow')
      : h('button', { class: 'btn', type: 'button', disabled: rel.blocking || rel.blocked_by, onclick: () => run('Following', () => api.follow(user.handle), `You follow ${at}.`) }, 'Follow'));
    buttons.push(rel.blocking
      ? h('button', { class: 'btn', type: 'button', onclick: () => run('Unblocking', () => api.unblock(user.handle), `You unblocked ${at}.`) }, 'Unblock')
      : h('button', { class: 'btn btn-danger', type: 'button', onclick: () => run('Blocking', () => api.block(user.handle), `You blocked ${at}. Neither of you can message the other.`) }, 'Block'));
    buttons.push(h('button', { class: 'btn btn-danger-ghost', type: 'button', 'aria-expanded': String(reporting), onclick: () => { reporting = !reporting; draw(); } }, 'Report…'));

    mount(body,
      h('div', { class: 'person-head' },
        avatar(user, 'lg'),
        h('div', { class: 'person-names' },
          h('p', { class: 'person-name' }, displayName(user), user.kind === 'business' && h('span', { class: 'tag' }, 'Business')),
          hasOwnName(user) && h('p', { class: 'person-handle' }, at),
          h('p', { class: 'person-rel' }, relationText(rel, user)))),
      user.greeting && h('div', { class: 'greeting greeting-inline' },
        h('div', { class: 'greeting-body' },
          h('p', { class: 'greeting-label' }, 'Greeting'),
          h('p', { class: 'greeting-text' }, user.greeting))),
      h('p', { class: ['verdict-line', v.ok ? 'is-ok' : 'is-no'] }, v.ok ? v.title : `${v.title}. ${v.reason}`),
      h('p', { class: 'person-dms' }, dmsText(rel, user)),
      h('div', { class: 'person-actions' }, buttons),
      reporting && reportForm(user));
  }

  function reportForm(user) {
    const form = h('form', { class: 'report-form', novalidate: true },
      h('fieldset', null,
        h('legend', null, `Report @${user.handle}`),
        h('label', { class: 'radio' }, h('input', { type: 'radio', name: 'reason', value: 'spam', checked: true }), 'Spam'),
        h('label', { class: 'radio' }, h('input', { type: 'radio', name: 'reason', value: 'abuse' }), 'Abuse or harassment')),
      h('p', { class: 'field-hint' }, 'Reporting also blocks them: neither of you can message the other, and a request from them goes away. Operators see the report.'),
      h('div', { class: 'person-actions' },
        h('button', { class: 'btn btn-danger', type: 'submit' }, 'Report and block'),
        h('button', { class: 'btn btn-ghost', type: 'button', onclick: () => { reporting = false; draw(); } }, 'Cancel')));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const reason = form.querySelector('input[name="reason"]:checked').value;
      status.textContent = 'Sending report…';
      try {
        await store.reportPerson(user.handle, reason);
        reporting = false;
        data = await store.getUser(handle);
        status.textContent = `Thanks. @${user.handle} is reported and blocked.`;
        draw();
      } catch (e) {
        status.textContent = `Couldn’t send the report: ${e.detail}`;
      }
    });
    return form;
  }

  load();
}
