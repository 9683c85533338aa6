// New message: pick a person, learn whether you can write to them (and if not,
// why and what would help) before writing, then write.

import * as store from '../store.js';
import { h, mount, avatar, displayName, hasOwnName, toast } from '../dom.js';
import { HANDLE_RE, cleanHandle, sameHandle, key } from '../format.js';
import { hrefFor, go } from '../router.js';
import { createComposer } from './composer.js';
import { openProfile } from './profile.js';
import { relationText, verdict } from './people.js';
import { quickReplyChips } from './quickreplies.js';

const LOOKUP_DELAY_MS = 250;

export function createCompose(root, { peer = '', text = '', ref = '' } = {}) {
  // Where the compose link was (a business's pricing page...): it goes with
  // the first message only, which is the one this screen sends.
  const firstExtra = ref ? { ref } : null;
  let seq = 0; // answers to old lookups are dropped, only the latest counts
  let timer = null;
  let current = null; // {user, relationship} of the handle in the box
  const unsub = [];

  const toInput = h('input', {
    id: 'compose-to', class: 'input to-input', type: 'text', value: cleanHandle(peer),
    autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', maxlength: '16',
    'aria-describedby': 'compose-check', placeholder: 'handle',
  });
  const check = h('div', { id: 'compose-check', class: 'check', 'aria-live': 'polite' });
  const composer = createComposer({
    label: 'Message',
    text,
    placeholder: 'Write your first message',
    onSend: (body) => {
      if (!current || !current.relationship.can_message) return;
      const h2 = current.user.handle;
      store.send(h2, body, firstExtra);
      // The deep link URL must not prefill again on Back/reload: replace it.
      go(hrefFor.thread(h2), { replace: true });
    },
    onTyping: () => current && current.relationship.can_message && store.typing(current.user.handle),
  });
  composer.setBlocked('');

  const form = h('form', { class: 'to-form', novalidate: true, onsubmit: (ev) => { ev.preventDefault(); lookupNow(); } },
    h('label', { for: 'compose-to', class: 'to-label' }, 'To'),
    h('div', { class: 'to-field' }, h('span', { class: 'to-at', 'aria-hidden': 'true' }, '@'), toInput));

  mount(root,
    h('section', { class: 'thread compose', 'aria-labelledby': 'compose-title' },
      h('header', { class: 'thread-head' },
        h('a', { class: 'icon-btn back-btn', href: hrefFor.inbox(), 'aria-label': 'Back to conversations' },
          h('span', { class: 'icon icon-back', 'aria-hidden': 'true' })),
        h('h2', { id: 'compose-title', class: 'thread-title compose-title', tabindex: '-1' }, 'New message')),
      h('div', { class: 'compose-body' }, form, check),
      h('div', { class: 'thread-foot' }, composer.el)));

  toInput.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(lookupNow, LOOKUP_DELAY_MS);
    setCurrent(null);
    const hnd = cleanHandle(toInput.value);
    if (hnd && HANDLE_RE.test(hnd)) mount(check, h('p', { class: 'check-hint' }, `Looking up @${hnd}…`));
  });
  toInput.addEventListener('keydown', (ev) => {
    // Enter in the To box means "done choosing": move on to writing.
    if (ev.key === 'Enter') {
      ev.preventDefault();
      if (current && current.relationship.can_message) composer.focus();
      else lookupNow();
    }
  });

  function setCurrent(res) {
    current = res;
    composer.setBlocked(res && res.relationship.can_message ? null : '');
  }

  async function lookupNow() {
    clearTimeout(timer);
    const hnd = cleanHandle(toInput.value);
    const mySeq = ++seq;
    if (!hnd) {
      setCurrent(null);
      mount(check, h('p', { class: 'check-hint' }, 'Type the handle of the person you want to write to.'));
      return;
    }
    if (!HANDLE_RE.test(hnd)) {
      setCurrent(null);
      mount(check, h('p', { class: 'check-bad' }, 'Handles are 1 to 15 letters, digits or _.'));
      return;
    }
    if (sameHandle(hnd, store.state.me.handle)) {
      setCurrent(null);
      mount(check, h('p', { class: 'check-bad' }, 'That’s you. Pick someone else to write to.'));
      return;
    }
    try {
      const res = await store.getUser(hnd);
      if (mySeq !== seq) return;
      setCurrent(res);
      drawCard(res);
    } catch (e) {
      if (mySeq !== seq) return;
      setCurrent(null);
      if (e.status === 404) mount(check, h('p', { class: 'check-bad' }, `There’s no one with the handle @${hnd}.`));
      else mount(check, h('p', { class: 'check-bad', role: 'alert' }, e.detail, ' ', h('button', { class: 'link-btn', type: 'button', onclick: lookupNow }, 'Try again')));
    }
  }

  function drawCard({ user, relationship: rel }) {
    const v = verdict(rel, user);
    const existing = store.conv(user.handle);
    // The welcome's quick replies belong to a conversation not started yet.
    const fresh = v.ok && !(existing && existing.last_message);
    const actions = [];
    if (v.action === 'follow') {
      actions.push(h('button', { class: 'btn btn-primary btn-sm', type: 'button', onclick: () => act('follow') }, `Follow @${user.handle}`));
    } else if (v.action === 'unblock') {
      actions.push(h('button', { class: 'btn btn-primary btn-sm', type: 'button', onclick: () => act('unblock') }, `Unblock @${user.handle}`));
    }
    if (!v.ok) actions.push(h('button', { class: 'btn btn-sm', type: 'button', onclick: lookupNow }, 'Check again'));
    if (existing && existing.last_message) actions.push(h('a', { class: 'btn btn-sm', href: hrefFor.thread(user.handle) }, 'Open conversation'));
    actions.push(h('button', { class: 'btn btn-ghost btn-sm', type: 'button', 'aria-haspopup': 'dialog', onclick: () => openProfile(user.handle) }, 'View profile'));

    mount(check,
      h('div', { class: 'person-card', dataset: { handle: user.handle } },
        h('div', { class: 'person-head' },
          avatar(user, 'lg'),
          h('div', { class: 'person-names' },
            h('p', { class: 'person-name' }, displayName(user),
              user.kind === 'business' && h('span', { class: 'tag' }, 'Business')),
            hasOwnName(user) && h('p', { class: 'person-handle' }, `@${user.handle}`),
            h('p', { class: 'person-rel' }, relationText(rel, user)))),
        user.greeting && h('div', { class: 'greeting greeting-inline' },
          h('div', { class: 'greeting-body' },
            h('p', { class: 'greeting-label' }, `${displayName(user)} says`),
            h('p', { class: 'greeting-text' }, user.greeting),
            fresh && quickReplyChips(user.quick_replies, pick))),
        !user.greeting && fresh && quickReplyChips(user.quick_replies, pick),
        h('div', { class: ['verdict', v.ok ? 'verdict-ok' : 'verdict-no'], dataset: { canMessage: String(rel.can_message) } },
          h('span', { class: ['icon', v.ok ? 'icon-ok' : 'icon-no'], 'aria-hidden': 'true' }),
          h('div', null,
            h('p', { class: 'verdict-title' }, v.title),
            h('p', { class: 'verdict-reason' }, v.reason))),
        h('div', { class: 'person-actions' }, actions)));
  }

  function pick(reply) {
    const h2 = current.user.handle;
    store.send(h2, reply.label, { ...(firstExtra || {}), quick_reply: reply.metadata });
    go(hrefFor.thread(h2), { replace: true });
  }

  async function act(action) {
    try {
      const res = await store.relationAction(current.user.handle, action);
      setCurrent(res);
      drawCard(res);
    } catch (e) {
      toast(e.detail);
    }
  }

  // A change made elsewhere (profile card, another tab) refreshes the card.
  unsub.push(store.on('user', (k) => {
    if (!current || key(current.user.handle) !== k) return;
    const res = store.cachedUser(k);
    if (res) {
      setCurrent(res);
      drawCard(res);
    }
  }));

  // Re-check when the person comes back to the tab: the rule depends on
  // what the other side did meanwhile (followed back, opened DMs).
  const onFocus = () => { if (cleanHandle(toInput.value)) lookupNow(); };
  window.addEventListener('focus', onFocus);

  if (toInput.value) lookupNow();
  else mount(check, h('p', { class: 'check-hint' }, 'Type the handle of the person you want to write to.'));

  return {
    focusDefault() {
      // Deep link with a recipient: the person came to write, not to choose.
      if (toInput.value) composer.focus();
      else toInput.focus();
    },
    destroy() {
      clearTimeout(timer);
      for (const u of unsub) u();
      window.removeEventListener('focus', onFocus);
    },
  };
}
