// Where the page is, read from the URL.
//
// The server only serves the page at "/" and "/messages/compose", so every
// other screen lives in the hash ("/#/c/alice"): a reload or a shared link
// lands on the same screen without the server knowing our routes.
//
//   /#/                 inbox
//   /#/requests         requests folder
//   /#/c/HANDLE         conversation with HANDLE
//   /#/new[/HANDLE]     new message
//   /#/settings         inbox, with the settings dialog open
//   /#/team/BIZ[/HANDLE] acting for business BIZ (its team inbox, a conversation)
//   /messages/compose?recipient=H&text=T&ref=R   new message, prefilled (deep link);
//                       ref (where the link was) goes with the first message

const listeners = new Set();
const REF_RE = /^[A-Za-z0-9_.-]{1,64}$/;

export function parse(loc = window.location) {
  if (loc.pathname.replace(/\/+$/, '') === '/messages/compose') {
    const q = new URLSearchParams(loc.search);
    return {
      name: 'new',
      peer: (q.get('recipient') || '').replace(/^@+/, ''),
      text: q.get('text') || '',
      // A malformed ref (a hand-edited link) is dropped rather than let the
      // server refuse the customer's first message over it.
      ref: REF_RE.test(q.get('ref') || '') ? q.get('ref') : '',
      deepLink: true,
    };
  }
  const parts = loc.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(safeDecode);
  if (parts[0] === 'requests') return { name: 'list', folder: 'requests' };
  if (parts[0] === 'c' && parts[1]) return { name: 'thread', peer: parts[1], folder: null };
  if (parts[0] === 'team' && parts[1]) return { name: 'team', business: parts[1], peer: parts[2] || null };
  if (parts[0] === 'settings') return { name: 'list', folder: 'inbox', settings: true };
  if (parts[0] === 'new') return { name: 'new', peer: parts[1] || '', text: '' };
  return { name: 'list', folder: 'inbox' };
}

function safeDecode(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export const hrefFor = {
  inbox: () => '/#/',
  requests: () => '/#/requests',
  thread: (handle) => `/#/c/${encodeURIComponent(handle)}`,
  settings: () => '/#/settings',
  team: (business, handle) => `/#/team/${encodeURIComponent(business)}${handle ? `/${encodeURIComponent(handle)}` : ''}`,
  compose: (handle) => (handle ? `/#/new/${encodeURIComponent(handle)}` : '/#/new'),
};

/** Go to a route; `replace` keeps Back from returning to a dead-end screen. */
export function go(href, { replace = false } = {}) {
  const url = new URL(href, window.location.href);
  if (url.href === window.location.href) {
    notify();
    return;
  }
  if (replace) history.replaceState(null, '', url.href);
  else history.pushState(null, '', url.href);
  notify();
}

export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function notify() {
  const route = parse();
  for (const fn of listeners) fn(route);
}

// Plain <a href="/#/..."> links only fire hashchange when the path is
// already "/"; intercept them so links work from /messages/compose too.
document.addEventListener('click', (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = ev.target instanceof Element ? ev.target.closest('a[href^="/#"]') : null;
  if (!a || a.target) return;
  ev.preventDefault();
  go(a.getAttribute('href'));
});

window.addEventListener('popstate', notify);
window.addEventListener('hashchange', notify);
