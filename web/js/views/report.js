// The report dialog, shared by a request, a conversation, the requests list
// and the profile card: one place that says what a report does (it blocks
// too, and the request goes away) before the person commits to it.

import * as store from '../store.js';
import { h, toast } from '../dom.js';

/**
 * Ask for a reason and confirm; `messageId` (optional) is the message being
 * reported, which operators see. `onDone` runs after the report went through.
 */
export function openReportDialog(handle, { messageId = null, onDone = null } = {}) {
  const at = `@${handle}`;
  const status = h('p', { class: 'dialog-status', role: 'status' });
  const submit = h('button', { class: 'btn btn-danger', type: 'submit' }, 'Report and block');
  const form = h('form', { class: 'dialog-body report-form', novalidate: true },
    h('fieldset', null,
      h('legend', null, `Why are you reporting ${at}?`),
      h('label', { class: 'radio' }, h('input', { type: 'radio', name: 'reason', value: 'spam', checked: true }), 'Spam'),
      h('label', { class: 'radio' }, h('input', { type: 'radio', name: 'reason', value: 'abuse' }), 'Abuse or harassment')),
    h('p', { class: 'field-hint' },
      `Reporting also blocks ${at}: neither of you can message the other, and the conversation leaves your requests. `,
      'The operators of this server see the report.'),
    h('div', { class: 'person-actions' },
      submit,
      h('button', { class: 'btn btn-ghost', type: 'button', onclick: () => dlg.close() }, 'Cancel')));
  const dlg = h('dialog', { class: 'dialog report-dialog', 'aria-labelledby': 'report-title' },
    h('div', { class: 'dialog-head' }, h('h2', { id: 'report-title', class: 'dialog-title' }, `Report ${at}`)),
    form, status);
  dlg.addEventListener('close', () => dlg.remove());
  dlg.addEventListener('click', (ev) => { if (ev.target === dlg) dlg.close(); });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const reason = form.querySelector('input[name="reason"]:checked').value;
    submit.disabled = true;
    status.textContent = 'Sending report…';
    try {
      await store.reportPerson(handle, reason, messageId);
      dlg.close();
      toast(`Thanks. ${at} is reported and blocked.`, { kind: 'info' });
      if (onDone) onDone();
    } catch (e) {
      submit.disabled = false;
      status.textContent = `Couldn’t send the report: ${e.detail}`;
    }
  });
  document.body.appendChild(dlg);
  dlg.showModal();
  return dlg;
}
