// Application state and the rules that keep it true.
//
// The server is the source of truth; this module merges two views of it:
// HTTP snapshots (inbox pages, history pages) and the live event stream (WS
// frames). The two overlap (a replay after reconnect re-sends events the
// snapshot already has), so every merge is idempotent: messages are deduped
// by id, pending sends by client_id, and a conversation summary only moves
// forward in time.

import * as api from './api.js';
import { LiveSocket } from './socket.js';
import { key, sameHandle, newClientId } from './format.js';

// Events ------------------------------------------------------------------

const listeners = new Map();

/** Subscribe to a state change; returns the unsubscribe function. */
export function on(type, fn) {
  if (!listeners.has(type)) listeners.set(type, new Set());
  listeners.get(type).add(fn);
  return () => listeners.get(type).delete(fn);
}

function emit(type, detail) {
  const set = listeners.get(type);
  if (!set) return;
  for (const fn of [...set]) {
    try {
      fn(detail);
    } catch (e) {
      // One broken view must not stop the others from updating.
      console.error(e);
    }
  }
}

// State -------------------------------------------------------------------

function freshState() {
  return {
    me: null,
    settings: { read_receipts: true },
    restricted: false, // reported by several people: no new conversations with strangers
    convs: new Map(), // key(handle) -> {peer, last_message, unread, folder}
    folders: {
      inbox: { loaded: false, loading: false, next: null, error: null },
      requests: { loaded: false, loading: false, next: null, error: null },
    },
    threads: new Map(), // key(handle) -> thread (see threadFor)
    outbox: [], // pending sends, oldest first: {client_id, to, text, status, error, at}
    typing: new Map(), // key(handle) -> timer id while "is typing…" shows
    users: new Map(), // key(handle) -> {user, relationship}
    connection: 'connecting',
    activePeer: null, // key of the conversation on screen, if any
  };
}

export let state = freshState();
let socket = null;
const typingSentAt = new Map();

export const FOLDER_PAGE = 50;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 5000;
const ACK_PROBE_MS = 4000;

// Session storage keys are per person so two accounts used one after the
// other in the same tab never replay each other's cursor or outbox. Neither
// is a secret: a cursor only works with the session cookie, and the outbox
// holds the person's own unsent text so that a reload doesn't lose it.
const cursorKey = () => `dmhub:cursor:${key(state.me.handle)}`;
const outboxKey = () => `dmhub:outbox:${key(state.me.handle)}`;

function readStorage(k, fallback) {
  try {
    const raw = sessionStorage.getItem(k);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

function writeStorage(k, value) {
  try {
    if (value === null) sessionStorage.removeItem(k);
    else sessionStorage.setItem(k, JSON.stringify(value));
  } catch {
    /* storage full or disabled: we still work, just without reload survival */
  }
}

function saveOutbox() {
  writeStorage(outboxKey(), state.outbox.map(({ client_id, to, text, at, extra }) => ({ client_id, to, text, at, extra })));
}

// Session -----------------------------------------------------------------

/** Start everything for a signed-in person: lists, socket, pending sends. */
export function start({ user, settings, restricted }) {
  stop();
  state = freshState();
  state.me = user;
  state.restricted = Boolean(restricted);
  state.settings = { ...state.settings, ...(settings || {}) };
  state.outbox = readStorage(outboxKey(), []).map((m) => ({ ...m, status: 'sending', error: null, tries: 0 }));
  emit('me');

  socket = new LiveSocket({
    cursor: readStorage(cursorKey(), null),
    onFrame: handleFrame,
    onState: setConnection,
    stillSignedIn: async () => {
      try {
        return Boolean((await api.currentSession()).user);
      } catch {
        return null;
      }
    },
  });
  socket.start();
  loadFolder('inbox');
  loadFolder('requests');
}

export function stop() {
  if (socket) socket.stop();
  socket = null;
  for (const item of state.outbox) clearTimeout(item.timer);
  for (const t of state.typing.values()) clearTimeout(t);
}

/** Forget everything this tab knew about the person (sign-out). */
export function clearSession() {
  if (state.me) {
    writeStorage(cursorKey(), null);
    writeStorage(outboxKey(), null);
  }
  stop();
  state = freshState();
}

export function setMe(user, settings, restricted) {
  state.me = user;
  if (settings) state.settings = { ...state.settings, ...settings };
  if (restricted !== undefined) state.restricted = Boolean(restricted);
  emit('me');
}

/** Ask the server again whether the account is restricted (an operator may have cleared it). */
export async function refreshStanding() {
  const res = await api.me();
  setMe(res.user, res.settings, res.restricted);
}

function setConnection(s) {
  state.connection = s;
  emit('connection', s);
  if (s === 'ended') emit('ended');
}

// Conversations -------------------------------------------------------------

/** Newer-or-same by time; ties favour the incoming copy (it is fresher). */
function notOlder(a, b) {
  if (!a) return false;
  if (!b) return true;
  return String(a.sent_at) >= String(b.sent_at);
}

function mergeConv(c) {
  const k = key(c.peer.handle);
  const cur = state.convs.get(k);
  if (!cur) {
    state.convs.set(k, { peer: c.peer, last_message: c.last_message, unread: c.unread || 0, folder: c.folder || 'inbox' });
    return;
  }
  cur.peer = c.peer;
  if (c.folder) cur.folder = c.folder;
  if (!cur.last_message || notOlder(c.last_message, cur.last_message)) {
    cur.last_message = c.last_message;
    cur.unread = c.unread || 0;
  } else {
    // A live frame beat this snapshot; keep it and don't lose its unread.
    cur.unread = Math.max(cur.unread, c.unread || 0);
  }
}

export async function loadFolder(folder, { more = false } = {}) {
  const f = state.folders[folder];
  if (f.loading || (more && !f.next)) return;
  f.loading = true;
  f.error = null;
  emit('convs');
  try {
    const res = await api.conversations(folder, { limit: FOLDER_PAGE, before: more ? f.next : null });
    for (const c of res.conversations || []) mergeConv({ ...c, folder: c.folder || folder });
    f.next = res.next || null;
    f.loaded = true;
    // The open conversation may have loaded before this list said it had
    // unread messages: tell the server now, not just the badge.
    const open = state.activePeer && state.threads.get(state.activePeer);
    if (open) markRead(open.handle);
  } catch (e) {
    f.error = e.detail;
  } finally {
    f.loading = false;
    emit('convs');
  }
}

/** Conversations of one folder, latest activity first. */
export function listConvs(folder) {
  return [...state.convs.values()]
    .filter((c) => !folder || c.folder === folder)
    .sort((a, b) => {
      const ta = activityOf(a);
      const tb = activityOf(b);
      return ta < tb ? 1 : ta > tb ? -1 : 0;
    });
}

/** Latest activity: the last message, or a send still on its way. */
export function activityOf(c) {
  let t = c.last_message ? String(c.last_message.sent_at) : '';
  for (const m of state.outbox) if (sameHandle(m.to, c.peer.handle) && m.at > t) t = m.at;
  return t;
}

export function unreadCount(folder) {
  let n = 0;
  for (const c of state.convs.values()) if (c.folder === folder && c.unread > 0) n += 1;
  return n;
}

export function conv(handle) {
  return state.convs.get(key(handle)) || null;
}

/** Make sure a conversation exists locally (placeholder peer until fetched). */
function ensureConv(handle, folder) {
  const k = key(handle);
  let c = state.convs.get(k);
  if (!c) {
    const known = state.users.get(k);
    c = { peer: known ? known.user : { handle, name: null }, last_message: null, unread: 0, folder: folder || 'inbox' };
    state.convs.set(k, c);
    if (!known) {
      // Fill in name/kind for the list; the row shows the handle meanwhile.
      getUser(handle).then(() => emit('convs')).catch(() => {});
    }
  }
  return c;
}

export async function acceptRequest(handle) {
  await api.accept(handle);
  const c = conv(handle);
  if (c) c.folder = 'inbox';
  emit('convs');
  emit('thread', key(handle));
}

export async function deleteConv(handle) {
  await api.deleteConversation(handle);
  forgetConv(handle);
}

function forgetConv(handle) {
  state.convs.delete(key(handle));
  state.threads.delete(key(handle));
  emit('convs');
}

// Bounds "delete all": each pass deletes what is loaded, then loads the next page.
const DELETE_ALL_MAX_PASSES = 20;

/** Delete every request, including those beyond the loaded page; returns how many. */
export async function deleteAllRequests() {
  let n = 0;
  for (let pass = 0; pass < DELETE_ALL_MAX_PASSES; pass += 1) {
    const handles = listConvs('requests').map((c) => c.peer.handle);
    if (handles.length === 0) break;
    for (const h of handles) {
      await api.deleteConversation(h);
      forgetConv(h);
      n += 1;
    }
    state.folders.requests = { loaded: false, loading: false, next: null, error: null };
    await loadFolder('requests');
  }
  return n;
}

/**
 * Report someone (spam or abuse). The server also blocks them and takes
 * the conversation out of the requests folder; the page follows suit.
 */
export async function reportPerson(handle, reason, messageId = null) {
  await api.report(handle, reason, messageId);
  const c = conv(handle);
  if (c && c.folder === 'requests') forgetConv(handle);
  await getUser(handle).catch(() => {});
}

// Threads (message history of one conversation) ----------------------------

export function threadFor(handle) {
  const k = key(handle);
  let t = state.threads.get(k);
  if (!t) {
    t = {
      handle,
      messages: [],
      ids: new Set(),
      next: null,
      loaded: false,
      loading: false,
      loadingOlder: false,
      error: null,
      peerReadUpTo: null,
      lastReadSent: null,
    };
    state.threads.set(k, t);
  }
  return t;
}

/** Insert one message in time order; false if we already had it. */
function addToThread(t, msg) {
  if (t.ids.has(msg.id)) return false;
  t.ids.add(msg.id);
  const list = t.messages;
  let i = list.length;
  // Almost always appends; walk back only for replays of older events.
  while (i > 0 && String(list[i - 1].sent_at) > String(msg.sent_at)) i -= 1;
  list.splice(i, 0, msg);
  return true;
}

export async function openThread(handle) {
  const k = key(handle);
  state.activePeer = k;
  const t = threadFor(handle);
  if (!t.loaded && !t.loading) await loadNewest(handle);
  else markRead(handle);
}

export function closeThread() {
  state.activePeer = null;
}

async function loadNewest(handle) {
  const t = threadFor(handle);
  t.loading = true;
  t.error = null;
  emit('thread', key(handle));
  try {
    const res = await api.messages(handle, { limit: 40 });
    // Keep live messages that arrived while the page was in flight.
    const live = t.messages;
    t.messages = [];
    t.ids = new Set();
    for (const m of res.messages || []) addToThread(t, m);
    for (const m of live) addToThread(t, m);
    if (res.peer_read_up_to) t.peerReadUpTo = res.peer_read_up_to;
    t.next = res.next || null;
    t.loaded = true;
  } catch (e) {
    t.error = e.detail;
  } finally {
    t.loading = false;
    emit('thread', key(handle));
  }
  markRead(handle);
}

/** Fetch the page before the oldest loaded message. */
export async function loadOlder(handle) {
  const t = threadFor(handle);
  if (!t.next || t.loadingOlder) return false;
  t.loadingOlder = true;
  emit('thread', key(handle));
  try {
    const res = await api.messages(handle, { limit: 40, before: t.next });
    for (const m of res.messages || []) addToThread(t, m);
    t.next = res.next || null;
    return true;
  } catch (e) {
    t.error = e.detail;
    return false;
  } finally {
    t.loadingOlder = false;
    emit('thread', key(handle));
  }
}

function isVisible(k) {
  return state.activePeer === k && document.visibilityState === 'visible';
}

/**
 * Tell the server (and through it the peer and our other tabs) that the
 * person has seen the conversation. Only when it is really on screen, and
 * only once per newest message, so read frames don't flood.
 */
export function markRead(handle) {
  const k = key(handle);
  if (!isVisible(k)) return;
  const t = state.threads.get(k);
  const c = state.convs.get(k);
  if (!t || !t.loaded || t.messages.length === 0) return;
  const last = t.messages[t.messages.length - 1];
  const fromPeer = !sameHandle(last.from, state.me.handle);
  if (t.lastReadSent === last.id || (!fromPeer && !(c && c.unread > 0))) {
    if (c && c.unread) { c.unread = 0; emit('convs'); }
    return;
  }
  t.lastReadSent = last.id;
  const sent = socket && socket.send({ type: 'read', peer: t.handle, up_to: last.id });
  if (!sent) api.markRead(t.handle, last.id).catch(() => { t.lastReadSent = null; });
  if (c && c.unread) {
    c.unread = 0;
    emit('convs');
  }
}

document.addEventListener('visibilitychange', () => {
  if (state.activePeer && document.visibilityState === 'visible') {
    const t = state.threads.get(state.activePeer);
    if (t) markRead(t.handle);
  }
});

// Sending -------------------------------------------------------------------

/**
 * Queue a message. It shows at once as "sending" and survives reconnects.
 * `extra` holds optional send fields: `ref` (where a compose link came from),
 * `quick_reply` (the metadata of a tapped quick reply).
 */
export function send(to, text, extra = null) {
  const item = { client_id: newClientId(), to, text, extra, status: 'sending', error: null, tries: 0, at: new Date().toISOString() };
  state.outbox.push(item);
  saveOutbox();
  ensureConv(to);
  emit('thread', key(to));
  emit('convs');
  transmit(item);
  return item;
}

/** Re-send a failed message with its original client_id (server dedupes). */
export function retry(clientId) {
  const item = state.outbox.find((m) => m.client_id === clientId);
  if (!item) return;
  clearTimeout(item.timer);
  item.status = 'sending';
  item.error = null;
  item.tries = 0;
  emit('thread', key(item.to));
  transmit(item);
}

/** Drop a failed message the person gave up on. */
export function discard(clientId) {
  const i = state.outbox.findIndex((m) => m.client_id === clientId);
  if (i < 0) return;
  const [item] = state.outbox.splice(i, 1);
  clearTimeout(item.timer);
  saveOutbox();
  emit('thread', key(item.to));
}

function transmit(item) {
  if (!socket) return;
  const ok = socket.send({ ...(item.extra || {}), type: 'send', to: item.to, text: item.text, client_id: item.client_id });
  if (!ok) return; // goes out from flushOutbox() when the socket is back
  // No ack soon: check the link now instead of waiting for the next ping,
  // so a silently dead socket is replaced and this message goes out again.
  setTimeout(() => {
    if (state.outbox.includes(item) && item.status === 'sending' && socket) socket.probe();
  }, ACK_PROBE_MS);
}

function flushOutbox() {
  for (const item of state.outbox) if (item.status === 'sending') transmit(item);
}

// While a send waits out a rate limit, its countdown is redrawn this often.
const COUNTDOWN_TICK_MS = 1000;
let countdownTimer = null;

function tickCountdowns() {
  const waiting = state.outbox.filter((m) => m.status === 'waiting');
  for (const k of new Set(waiting.map((m) => key(m.to)))) emit('thread', k);
  if (waiting.length === 0) {
    clearInterval(countdownTimer);
    countdownTimer = null;
  }
}

/**
 * The server refused the send for a limit and said when to come back:
 * wait, then send again with the same client_id (nothing was stored, and a
 * repeat could never make a second copy anyway).
 */
function waitAndResend(item, f) {
  const seconds = Math.max(1, Math.ceil(Number(f.retry_after) || 1));
  clearTimeout(item.timer);
  item.status = 'waiting';
  item.limit = f.limit || null;
  item.retryAt = Date.now() + seconds * 1000;
  item.error = null;
  item.timer = setTimeout(() => {
    if (!state.outbox.includes(item) || item.status !== 'waiting') return;
    item.status = 'sending';
    emit('thread', key(item.to));
    transmit(item);
  }, seconds * 1000);
  if (!countdownTimer) countdownTimer = setInterval(tickCountdowns, COUNTDOWN_TICK_MS);
}

export function pendingFor(handle) {
  return state.outbox.filter((m) => sameHandle(m.to, handle));
}

function settle(clientId) {
  const i = state.outbox.findIndex((m) => m.client_id === clientId);
  if (i < 0) return null;
  const [item] = state.outbox.splice(i, 1);
  clearTimeout(item.timer);
  saveOutbox();
  return item;
}

/** Throttled typing notice while the person writes. */
export function typing(to) {
  const k = key(to);
  const now = Date.now();
  if (now - (typingSentAt.get(k) || 0) < TYPING_SEND_EVERY_MS) return;
  if (socket && socket.send({ type: 'typing', to })) typingSentAt.set(k, now);
}

export function isTyping(handle) {
  return state.typing.has(key(handle));
}

// Live frames ----------------------------------------------------------------

function handleFrame(f) {
  switch (f.type) {
    case 'ready': {
      if (f.user) setMe(f.user);
      flushOutbox();
      // A read sent on a socket that died unnoticed may be lost: say it again.
      const open = state.activePeer && state.threads.get(state.activePeer);
      if (open) {
        open.lastReadSent = null;
        markRead(open.handle);
      }
      break;
    }
    case 'ack':
      onAck(f);
      break;
    case 'message':
      if (f.message) onMessage(f.message, f.folder);
      break;
    case 'typing':
      onTyping(f.from);
      break;
    case 'read':
      onRead(f);
      break;
    case 'error':
      onError(f);
      break;
    case 'reset':
      onReset();
      break;
    default:
      break; // frame types added later are ignored, per the contract
  }
  if (f.cursor && socket) writeStorage(cursorKey(), socket.cursor);
}

function onAck(f) {
  const item = settle(f.client_id);
  const msg = f.message;
  if (!msg) return;
  const peer = item ? item.to : msg.to;
  applyMessage(msg, peer, null);
}

function onMessage(msg, folder) {
  const mine = sameHandle(msg.from, state.me.handle);
  const peer = mine ? msg.to : msg.from;
  // Our own message echoed from another tab, or replayed after a reconnect
  // that lost the ack: it is sent, whatever this tab's outbox thought.
  if (mine && msg.client_id) settle(msg.client_id);
  const isNew = applyMessage(msg, peer, folder);
  if (!mine) {
    clearTyping(peer);
    if (isNew) emit('incoming', { message: msg, peer });
  }
}

/** Put a message in its thread and its conversation summary. */
function applyMessage(msg, peer, folder) {
  const k = key(peer);
  const t = state.threads.get(k);
  let isNew = true;
  if (t) isNew = addToThread(t, msg);
  const c = ensureConv(peer, folder);
  if (folder) c.folder = folder;
  const sameAsLast = c.last_message && c.last_message.id === msg.id;
  if (sameAsLast) {
    isNew = false;
  } else if (notOlder(msg, c.last_message)) {
    c.last_message = msg;
    const mine = sameHandle(msg.from, state.me.handle);
    if (!mine && isNew && !isVisible(k)) c.unread += 1;
  } else if (!t) {
    // An old event replayed after a reconnect: nothing new to announce.
    isNew = false;
  }
  emit('convs');
  emit('thread', k);
  if (isVisible(k)) markRead(peer);
  return isNew;
}

function onTyping(from) {
  if (!from) return;
  const k = key(from);
  clearTimeout(state.typing.get(k));
  state.typing.set(k, setTimeout(() => clearTyping(from), TYPING_SHOW_MS));
  emit('typing', k);
}

function clearTyping(handle) {
  const k = key(handle);
  if (!state.typing.has(k)) return;
  clearTimeout(state.typing.get(k));
  state.typing.delete(k);
  emit('typing', k);
}

function onRead(f) {
  if (sameHandle(f.reader, state.me.handle)) {
    // We read it in another tab: clear the badge here too.
    const k = key(f.peer);
    const c = state.convs.get(k);
    const t = state.threads.get(k);
    if (!c) return;
    if (t && t.loaded) {
      const i = t.messages.findIndex((m) => m.id === f.up_to);
      if (i >= 0) {
        c.unread = t.messages.slice(i + 1).filter((m) => !sameHandle(m.from, state.me.handle)).length;
        t.lastReadSent = f.up_to;
      }
    } else if (c.last_message && c.last_message.id === f.up_to) {
      c.unread = 0;
    }
    emit('convs');
  } else {
    // The peer read our messages: everything up to up_to is "seen".
    const t = threadFor(f.reader);
    t.peerReadUpTo = f.up_to;
    emit('thread', key(f.reader));
  }
}

function onError(f) {
  if (f.client_id) {
    const item = state.outbox.find((m) => m.client_id === f.client_id);
    if (!item) return;
    // "unavailable": storage hiccup, nothing stored. Safe to try again with
    // the same client_id a few times before bothering the person.
    if (f.code === 'unavailable' && item.tries < 3) {
      item.tries += 1;
      setTimeout(() => transmit(item), 1000 * 2 ** item.tries);
      return;
    }
    if (f.code === 'rate_limited' && f.retry_after) {
      waitAndResend(item, f);
      emit('thread', key(item.to));
      emit('convs');
      return;
    }
    if (f.code === 'not_allowed' && f.reason === 'restricted' && !state.restricted) {
      state.restricted = true;
      emit('me');
    }
    item.status = 'failed';
    item.error = f.detail || 'Not sent.';
    emit('thread', key(item.to));
    emit('convs');
    return;
  }
  emit('socket-error', f);
}

async function onReset() {
  // The server could not replay what we missed; start over from HTTP.
  state.convs.clear();
  state.folders.inbox = { loaded: false, loading: false, next: null, error: null };
  state.folders.requests = { loaded: false, loading: false, next: null, error: null };
  const active = state.activePeer ? state.threads.get(state.activePeer) : null;
  state.threads.clear();
  emit('convs');
  await Promise.all([loadFolder('inbox'), loadFolder('requests')]);
  if (active) {
    threadFor(active.handle);
    await loadNewest(active.handle);
  }
}

// People ---------------------------------------------------------------------

/** Profile + relationship, always fresh from the server (rules change live). */
export async function getUser(handle) {
  const res = await api.user(handle);
  state.users.set(key(handle), res);
  const c = state.convs.get(key(handle));
  if (c && res.user) c.peer = res.user;
  emit('user', key(handle));
  return res;
}

export function cachedUser(handle) {
  return state.users.get(key(handle)) || null;
}

/** Run a follow/block style action, then refresh what it changed. */
export async function relationAction(handle, action) {
  const fns = {
    follow: api.follow,
    unfollow: api.unfollow,
    block: api.block,
    unblock: api.unblock,
  };
  await fns[action](handle);
  return getUser(handle);
}

export async function updateSettings(patch) {
  const res = await api.updateMe(patch);
  setMe(res.user, res.settings);
  return res;
}
