// Sign in / create account.
//
// The password only ever lives in the input element and the request body;
// the session comes back as an HttpOnly cookie that scripts cannot read.
// The returned token is deliberately ignored.

import * as api from '../api.js';
import { h, mount, uid } from '../dom.js';
import { HANDLE_RE, cleanHandle } from '../format.js';

/**
 * @param {HTMLElement} root
 * @param {object} opts
 * @param {string} [opts.note]  why sign-in is needed (deep link, session ended)
 * @param {'signin'|'signup'} [opts.mode]
 * @param {(me: {user, settings}) => void} opts.onDone
 */
export function renderAuth(root, { note = '', mode = 'signin', onDone }) {
  let current = mode;

  const errorBox = h('p', { class: 'form-error', role: 'alert', id: uid('auth-err') });
  const fields = {};

  function field(name, label, attrs, hint) {
    const id = uid(`auth-${name}`);
    const hintId = hint ? uid('hint') : null;
    const errId = uid('err');
    const input = h('input', { id, name, class: 'input', 'aria-describedby': [hintId, errId].filter(Boolean).join(' '), ...attrs });
    const err = h('span', { class: 'field-error', id: errId });
    fields[name] = { input, err };
    return h('div', { class: 'field' },
      h('label', { for: id }, label),
      input,
      hint && h('span', { class: 'field-hint', id: hintId }, hint),
      err);
  }

  function setFieldError(name, text) {
    const f = fields[name];
    if (!f) return;
    f.err.textContent = text || '';
    if (text) f.input.setAttribute('aria-invalid', 'true');
    else f.input.removeAttribute('aria-invalid');
  }

  function draw() {
    for (const k of Object.keys(fields)) delete fields[k];
    const signup = current === 'signup';
    const submit = h('button', { class: 'btn btn-primary btn-block', type: 'submit' }, signup ? 'Create account' : 'Sign in');
    const form = h('form', { class: 'auth-form', novalidate: true, 'aria-describedby': errorBox.id },
      field('handle', 'Handle', {
        type: 'text', autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false',
        maxlength: '16', required: true, inputmode: 'text',
      }, signup ? 'Letters, digits or _, up to 15. You can’t change it later.' : null),
      signup && field('name', 'Display name (optional)', { type: 'text', autocomplete: 'name', maxlength: '50' }),
      signup && h('fieldset', { class: 'account-kind' },
        h('legend', null, 'Account type'),
        h('label', { class: 'radio' }, h('input', { type: 'radio', name: 'kind', value: 'person', checked: true }), 'Person'),
        h('label', { class: 'radio' }, h('input', { type: 'radio', name: 'kind', value: 'business' }),
          'Business (a greeting, quick replies and a Message button for your website)')),
      field('password', 'Password', {
        type: 'password', required: true, minlength: signup ? '8' : null,
        autocomplete: signup ? 'new-password' : 'current-password',
      }, signup ? 'At least 8 characters.' : null),
      errorBox,
      submit,
    );

    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      errorBox.textContent = '';
      const handle = cleanHandle(fields.handle.input.value);
      const password = fields.password.input.value;
      const name = fields.name ? fields.name.input.value.trim() : '';
      let bad = false;
      setFieldError('handle', '');
      setFieldError('password', '');
      if (!HANDLE_RE.test(handle)) {
        setFieldError('handle', 'Use 1 to 15 letters, digits or _.');
        bad = true;
      }
      if (signup ? password.length < 8 : password.length === 0) {
        setFieldError('password', signup ? 'Use at least 8 characters.' : 'Enter your password.');
        bad = true;
      }
      if (bad) {
        form.querySelector('[aria-invalid="true"]').focus();
        return;
      }
      submit.disabled = true;
      submit.textContent = signup ? 'Creating account…' : 'Signing in…';
      try {
        const kindInput = form.querySelector('input[name="kind"]:checked');
        const kind = kindInput ? kindInput.value : 'person';
        if (signup) await api.signUp({ handle, password, kind, ...(name ? { name } : {}) });
        else await api.signIn(handle, password);
        fields.password.input.value = '';
        // /api/me carries the settings too, and proves the cookie works.
        const me = await api.me();
        onDone(me);
      } catch (e) {
        if (e.field && fields[e.field]) {
          setFieldError(e.field, e.detail);
          fields[e.field].input.focus();
        } else {
          errorBox.textContent = e.detail;
        }
        submit.disabled = false;
        submit.textContent = signup ? 'Create account' : 'Sign in';
      }
    });

    const switcher = h('p', { class: 'auth-switch' },
      signup ? 'Already have an account? ' : 'New to dmhub? ',
      h('button', {
        type: 'button',
        class: 'link-btn',
        onclick: () => {
          current = signup ? 'signin' : 'signup';
          errorBox.textContent = '';
          draw();
          fields.handle.input.focus();
        },
      }, signup ? 'Sign in' : 'Create an account'));

    mount(root,
      h('main', { class: 'auth-wrap' },
        h('section', { class: 'auth-card', 'aria-labelledby': 'auth-title' },
          h('div', { class: 'brand brand-auth' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }), 'dmhub'),
          h('h1', { id: 'auth-title', class: 'auth-title' }, signup ? 'Create your account' : 'Sign in'),
          note && h('p', { class: 'auth-note' }, note),
          form,
          switcher)));
  }

  draw();
  fields.handle.input.focus();
}
