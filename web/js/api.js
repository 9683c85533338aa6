// HTTP side of the public API (PROTOCOL.md). The session lives in the
// HttpOnly cookie the server sets; this module never sees or keeps a token,
// so there is nothing for an injected script to steal from storage.

export class ApiError extends Error {
  constructor(status, code, detail, { field = null, retryAfter = null } = {}) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.field = field;
    this.retryAfter = retryAfter;
  }
}

let unauthenticatedHandler = null;
/**
 * Called when an authenticated call answers 401: the session ended
 * elsewhere (signed out in another tab, expired), so the page must go back
 * to sign-in instead of showing a stream of errors.
 */
export function onUnauthenticated(fn) {
  unauthenticatedHandler = fn;
}

const enc = encodeURIComponent;

async function request(method, path, body, { quiet401 = false } = {}) {
  const init = {
    method,
    // Same-origin cookie only; the browser adds Origin on unsafe methods,
    // which the server checks against CSRF.
    credentials: 'same-origin',
    headers: { Accept: 'application/json' },
    cache: 'no-store',
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'network', "Can't reach dmhub right now. Check your connection and try again.");
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    const retry = res.headers.get('Retry-After');
    const e = new ApiError(
      res.status,
      err.code || `http_${res.status}`,
      err.detail || fallbackDetail(res.status),
      { field: err.field || null, retryAfter: retry ? Number(retry) : null },
    );
    if (res.status === 401 && !quiet401 && unauthenticatedHandler) unauthenticatedHandler(e);
    throw e;
  }
  return data;
}

function fallbackDetail(status) {
  if (status === 404) return 'Not found.';
  if (status === 429) return 'Too many requests. Please wait a moment.';
  if (status >= 500) return 'dmhub is having trouble right now. Please try again.';
  return `Something went wrong (HTTP ${status}).`;
}

// Session ----------------------------------------------------------------

export const me = () => request('GET', '/api/me', undefined, { quiet401: true });
/** `{user: null}` when signed out, else what `me()` answers; never a 401. */
export const currentSession = () => request('GET', '/api/sessions/current');
export const updateMe = (patch) => request('PATCH', '/api/me', patch);
export const signUp = (fields) => request('POST', '/api/accounts', fields, { quiet401: true });
export const signIn = (handle, password) =>
  request('POST', '/api/sessions', { handle, password }, { quiet401: true });
export const signOut = () => request('DELETE', '/api/sessions/current', undefined, { quiet401: true });
export const changePassword = (current, next) =>
  request('PUT', '/api/me/password', { current_password: current, new_password: next });
export const sessions = () => request('GET', '/api/sessions');
export const endSession = (id) => request('DELETE', `/api/sessions/${encodeURIComponent(id)}`);
export const signOutEverywhere = () => request('DELETE', '/api/sessions', undefined, { quiet401: true });
export const deleteAccount = (password) =>
  request('DELETE', '/api/me', { password }, { quiet401: true });
export const EXPORT_URL = '/api/me/export';

/** The Message-button check (no sign-in needed); `query` is URLSearchParams. */
export const buttons = (query) => request('GET', `/api/buttons?${query}`, undefined, { quiet401: true });

// People -----------------------------------------------------------------

export const user = (handle) => request('GET', `/api/users/${enc(handle)}`);
export const follow = (handle) => request('PUT', `/api/following/${enc(handle)}`);
export const unfollow = (handle) => request('DELETE', `/api/following/${enc(handle)}`);
export const block = (handle) => request('PUT', `/api/blocks/${enc(handle)}`);
export const unblock = (handle) => request('DELETE', `/api/blocks/${enc(handle)}`);
export const report = (handle, reason, messageId) =>
  request('POST', '/api/reports', messageId ? { handle, reason, message_id: messageId } : { handle, reason });

// Conversations ----------------------------------------------------------

export function conversations(folder, { limit = 50, before = null } = {}) {
  const q = new URLSearchParams({ folder, limit: String(limit) });
  if (before) q.set('before', before);
  return request('GET', `/api/conversations?${q}`);
}

/** History page; a conversation that never started is simply empty. */
export async function messages(peer, { limit = 40, before = null } = {}) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (before) q.set('before', before);
  try {
    return await request('GET', `/api/conversations/${enc(peer)}/messages?${q}`);
  } catch (e) {
    if (e.status === 404 && e.code === 'not_found') return { messages: [], next: null };
    throw e;
  }
}

export const markRead = (peer, upTo) =>
  request('POST', `/api/conversations/${enc(peer)}/read`, { up_to: upTo });
export const accept = (peer) => request('POST', `/api/conversations/${enc(peer)}/accept`);
export const deleteConversation = (peer) => request('DELETE', `/api/conversations/${enc(peer)}`);

// Teams: an agent acts for a business with ?as=BUSINESS ----------------------

function asQuery(business, params = {}) {
  const q = new URLSearchParams({ as: business });
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') q.set(k, v);
  return q;
}

export const team = (business = null) =>
  request('GET', business ? `/api/team?${asQuery(business)}` : '/api/team');
export const addAgent = (handle) => request('PUT', `/api/team/${enc(handle)}`);
export const removeAgent = (handle) => request('DELETE', `/api/team/${enc(handle)}`);
export const teamConversations = (business, { status = null, assignee = null, limit = 50 } = {}) =>
  request('GET', `/api/conversations?${asQuery(business, { status, assignee, limit: String(limit) })}`);
export const teamMessages = (business, peer, { limit = 40 } = {}) =>
  request('GET', `/api/conversations/${enc(peer)}/messages?${asQuery(business, { limit: String(limit) })}`);
export const teamNotes = (business, peer) =>
  request('GET', `/api/conversations/${enc(peer)}/notes?${asQuery(business, { limit: '100' })}`);
export const teamSend = (business, peer, text, clientId) =>
  request('POST', `/api/conversations/${enc(peer)}/messages?${asQuery(business)}`, { text, client_id: clientId });
export const teamNote = (business, peer, text) =>
  request('POST', `/api/conversations/${enc(peer)}/notes?${asQuery(business)}`, { text });
export const teamUpdate = (business, peer, patch) =>
  request('PATCH', `/api/conversations/${enc(peer)}?${asQuery(business)}`, patch);
export const teamRead = (business, peer, upTo) =>
  request('POST', `/api/conversations/${enc(peer)}/read?${asQuery(business)}`, { up_to: upTo });
