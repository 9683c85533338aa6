// One conversation: history (paged upwards), live messages, delivery status,
// typing, the request bar, and the composer.
//
// The message list is reconciled by key instead of rebuilt, so that live
// updates don't reset scroll position, text selection or focus. A message
// keeps its element from "sending" to "seen": the key of our own messages is
// their client_id, which the pending copy and the stored copy share.

import * as store from '../store.js';
import { h, mount, avatar, displayName, hasOwnName, srOnly, toast } from '../dom.js';
import { key, sameHandle, clock, fullTime, dayKey, dayLabel, gapMs } from '../format.js';
import { hrefFor, go } from '../router.js';
import { createComposer } from './composer.js';
import { openProfile } from './profile.js';
import { verdict } from './people.js';
import { quickReplyChips } from './quickreplies.js';
import { openReportDialog } from './report.js';

const GROUP_GAP_MS = 5 * 60 * 1000;
const NEAR_BOTTOM_PX = 120;
const LOAD_OLDER_PX = 300;

const STATUS_TEXT = { sending: 'Sending…', waiting: 'Waiting to send', sent: 'Sent', seen: 'Seen', failed: 'Not sent' };
const LIMIT_TEXT = {
  messages: 'You’re sending faster than this server allows.',
  new_conversations: 'You’ve started as many new conversations today as this server allows.',
  requests_received: 'They’re receiving too many new requests right now.',
};

export function createConversation(root, handle) {
  const k = key(handle);
  const unsub = [];
  const els = new Map(); // key -> <li>
  let firstPaint = true;
  let anchor = null; // scroll anchor while older history is prepended
  let peerUser = (store.conv(handle) || {}).peer || (store.cachedUser(handle) || {}).user || { handle, name: null };
  let rel = (store.cachedUser(handle) || {}).relationship || null;

  // Header ------------------------------------------------------------------
  const titleId = 'thread-title';
  const title = h('h2', { id: titleId, class: 'thread-title', tabindex: '-1' });
  const subtitle = h('span', { class: 'thread-sub' });
  const headAvatar = h('span', { class: 'thread-avatar' });
  const peerBtn = h('button', {
    class: 'thread-peer', type: 'button', 'aria-haspopup': 'dialog',
    onclick: () => openProfile(handle),
  }, headAvatar, h('span', { class: 'thread-names' }, title, subtitle));
  const back = h('a', { class: 'icon-btn back-btn', href: hrefFor.inbox(), 'aria-label': 'Back to conversations' },
    h('span', { class: 'icon icon-back', 'aria-hidden': 'true' }));
  const infoBtn = h('button', { class: 'icon-btn', type: 'button', 'aria-label': 'Profile and actions', 'aria-haspopup': 'dialog', onclick: () => openProfile(handle) },
    h('span', { class: 'icon icon-info', 'aria-hidden': 'true' }));
  const reportBtn = h('button', { class: 'btn btn-danger-ghost btn-sm', type: 'button', 'aria-haspopup': 'dialog', onclick: () => report() }, 'Report');
  const header = h('header', { class: 'thread-head' }, back, peerBtn, reportBtn, infoBtn);

  // Messages ----------------------------------------------------------------
  const olderBox = h('div', { class: 'older' });
  const list = h('ol', { class: 'msgs', 'aria-label': `Messages with @${handle}` });
  const greetingBox = h('div', { class: 'greeting' });
  const scroller = h('div', { class: 'thread-scroll', tabindex: '0', 'aria-labelledby': titleId },
    olderBox, greetingBox, list);
  const jumpBtn = h('button', { class: 'jump-btn', type: 'button', hidden: true, onclick: () => scrollToBottom(true) },
    'New messages ↓');
  const typingLine = h('div', { class: 'typing-line' });

  // Footer: request bar, or composer, or why you can't write ------------------
  const requestBar = h('div', { class: 'request-bar', hidden: true });
  const cantBox = h('div', { class: 'cant-box', hidden: true });
  const composer = createComposer({
    label: `Message @${handle}`,
    onSend: (text) => sendText(text),
    onTyping: () => store.typing(handle),
  });
  const footer = h('div', { class: 'thread-foot' }, typingLine, requestBar, cantBox, composer.el);

  const section = h('section', { class: 'thread', 'aria-labelledby': titleId },
    header, h('div', { class: 'thread-body' }, scroller, jumpBtn), footer);
  mount(root, section);

  async function sendText(text, extra = null) {
    const c = store.conv(handle);
    if (c && c.folder === 'requests') {
      // Replying is accepting: do it first so the reply isn't stuck in limbo.
      try {
        await store.acceptRequest(handle);
      } catch (e) {
        toast(e.detail);
      }
    }
    store.send(handle, text, extra);
    scrollToBottom(true);
  }

  // Drawing -----------------------------------------------------------------

  function drawHeader() {
    const c = store.conv(handle);
    if (c && c.peer) peerUser = c.peer;
    title.textContent = displayName(peerUser);
    const parts = [];
    if (hasOwnName(peerUser)) parts.push(`@${peerUser.handle}`);
    if (peerUser.kind === 'business') parts.push('Business');
    subtitle.textContent = parts.join(' · ');
    mount(headAvatar, avatar(peerUser));
    peerBtn.setAttribute('aria-label', `${displayName(peerUser)}, @${peerUser.handle}. Open profile`);
    back.setAttribute('href', c && c.folder === 'requests' ? hrefFor.requests() : hrefFor.inbox());
  }

  function drawFooter() {
    const c = store.conv(handle);
    const t = store.threadFor(handle);
    const isRequest = c && c.folder === 'requests';
    requestBar.hidden = !isRequest;
    if (isRequest) {
      mount(requestBar,
        h('p', { class: 'request-text' },
          h('strong', null, `@${peerUser.handle} wants to message you.`), ' ',
          'They won’t know you’ve seen this until you accept.'),
        h('div', { class: 'request-actions' },
          h('button', { class: 'btn btn-primary', type: 'button', onclick: onAccept }, 'Accept'),
          h('button', { class: 'btn', type: 'button', onclick: onDelete }, 'Delete'),
          h('button', { class: 'btn btn-danger', type: 'button', onclick: onBlock }, 'Block'),
          h('button', { class: 'btn btn-danger-ghost', type: 'button', 'aria-haspopup': 'dialog', onclick: () => report() }, 'Report')));
    }
    // Show why the composer is off only when we know it won't work; a stale
    // "no" would be worse than letting the server answer.
    const v = rel && !rel.can_message ? verdict(rel, peerUser) : null;
    cantBox.hidden = !v || isRequest;
    if (v && !isRequest) {
      mount(cantBox,
        h('p', { class: 'cant-title' }, v.title),
        h('p', { class: 'cant-reason' }, v.reason),
        v.action && h('button', { class: 'btn btn-primary btn-sm', type: 'button', onclick: () => fixAction(v.action) },
          v.action === 'follow' ? `Follow @${peerUser.handle}` : `Unblock @${peerUser.handle}`));
    }
    composer.el.hidden = Boolean(isRequest) || Boolean(v);
    // Business welcome (greeting, quick replies): shown to someone about to
    // start a conversation, and gone once it has started.
    const replies = peerUser.kind === 'business' ? peerUser.quick_replies || [] : [];
    const greet = (peerUser.greeting || replies.length > 0) && t.loaded && t.messages.length === 0 &&
      store.pendingFor(handle).length === 0;
    greetingBox.hidden = !greet;
    if (greet) {
      const canWrite = !(rel && !rel.can_message);
      mount(greetingBox, avatar(peerUser, 'sm'),
        h('div', { class: 'greeting-body' },
          h('p', { class: 'greeting-label' }, `${displayName(peerUser)} says`),
          peerUser.greeting && h('p', { class: 'greeting-text' }, peerUser.greeting),
          canWrite && quickReplyChips(replies, pickReply)));
    }
  }

  function pickReply(reply) {
    sendText(reply.label, { quick_reply: reply.metadata });
  }

  async function fixAction(action) {
    try {
      const res = await store.relationAction(handle, action);
      rel = res.relationship;
      drawFooter();
    } catch (e) {
      toast(e.detail);
    }
  }

  async function onAccept() {
    try {
      await store.acceptRequest(handle);
      composer.focus();
    } catch (e) {
      toast(e.detail);
    }
  }
  async function onDelete() {
    try {
      await store.deleteConv(handle);
      go(hrefFor.requests(), { replace: true });
    } catch (e) {
      toast(e.detail);
    }
  }
  /** Report (the newest message they sent, if any); a request then goes away. */
  function report() {
    const t = store.threadFor(handle);
    const theirs = t.messages.filter((m) => !sameHandle(m.from, store.state.me.handle));
    const last = theirs[theirs.length - 1];
    const wasRequest = (store.conv(handle) || {}).folder === 'requests';
    openReportDialog(handle, {
      messageId: last ? last.id : null,
      onDone: () => {
        if (wasRequest) go(hrefFor.requests(), { replace: true });
        else { rel = (store.cachedUser(handle) || {}).relationship || rel; drawFooter(); }
      },
    });
  }

  async function onBlock() {
    try {
      await store.relationAction(handle, 'block');
      await store.deleteConv(handle).catch(() => {});
      toast(`You blocked @${handle}.`, { kind: 'info' });
      go(hrefFor.requests(), { replace: true });
    } catch (e) {
      toast(e.detail);
    }
  }

  function drawOlder() {
    const t = store.threadFor(handle);
    if (t.loading && !t.loaded) {
      mount(olderBox, h('p', { class: 'older-note' }, 'Loading messages…'));
    } else if (t.error && !t.loaded) {
      mount(olderBox, h('p', { class: 'form-error', role: 'alert' }, t.error, ' ',
        h('button', { class: 'link-btn', type: 'button', onclick: () => store.openThread(handle) }, 'Try again')));
    } else if (t.next) {
      // A real button as well as scroll-to-load: keyboard and screen-reader
      // users can't "scroll up" into a trigger zone.
      mount(olderBox, h('button', { class: 'btn btn-ghost btn-sm', type: 'button', disabled: t.loadingOlder, onclick: loadOlder },
        t.loadingOlder ? 'Loading older messages…' : 'Load older messages'));
    } else if (t.loaded && (t.messages.length || store.pendingFor(handle).length)) {
      mount(olderBox, h('p', { class: 'older-note' }, `This is the beginning of your conversation with @${peerUser.handle}.`));
    } else if (t.loaded) {
      mount(olderBox, h('p', { class: 'older-note' }, `No messages yet. Say hi to @${peerUser.handle}.`));
    } else {
      mount(olderBox);
    }
  }

  /** The list to show: stored messages, then our pending ones. */
  function items() {
    const t = store.threadFor(handle);
    const me = store.state.me.handle;
    let seenIdx = -1;
    if (t.peerReadUpTo) seenIdx = t.messages.findIndex((m) => m.id === t.peerReadUpTo);
    const out = t.messages.map((m, i) => {
      const mine = sameHandle(m.from, me);
      return {
        key: mine && m.client_id ? `c:${m.client_id}` : `m:${m.id}`,
        id: m.id,
        mine,
        text: m.text,
        at: m.sent_at,
        status: mine ? (i <= seenIdx ? 'seen' : 'sent') : null,
        ref: m.ref || null,
        quickReply: m.quick_reply || null,
        quickReplies: m.quick_replies || null,
      };
    });
    for (const p of store.pendingFor(handle)) {
      const extra = p.extra || {};
      out.push({ key: `c:${p.client_id}`, id: null, clientId: p.client_id, mine: true, text: p.text, at: p.at, status: p.status, error: p.error, ref: extra.ref || null, quickReply: extra.quick_reply || null, retryAt: p.retryAt || null, limit: p.limit || null });
    }
    return out;
  }

  function drawMessages() {
    const wasNearBottom = isNearBottom();
    const prevHeight = scroller.scrollHeight;
    const prevTop = scroller.scrollTop;
    const all = items();
    const wanted = [];
    let lastMineIdx = -1;
    all.forEach((m, i) => { if (m.mine) lastMineIdx = i; });
    for (let i = 0; i < all.length; i += 1) {
      const m = all[i];
      const prev = all[i - 1];
      const next = all[i + 1];
      if (!prev || dayKey(prev.at) !== dayKey(m.at)) {
        const dk = `d:${dayKey(m.at)}`;
        wanted.push(els.get(dk) || makeDay(dk, m.at));
      }
      const startsGroup = !prev || prev.mine !== m.mine || dayKey(prev.at) !== dayKey(m.at) || gapMs(prev.at, m.at) > GROUP_GAP_MS;
      const endsGroup = !next || next.mine !== m.mine || dayKey(next.at) !== dayKey(m.at) || gapMs(m.at, next.at) > GROUP_GAP_MS;
      let el = els.get(m.key);
      if (!el) el = makeMessage(m);
      updateMessage(el, m, { startsGroup, endsGroup, isLastMine: i === lastMineIdx });
      // Quick replies the business attached stay under its message until
      // the person answers (anything they send after it).
      drawChips(el, !m.mine && i === all.length - 1 ? m.quickReplies : null);
      wanted.push(el);
    }
    // Reconcile: move/insert in order, then drop what is gone.
    const keep = new Set(wanted);
    let cursor = list.firstChild;
    for (const el of wanted) {
      if (el === cursor) {
        cursor = cursor.nextSibling;
      } else {
        list.insertBefore(el, cursor);
      }
    }
    for (const [k2, el] of els) {
      if (!keep.has(el)) {
        el.remove();
        els.delete(k2);
      }
    }
    for (const el of wanted) els.set(el.dataset.key, el);

    // Scroll policy: first paint and own sends go to the bottom; older pages
    // keep what you were reading in place; new incoming messages only pull
    // you down if you were already at the bottom.
    if (anchor) {
      // Cleared by loadOlder() once the page is in; until then every redraw
      // keeps the same content under the reader's eyes.
      scroller.scrollTop = scroller.scrollHeight - anchor.height + anchor.top;
    } else if (firstPaint || wasNearBottom) {
      scrollToBottom(false);
    } else if (scroller.scrollHeight > prevHeight) {
      scroller.scrollTop = prevTop;
      jumpBtn.hidden = false;
    }
    if (store.threadFor(handle).loaded) firstPaint = false;
  }

  function makeDay(dk, at) {
    const el = h('li', { class: 'day-sep', dataset: { key: dk } }, h('span', null, dayLabel(at)));
    return el;
  }

  function drawChips(el, replies) {
    const sig = replies ? JSON.stringify(replies) : '';
    if (el._chipsShown === sig) return;
    el._chipsShown = sig;
    mount(el._chips, sig ? quickReplyChips(replies, pickReply) : null);
  }

  function makeMessage(m) {
    const statusEl = h('span', { class: 'msg-status' });
    const el = h('li', { class: 'msg', dataset: { key: m.key } },
      srOnly(m.mine ? 'You: ' : `${displayName(peerUser)}: `),
      h('div', { class: 'bubble' },
        h('p', { class: 'msg-text' }, m.text),
        h('span', { class: 'msg-meta' },
          h('time', { datetime: m.at, title: fullTime(m.at) }, clock(m.at)),
          statusEl)),
      // The business sees where a conversation came from (the compose link's ref).
      m.ref && h('span', { class: 'came-from' }, `came from: ${m.ref}`),
      !m.mine && m.quickReply && h('span', { class: 'picked' }, `quick reply: ${m.quickReply}`),
      h('div', { class: 'msg-chips' }),
      h('div', { class: 'msg-foot' }));
    el._status = statusEl;
    el._foot = el.lastChild;
    el._chips = el._foot.previousSibling;
    return el;
  }

  function updateMessage(el, m, { startsGroup, endsGroup, isLastMine }) {
    el.className = ['msg', m.mine ? 'mine' : 'theirs', startsGroup && 'group-start', endsGroup && 'group-end',
      m.status && `is-${m.status}`].filter(Boolean).join(' ');
    if (m.id) el.dataset.id = m.id;
    if (m.status) el.dataset.status = m.status;
    else delete el.dataset.status;
    const left = m.status === 'waiting' ? Math.max(0, Math.ceil((m.retryAt - Date.now()) / 1000)) : 0;
    const shown = `${m.status}|${isLastMine}|${m.error || ''}|${left}`;
    if (el._shown === shown) return;
    el._shown = shown;
    if (m.mine) {
      el._status.textContent = '';
      el._status.append(
        h('span', { class: `tick tick-${m.status}`, 'aria-hidden': 'true' }),
        srOnly(STATUS_TEXT[m.status] || ''));
      el._status.title = STATUS_TEXT[m.status] || '';
    }
    if (m.status === 'failed') {
      mount(el._foot,
        h('span', { class: 'fail-text' }, m.error || 'Not sent.'), ' ',
        h('button', { class: 'link-btn', type: 'button', onclick: () => store.retry(m.clientId) }, 'Retry'), ' · ',
        h('button', { class: 'link-btn', type: 'button', onclick: () => store.discard(m.clientId) }, 'Delete'));
    } else if (m.status === 'waiting') {
      // Rate limited: say when, and send by itself then (same client_id).
      const at = new Date(m.retryAt);
      mount(el._foot,
        h('span', { class: 'wait-text' },
          `${LIMIT_TEXT[m.limit] || 'Sending limit reached.'} Sends by itself at `,
          h('time', { datetime: at.toISOString() }, at.toLocaleTimeString()),
          ` (in ${inWords(left)}).`), ' ',
        h('button', { class: 'link-btn', type: 'button', onclick: () => store.discard(m.clientId) }, 'Delete'));
    } else if (m.mine && isLastMine) {
      // The newest outgoing message says its state in words too.
      mount(el._foot, h('span', { class: `status-word status-${m.status}` }, STATUS_TEXT[m.status] || ''));
    } else {
      mount(el._foot);
    }
  }

  function drawTyping() {
    const on = store.isTyping(handle);
    typingLine.classList.toggle('is-on', on);
    if (on) {
      mount(typingLine,
        h('span', { class: 'typing-dots', 'aria-hidden': 'true' }, h('span'), h('span'), h('span')),
        `@${peerUser.handle} is typing…`);
    } else {
      mount(typingLine);
    }
  }

  function draw() {
    drawHeader();
    drawOlder();
    drawMessages();
    drawFooter();
  }

  // Scrolling -----------------------------------------------------------------

  function isNearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
  }

  function scrollToBottom(smooth) {
    jumpBtn.hidden = true;
    scroller.scrollTo({ top: scroller.scrollHeight, behavior: smooth && !prefersReducedMotion() ? 'smooth' : 'auto' });
  }

  async function loadOlder() {
    const t = store.threadFor(handle);
    if (!t.next || t.loadingOlder) return;
    anchor = { height: scroller.scrollHeight, top: scroller.scrollTop };
    await store.loadOlder(handle);
    anchor = null;
    fillViewport();
  }

  /** Keep loading older pages until the view is full, so it can scroll. */
  function fillViewport() {
    const t = store.threadFor(handle);
    if (t.next && !t.loadingOlder && scroller.scrollHeight <= scroller.clientHeight + 10) loadOlder();
  }

  scroller.addEventListener('scroll', () => {
    if (scroller.scrollTop < LOAD_OLDER_PX) loadOlder();
    if (isNearBottom()) jumpBtn.hidden = true;
  }, { passive: true });

  // Wiring --------------------------------------------------------------------

  unsub.push(store.on('thread', (k2) => {
    if (k2 !== k) return;
    drawOlder();
    drawMessages();
    drawFooter();
  }));
  unsub.push(store.on('convs', () => { drawHeader(); drawFooter(); }));
  unsub.push(store.on('typing', (k2) => { if (k2 === k) drawTyping(); }));
  unsub.push(store.on('user', (k2) => {
    if (k2 !== k) return;
    const u = store.cachedUser(handle);
    if (u) {
      peerUser = u.user;
      rel = u.relationship;
    }
    drawHeader();
    drawFooter();
  }));
  unsub.push(store.on('incoming', ({ peer }) => {
    // They wrote to us: the rule may now allow a reply; ask again.
    if (key(peer) === k && rel && !rel.can_message) store.getUser(handle).catch(() => {});
  }));

  draw();
  drawTyping();
  store.openThread(handle).then(fillViewport);
  // Fresh relationship for the "can't write" notice and the profile card.
  store.getUser(handle).catch((e) => {
    if (e.status === 404) {
      rel = null;
      cantBox.hidden = false;
      composer.el.hidden = true;
      mount(cantBox, h('p', { class: 'cant-title' }, `There’s no one with the handle @${handle}.`));
    }
  });

  return {
    focusDefault() {
      // Desktop: straight to writing. Phones: don't pop the keyboard over
      // the history; land on the heading instead.
      if (window.matchMedia('(min-width: 720px)').matches && !composer.el.hidden) composer.focus();
      else title.focus();
    },
    destroy() {
      for (const u of unsub) u();
      store.closeThread();
    },
  };
}

/** A wait as people say it: seconds, then minutes, then hours (the daily cap). */
function inWords(seconds) {
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

function prefersReducedMotion() {
  return window.matchMedia('(prefers-reduced-motion: reduce)').matches;
}
