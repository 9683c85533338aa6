// The Message-button generator (/buttons): a form whose every change asks
// GET /api/buttons, the same check a customer's click would meet, and shows
// either the live button and its snippet, or the error next to its field.

import * as api from '../api.js';
import { h, mount } from '../dom.js';

const CHECK_DELAY_MS = 250;
const FIELDS = ['handle', 'text', 'label', 'size', 'ref'];

const form = document.getElementById('gen-form');
const preview = document.getElementById('gen-preview');
const snippetEl = document.getElementById('gen-snippet');
const copyBtn = document.getElementById('gen-copy');
const status = document.getElementById('gen-status');
let me = null; // the signed-in account, if any: its own closed DMs get a fix-it button
let seq = 0;
let timer = null;
let snippet = '';

function values() {
  const data = new FormData(form);
  const out = {};
  for (const name of FIELDS) out[name] = String(data.get(name) || '');
  out.handle = out.handle.trim().replace(/^@+/, '');
  return out;
}

function errorBox(field) {
  return form.querySelector(`.field-error[data-field="${field}"]`);
}

function clearErrors() {
  for (const name of FIELDS) {
    mount(errorBox(name));
    for (const el of form.querySelectorAll(`[name="${name}"]`)) el.removeAttribute('aria-invalid');
  }
}

function showError(e, handle) {
  const field = FIELDS.includes(e.field) ? e.field : 'handle';
  const box = errorBox(field);
  const parts = [e.detail];
  if (e.code === 'dms_closed' && me && me.handle.toLowerCase() === handle.toLowerCase()) {
    parts.push(' ', h('button', { class: 'link-btn', type: 'button', onclick: openDms }, 'Open my DMs'),
      ' or change it in ', h('a', { href: '/#/settings' }, 'Settings'), '.');
  } else if (e.code === 'dms_closed') {
    parts.push(' Sign in as that account to open them.');
  }
  mount(box, ...parts);
  for (const el of form.querySelectorAll(`[name="${field}"]`)) el.setAttribute('aria-invalid', 'true');
  box.dataset.code = e.code;
}

function setSnippet(text) {
  snippet = text;
  snippetEl.textContent = text || 'Fix what is marked above to get your snippet.';
  copyBtn.disabled = !text;
}

async function check() {
  clearTimeout(timer);
  const v = values();
  const mySeq = ++seq;
  if (!v.handle) {
    clearErrors();
    mount(preview, h('p', { class: 'field-hint' }, 'Type your handle to see your button.'));
    setSnippet('');
    return;
  }
  const q = new URLSearchParams();
  for (const [k, val] of Object.entries(v)) if (val) q.set(k, val);
  let res;
  try {
    res = await api.buttons(q);
  } catch (e) {
    if (mySeq !== seq) return;
    clearErrors();
    showError(e, v.handle);
    mount(preview, h('p', { class: 'field-hint' }, 'The preview appears when the form is right.'));
    setSnippet('');
    return;
  }
  if (mySeq !== seq) return;
  clearErrors();
  setSnippet(res.snippet);
  // The real markup of the snippet's first line, built as elements (never
  // parsed from the string), then rendered by the real /button.js.
  const link = h('a', {
    class: 'dmhub-message-button', href: res.compose_url, 'data-size': v.size || 'large',
    'data-theme': preview.classList.contains('is-dark') ? 'dark' : 'light',
    target: '_blank', rel: 'noopener',
  }, v.label.trim() || `Message @${res.user.handle}`);
  mount(preview, link);
  if (window.dmhub) window.dmhub.render(preview);
}

async function openDms() {
  try {
    await api.updateMe({ open_dms: true });
    status.textContent = 'Your DMs are open: anyone can write to you now.';
  } catch (e) {
    status.textContent = e.detail;
  }
  check();
}

async function copy() {
  try {
    await navigator.clipboard.writeText(snippet);
  } catch {
    // No clipboard permission: select the text so Ctrl+C does it.
    const range = document.createRange();
    range.selectNodeContents(snippetEl);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    status.textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
    return;
  }
  status.textContent = 'Copied.';
}

form.addEventListener('input', () => {
  clearTimeout(timer);
  status.textContent = '';
  timer = setTimeout(check, CHECK_DELAY_MS);
});
form.addEventListener('change', check);
form.addEventListener('submit', (ev) => { ev.preventDefault(); check(); });
copyBtn.addEventListener('click', copy);
for (const btn of document.querySelectorAll('.gen-themes button')) {
  btn.addEventListener('click', () => {
    const dark = btn.dataset.theme === 'dark';
    preview.classList.toggle('is-dark', dark);
    preview.classList.toggle('is-light', !dark);
    for (const b of document.querySelectorAll('.gen-themes button')) b.setAttribute('aria-pressed', String(b === btn));
    // The button follows the page's colour scheme on a real site; here the
    // preview background decides, so it shows what each kind of site gets.
    for (const a of preview.querySelectorAll('dmhub-button')) a.setAttribute('data-theme', dark ? 'dark' : 'light');
  });
}

async function start() {
  const q = new URLSearchParams(location.search);
  try {
    // {"user": null} when signed out: no 401 for a visitor who is not.
    me = (await api.currentSession()).user || null;
  } catch {
    me = null;
  }
  const handleInput = document.getElementById('gen-handle');
  handleInput.value = q.get('handle') || (me && me.kind === 'business' ? me.handle : '');
  setSnippet('');
  check();
  handleInput.focus();
}

start();
