// The message box shared by a conversation and the New message screen.
// Enter sends, Shift+Enter breaks the line, the counter counts what the
// server will count (code points of the trimmed text).

import { h, uid, announce } from '../dom.js';
import { MAX_LEN, isBlank, textLength, trimText, num } from '../format.js';

const WARN_AT = MAX_LEN - 500;

/**
 * @param {object} opts
 * @param {string} opts.label        accessible label, e.g. "Message @alice"
 * @param {string} [opts.text]       prefilled text (deep link)
 * @param {(text: string) => void} opts.onSend
 * @param {() => void} [opts.onTyping]
 */
export function createComposer({ label, text = '', placeholder = 'Write a message', onSend, onTyping }) {
  const id = uid('composer');
  const counterId = uid('counter');
  const noteId = uid('note');
  const textarea = h('textarea', {
    id,
    class: 'composer-input',
    rows: '1',
    placeholder,
    'aria-describedby': `${counterId} ${noteId}`,
    autocomplete: 'off',
    enterkeyhint: 'send',
  });
  textarea.value = text;
  const counter = h('span', { class: 'counter', id: counterId });
  const note = h('span', { class: 'composer-note', id: noteId });
  const sendBtn = h('button', { class: 'send-btn', type: 'submit', 'aria-label': 'Send' },
    h('span', { class: 'icon icon-send', 'aria-hidden': 'true' }));
  const form = h('form', { class: 'composer', novalidate: true },
    h('label', { for: id, class: 'sr-only' }, label),
    h('div', { class: 'composer-box' }, textarea, sendBtn),
    h('div', { class: 'composer-meta' }, note, counter));

  let blockedReason = null;
  let wasOver = false;

  // Browsers without CSS field-sizing get the same auto-grow from CSSOM
  // (allowed by our CSP, unlike a style attribute).
  const autoSize = typeof CSS !== 'undefined' && CSS.supports && CSS.supports('field-sizing', 'content')
    ? () => {}
    : () => {
      textarea.style.height = 'auto';
      textarea.style.height = `${Math.min(textarea.scrollHeight, 200)}px`;
    };

  function update() {
    const n = textLength(textarea.value);
    const over = n > MAX_LEN;
    counter.textContent = `${num(n)} / ${num(MAX_LEN)}`;
    counter.classList.toggle('is-warn', n >= WARN_AT && !over);
    counter.classList.toggle('is-over', over);
    form.classList.toggle('has-text', n > 0);
    sendBtn.disabled = blockedReason !== null || n === 0 || over || isBlank(textarea.value);
    if (over !== wasOver) {
      // Only the crossing is announced; a live counter would talk on every key.
      announce(over ? `Too long: ${num(n - MAX_LEN)} characters over the ${num(MAX_LEN)} limit.` : 'Length is fine again.');
      wasOver = over;
    }
    if (over) textarea.setAttribute('aria-invalid', 'true');
    else textarea.removeAttribute('aria-invalid');
    autoSize();
  }

  function submit() {
    if (sendBtn.disabled) return;
    const value = trimText(textarea.value);
    if (!value || isBlank(value)) return;
    onSend(value);
    textarea.value = '';
    update();
  }

  textarea.addEventListener('input', () => {
    update();
    if (onTyping && textarea.value.trim()) onTyping();
  });
  textarea.addEventListener('keydown', (ev) => {
    // isComposing: Enter that confirms an IME candidate must not send.
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.altKey && !ev.ctrlKey && !ev.metaKey && !ev.isComposing) {
      ev.preventDefault();
      submit();
    }
  });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    submit();
    textarea.focus();
  });

  update();

  return {
    el: form,
    textarea,
    focus() {
      textarea.focus();
      // Put the caret after prefilled text, where the person continues typing.
      const end = textarea.value.length;
      textarea.setSelectionRange(end, end);
    },
    /**
     * Disable sending (not typing: a prefilled draft stays editable) with a
     * reason shown under the box; null enables, '' disables silently.
     */
    setBlocked(reason) {
      blockedReason = reason;
      note.textContent = reason || '';
      update();
    },
    get value() {
      return textarea.value;
    },
  };
}
