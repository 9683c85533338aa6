// The team inbox: an agent acting for a business (`?as=BUSINESS` on every call
// and on its own socket). Status tabs, "assigned to me" / "unassigned",
// assign and resolve, internal notes beside the reply composer, and who of the
// team is typing. Everything arrives live over the business's events.

import * as api from '../api.js';
import { LiveSocket } from '../socket.js';
import { h, mount, avatar, displayName, toast } from '../dom.js';
import { clock, oneLine, newClientId, sameHandle, trimText, MAX_LEN } from '../format.js';
import { hrefFor, go } from '../router.js';

const STATUSES = [
  { id: 'open', label: 'Open' },
  { id: 'pending', label: 'Pending' },
  { id: 'resolved', label: 'Resolved' },
];
const SCOPES = [
  { id: '', label: 'All' },
  { id: 'me', label: 'Assigned to me' },
  { id: 'none', label: 'Unassigned' },
];
// Team typing shows for this long after the last typing frame.
const TYPING_SHOWN_MS = 4000;
const TYPING_EVERY_MS = 2500;
const REFRESH_DEBOUNCE_MS = 120;

/**
 * Mount the team inbox of `business` into `root`.
 * @param {HTMLElement} root
 * @param {{business: string, peer: string|null, me: object, teams: string[]}} opts
 */
export function createTeamView(root, { business, peer, me, teams }) {
  let status = 'open';
  let scope = '';
  let current = peer;
  let members = [];
  let conversations = [];
  // Status and assignee of the open conversation as last heard: the tab's list
  // leaves it out once it moves to another status, and frames can beat the list.
  let openState = null;
  let refreshes = 0;
  let timeline = []; // messages and notes of the open conversation, by time
  const seen = new Set();
  const typing = new Map(); // "agent" or the customer -> timer
  let refreshTimer = null;
  let lastTyping = 0;
  let destroyed = false;

  // Header: who we act as, and the switch between "me" and each business.
  const switcher = teamSwitcher(me, teams, business);
  const conn = h('span', { class: 'team-conn', role: 'status' }, 'Connecting…');
  const header = h('header', { class: 'team-head' },
    h('h1', { class: 'team-title' }, 'Team inbox of ', h('strong', null, `@${business}`)),
    conn, switcher);

  const tabs = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Status' });
  const scopes = h('div', { class: 'team-scopes', role: 'group', 'aria-label': 'Filter by assignee' });
  const list = h('ul', { class: 'team-list', id: 'team-list', 'aria-label': 'Conversations' });
  const side = h('aside', { class: 'team-side' }, tabs, scopes, list);

  const thread = h('section', { class: 'team-thread', 'aria-label': 'Conversation' });
  mount(root, h('div', { class: 'team-view' }, header, h('div', { class: 'team-body' }, side, thread)));

  const socket = new LiveSocket({
    actAs: business,
    onFrame,
    onState: (s) => {
      conn.textContent = s === 'online' ? 'Live' : s === 'ended' ? 'No access' : 'Reconnecting…';
      conn.dataset.state = s;
      if (s === 'online') refresh();
    },
    stillSignedIn: async () => {
      try {
        await api.team(business);
        return true;
      } catch {
        return false;
      }
    },
  });
  socket.start();
  api.team(business).then((res) => { members = res.users; drawThread(); }).catch(() => {});

  function drawTabs() {
    mount(tabs, STATUSES.map((s) => h('button', {
      class: 'tab', type: 'button', role: 'tab', 'aria-selected': String(s.id === status),
      'data-status': s.id, onclick: () => { status = s.id; drawTabs(); refresh(); },
    }, s.label)));
    mount(scopes, SCOPES.map((s) => h('button', {
      class: ['chip', s.id === scope && 'is-on'], type: 'button', 'aria-pressed': String(s.id === scope),
      'data-scope': s.id || 'all', onclick: () => { scope = s.id; drawTabs(); refresh(); },
    }, s.label)));
  }

  function refresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(async () => {
      const asked = ++refreshes;
      try {
        const res = await api.teamConversations(business, { status, assignee: scope || null });
        // An older listing that answers late must not undo a newer one.
        if (destroyed || asked !== refreshes) return;
        conversations = res.conversations;
        drawList();
        const c = current && conversations.find((x) => sameHandle(x.peer.handle, current));
        if (c && (!openState || c.status !== openState.status || c.assignee !== openState.assignee)) {
          drawControls();
        }
      } catch (e) {
        if (e.status === 403) ended();
      }
    }, REFRESH_DEBOUNCE_MS);
  }

  function drawList() {
    if (!conversations.length) {
      mount(list, h('li', { class: 'team-empty' }, `No ${status} conversations here.`));
      return;
    }
    mount(list, conversations.map((c) => {
      const last = c.last_message;
      return h('li', null, h('a', {
        class: ['team-row', current && sameHandle(c.peer.handle, current) && 'is-active'],
        href: hrefFor.team(business, c.peer.handle),
        'data-peer': c.peer.handle,
      },
      avatar(c.peer, 'sm'),
      h('span', { class: 'team-row-main' },
        h('span', { class: 'team-row-name' }, displayName(c.peer)),
        h('span', { class: 'team-row-last' }, last ? oneLine(last.text, 80) : '')),
      h('span', { class: 'team-row-meta' },
        c.assignee ? h('span', { class: 'team-assignee' }, `@${c.assignee}`) : h('span', { class: 'team-assignee is-none' }, 'Unassigned'),
        c.unread ? h('span', { class: 'badge' }, String(c.unread)) : null)));
    }));
  }

  // The open conversation ---------------------------------------------------

  const replyInput = h('textarea', { class: 'input', id: 'team-reply', rows: '2', maxlength: String(MAX_LEN), placeholder: 'Reply to the customer', 'aria-label': 'Reply to the customer' });
  const noteInput = h('textarea', { class: 'input', id: 'team-note', rows: '2', maxlength: String(MAX_LEN), placeholder: 'Internal note (only your team sees it)', 'aria-label': 'Internal note, only your team sees it' });
  const replyForm = h('form', { class: 'team-composer', 'data-kind': 'reply' },
    h('p', { class: 'team-composer-label' }, `Reply as @${business}`),
    replyInput, h('button', { class: 'btn btn-primary', type: 'submit' }, 'Send'));
  const noteForm = h('form', { class: 'team-composer is-note', 'data-kind': 'note' },
    h('p', { class: 'team-composer-label' }, 'Internal note — never sent to the customer'),
    noteInput, h('button', { class: 'btn', type: 'submit' }, 'Add note'));
  const typingLine = h('p', { class: 'team-typing', 'aria-live': 'polite' });
  const timelineBox = h('ol', { class: 'team-timeline', 'aria-label': 'Messages and notes' });
  const controls = h('div', { class: 'team-controls' });

  replyForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = trimText(replyInput.value);
    if (!text || !current) return;
    replyInput.value = '';
    try {
      const res = await api.teamSend(business, current, text, newClientId());
      add({ kind: 'message', ...res.message });
    } catch (e) {
      replyInput.value = text;
      toast(e.detail);
    }
  });
  noteForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = trimText(noteInput.value);
    if (!text || !current) return;
    noteInput.value = '';
    try {
      const res = await api.teamNote(business, current, text);
      add({ kind: 'note', ...res.note });
    } catch (e) {
      noteInput.value = text;
      toast(e.detail);
    }
  });
  for (const input of [replyInput, noteInput]) {
    input.addEventListener('input', () => {
      const now = Date.now();
      if (!current || now - lastTyping < TYPING_EVERY_MS) return;
      lastTyping = now;
      socket.send({ type: 'typing', to: current });
    });
  }

  async function open(handle) {
    current = handle;
    openState = null;
    timeline = [];
    seen.clear();
    drawList();
    drawThread();
    if (!handle) return;
    try {
      const [msgs, notes] = await Promise.all([
        api.teamMessages(business, handle),
        api.teamNotes(business, handle),
      ]);
      if (destroyed || current !== handle) return;
      for (const m of msgs.messages) add({ kind: 'message', ...m }, false);
      for (const n of notes.notes) add({ kind: 'note', ...n }, false);
      drawTimeline();
      markRead();
    } catch (e) {
      if (e.status === 403) ended();
      else toast(e.detail);
    }
  }

  function markRead() {
    const theirs = timeline.filter((x) => x.kind === 'message' && !sameHandle(x.from, business));
    if (theirs.length) api.teamRead(business, current, theirs[theirs.length - 1].id).catch(() => {});
  }

  function add(item, draw = true) {
    const id = `${item.kind}:${item.id}`;
    if (seen.has(id)) return;
    seen.add(id);
    timeline.push(item);
    timeline.sort((a, b) => (a.sent_at || a.created_at).localeCompare(b.sent_at || b.created_at));
    if (draw) drawTimeline();
  }

  function drawThread() {
    if (!current) {
      mount(thread, h('div', { class: 'empty-pane' }, h('p', { class: 'empty-title' }, 'Pick a conversation')));
      return;
    }
    mount(thread,
      h('header', { class: 'team-thread-head' }, h('h2', null, `@${current}`), controls),
      timelineBox, typingLine, h('div', { class: 'team-composers' }, replyForm, noteForm));
    drawControls();
    drawTimeline();
  }

  function state() {
    return conversations.find((c) => sameHandle(c.peer.handle, current)) || openState;
  }

  function drawControls() {
    const c = state();
    openState = c ? { status: c.status, assignee: c.assignee } : null;
    const select = h('select', { class: 'input team-assign', 'aria-label': 'Assignee' },
      h('option', { value: '' }, 'Unassigned'),
      [business, ...members.map((m) => m.handle)].map((handle) =>
        h('option', { value: handle }, sameHandle(handle, me.handle) ? `@${handle} (me)` : `@${handle}`)));
    select.value = c && c.assignee ? (c.assignee) : '';
    select.addEventListener('change', () => update({ assignee: select.value || null }));
    const resolved = c && c.status === 'resolved';
    mount(controls,
      h('span', { class: 'team-status', 'data-status': c ? c.status : 'open' }, c ? c.status : 'open'),
      select,
      h('button', { class: 'btn btn-sm', type: 'button', 'data-action': 'assign-me', onclick: () => update({ assignee: me.handle }) }, 'Assign to me'),
      h('button', { class: 'btn btn-sm', type: 'button', 'data-action': 'pending', onclick: () => update({ status: 'pending' }) }, 'Pending'),
      h('button', { class: 'btn btn-sm btn-primary', type: 'button', 'data-action': resolved ? 'reopen' : 'resolve', onclick: () => update({ status: resolved ? 'open' : 'resolved' }) }, resolved ? 'Reopen' : 'Resolve'));
  }

  async function update(patch) {
    try {
      const res = await api.teamUpdate(business, current, patch);
      upsert(res.conversation);
    } catch (e) {
      toast(e.detail);
    }
  }

  function upsert(conv) {
    const i = conversations.findIndex((c) => sameHandle(c.peer.handle, conv.peer.handle));
    if (i >= 0) conversations[i] = { ...conversations[i], ...conv };
    if (current && sameHandle(conv.peer.handle, current)) {
      openState = { status: conv.status, assignee: conv.assignee };
      drawControls();
    }
    refresh();
  }

  function drawTimeline() {
    if (!current) return;
    mount(timelineBox, timeline.map((item) => {
      if (item.kind === 'note') {
        return h('li', { class: 'team-note', 'data-note': item.id },
          h('p', { class: 'team-note-label' }, `Internal note by @${item.author} · ${clock(item.created_at)}`),
          h('p', { class: 'team-text' }, item.text));
      }
      const ours = sameHandle(item.from, business);
      return h('li', { class: ['team-msg', ours ? 'is-ours' : 'is-theirs'], 'data-message': item.id },
        h('p', { class: 'team-text' }, item.text),
        h('p', { class: 'team-meta' }, ours ? `@${item.agent || business} · ${clock(item.sent_at)}` : clock(item.sent_at)));
    }));
    timelineBox.scrollTop = timelineBox.scrollHeight;
  }

  function drawTyping() {
    const names = [...typing.keys()];
    typingLine.textContent = names.length ? `${names.join(', ')} ${names.length > 1 ? 'are' : 'is'} typing…` : '';
  }

  function showTyping(name) {
    clearTimeout(typing.get(name));
    typing.set(name, setTimeout(() => { typing.delete(name); drawTyping(); }, TYPING_SHOWN_MS));
    drawTyping();
  }

  // Live ----------------------------------------------------------------------

  function peerOf(message) {
    return sameHandle(message.from, business) ? message.to : message.from;
  }

  function onFrame(f) {
    if (f.type === 'message') {
      if (current && sameHandle(peerOf(f.message), current)) {
        add({ kind: 'message', ...f.message });
        if (!sameHandle(f.message.from, business)) markRead();
        typing.delete(`@${f.message.agent || f.message.from}`);
        drawTyping();
      }
      refresh();
    } else if (f.type === 'note') {
      if (current && sameHandle(f.peer, current)) add({ kind: 'note', ...f.note });
    } else if (f.type === 'conversation') {
      const c = conversations.find((x) => sameHandle(x.peer.handle, f.peer));
      if (c) {
        c.status = f.status;
        c.assignee = f.assignee;
      }
      if (current && sameHandle(f.peer, current)) {
        openState = { status: f.status, assignee: f.assignee };
        drawControls();
      }
      refresh();
    } else if (f.type === 'typing') {
      if (!current) return;
      if (f.agent && sameHandle(f.peer, current) && !sameHandle(f.agent, me.handle)) showTyping(`@${f.agent}`);
      else if (!f.agent && sameHandle(f.from, current)) showTyping(`@${f.from}`);
    }
  }

  function ended() {
    conn.textContent = 'No access';
    mount(thread, h('div', { class: 'empty-pane' },
      h('p', { class: 'empty-title' }, `You are no longer in the team of @${business}.`),
      h('a', { class: 'btn btn-primary', href: hrefFor.inbox() }, 'Back to my messages')));
  }

  drawTabs();
  refresh();
  open(current);

  return {
    business,
    show(handle) {
      if (handle !== current) open(handle);
    },
    destroy() {
      destroyed = true;
      clearTimeout(refreshTimer);
      for (const t of typing.values()) clearTimeout(t);
      socket.stop();
      mount(root);
    },
  };
}

/** "Acting as": me, or one of the businesses whose team I am in. */
export function teamSwitcher(me, teams, business = null) {
  const select = h('select', { class: 'input team-switch', 'aria-label': 'Acting as', id: business ? 'team-switch-head' : 'team-switch' },
    h('option', { value: '' }, `Me (@${me.handle})`),
    teams.map((b) => h('option', { value: b }, `@${b}`)));
  select.value = business || '';
  select.addEventListener('change', () => go(select.value ? hrefFor.team(select.value) : hrefFor.inbox()));
  return select;
}
