// Wires the pieces together: who is signed in, which screen the URL asks
// for, the offline banner, the page title.

import * as api from './api.js';
import * as store from './store.js';
import * as router from './router.js';
import { h, mount, announce, displayName, toast } from './dom.js';
import { oneLine } from './format.js';
import { renderAuth } from './views/auth.js';
import { createSidebar } from './views/inbox.js';
import { createConversation } from './views/conversation.js';
import { createCompose } from './views/compose.js';
import { openSettings } from './views/settings.js';
import { createTeamView, teamSwitcher } from './views/team.js';

const app = document.getElementById('app');
const authRoot = document.getElementById('auth-root');
const mainPane = document.getElementById('main');
const banner = document.getElementById('offline-banner');
const bannerText = document.getElementById('offline-text');

let sidebar = null;
let pane = null; // the view in the main pane: {destroy, focusDefault}
let paneRoute = '';
let started = false;
// The team inbox, when acting for a business (#/team/BIZ): it replaces the
// whole app, and "me" comes back unchanged when the agent switches back.
let teamView = null;
let teamRoot = null;
let teams = [];

export async function start() {
  api.onUnauthenticated(() => sessionEnded());
  // Ask whether anyone is signed in before anything that needs a session: a
  // signed-out visitor is the normal first visit, not an error, so the page
  // makes no request that would answer 401 (and log it in the console).
  let session;
  try {
    session = await api.currentSession();
  } catch (e) {
    showFatal(e);
    return;
  }
  if (!session.user) {
    showAuth();
    return;
  }
  startApp(session);
}

function showFatal(e) {
  app.classList.remove('is-loading');
  mount(mainPane,
    h('div', { class: 'empty-pane' },
      h('p', { class: 'empty-title' }, 'Can’t load your messages'),
      h('p', null, e.detail),
      h('button', { class: 'btn btn-primary', type: 'button', onclick: () => location.reload() }, 'Try again')));
}

function showAuth({ note = '', ended = false } = {}) {
  const route = router.parse();
  if (!note && route.name === 'new' && route.peer) {
    note = `Sign in or create an account to message @${route.peer}.`;
  }
  app.hidden = true;
  banner.hidden = true;
  authRoot.hidden = false;
  document.title = 'Sign in · dmhub';
  renderAuth(authRoot, {
    note,
    mode: 'signin',
    onDone: (me) => {
      if (ended || started) {
        // A fresh page is the simplest way to drop every trace of the old
        // session's state; the URL keeps the screen (deep link included).
        location.reload();
        return;
      }
      authRoot.hidden = true;
      mount(authRoot);
      app.hidden = false;
      startApp(me);
    },
  });
}

function sessionEnded() {
  if (!started || !authRoot.hidden) return;
  store.clearSession();
  if (pane) pane.destroy();
  pane = null;
  showAuth({ note: 'You were signed out. Sign in again to continue.', ended: true });
}

async function signOut() {
  try {
    await api.signOut();
  } catch (e) {
    if (e.status !== 401) {
      toast(e.detail);
      return;
    }
  }
  store.clearSession();
  location.replace('/');
}

/** The session already ended on the server (signed out everywhere, account deleted). */
function signedOutHere() {
  store.clearSession();
  location.replace('/');
}

function startApp(me) {
  started = true;
  app.classList.remove('is-loading');
  store.start(me);
  sidebar = createSidebar({
    actionsRoot: document.getElementById('sidebar-actions'),
    bodyRoot: document.getElementById('sidebar-body'),
    onSettings: () => openSettings({ onSignOut: signOut, onSignedOut: signedOutHere }),
  });
  store.on('connection', drawBanner);
  store.on('me', drawRestricted);
  drawRestricted();
  store.on('ended', sessionEnded);
  store.on('convs', drawTitle);
  store.on('incoming', ({ message, peer }) => {
    const c = store.conv(peer);
    const who = c ? displayName(c.peer) : `@${peer}`;
    announce(`New message from ${who}: ${oneLine(message.text, 200)}`);
  });
  store.on('socket-error', (f) => {
    // Errors without a client_id answer frames the person didn't ask for
    // (typing notices, read pointers); a toast about those would only confuse.
    console.warn('dmhub:', f.code, f.detail);
  });
  router.onChange(route);
  route(router.parse());
  drawBanner();
  loadTeams();
}

/** The businesses whose team I am in: a switch in the sidebar when there are any. */
async function loadTeams() {
  try {
    const res = await api.me();
    teams = res.teams || [];
    // Signing in answers without the account's standing: this is where the
    // page learns that it is restricted.
    if (res.restricted !== undefined) store.setMe(store.state.me, null, res.restricted);
  } catch {
    teams = [];
  }
  // A business works its own team inbox too (as= its own handle).
  const me = store.state.me;
  if (me.kind === 'business') teams = [me.handle, ...teams];
  if (!teams.length) return;
  const row = document.createElement('div');
  row.className = 'team-switch-row';
  const label = document.createElement('label');
  label.htmlFor = 'team-switch';
  label.textContent = 'Acting as';
  row.append(label, teamSwitcher(store.state.me, teams));
  document.querySelector('.sidebar-head').after(row);
  const r = router.parse();
  if (r.name === 'team') {
    // Drawn before the list of teams came: again, with the switch complete.
    leaveTeam();
    paneRoute = '';
    route(r);
  }
}

function routeTeam(r) {
  if (!teamRoot) {
    teamRoot = document.createElement('div');
    teamRoot.id = 'team-root';
    document.body.appendChild(teamRoot);
  }
  app.hidden = true;
  teamRoot.hidden = false;
  if (teamView && teamView.business.toLowerCase() === r.business.toLowerCase()) {
    teamView.show(r.peer);
    return;
  }
  if (teamView) teamView.destroy();
  const known = teams.find((b) => b.toLowerCase() === r.business.toLowerCase()) || r.business;
  teamView = createTeamView(teamRoot, { business: known, peer: r.peer, me: store.state.me, teams });
  document.title = `@${known} · Team · dmhub`;
}

function leaveTeam() {
  if (!teamView) return;
  teamView.destroy();
  teamView = null;
  teamRoot.hidden = true;
  app.hidden = false;
}

// The skip link must not touch location.hash: the hash is our router, and
// "#main" would read as "go to the inbox".
document.querySelector('.skip-link').addEventListener('click', (ev) => {
  ev.preventDefault();
  if (pane) pane.focusDefault();
  else mainPane.focus();
});

function route(r) {
  const sig = JSON.stringify(r);
  if (sig === paneRoute) return;
  paneRoute = sig;
  if (r.name === 'team') {
    routeTeam(r);
    return;
  }
  leaveTeam();
  sidebar.setRoute(r);
  app.classList.toggle('show-main', r.name !== 'list');
  if (pane) pane.destroy();
  pane = null;
  if (r.name === 'thread') {
    pane = createConversation(mainPane, r.peer);
  } else if (r.name === 'new') {
    pane = createCompose(mainPane, { peer: r.peer, text: r.text, ref: r.ref });
  } else {
    mount(mainPane,
      h('div', { class: 'empty-pane' },
        h('span', { class: 'empty-art', 'aria-hidden': 'true' }),
        h('p', { class: 'empty-title' }, 'Your messages'),
        h('p', null, 'Pick a conversation, or start a new one.'),
        h('a', { class: 'btn btn-primary', href: router.hrefFor.compose() }, 'New message')));
  }
  if (r.settings) {
    // A link (from the button generator, say) to Settings: open the dialog
    // over the inbox, and leave the URL as the inbox so Back does not reopen it.
    history.replaceState(null, '', router.hrefFor.inbox());
    paneRoute = JSON.stringify(router.parse());
    openSettings({ onSignOut: signOut });
    return;
  }
  if (pane) pane.focusDefault();
  drawTitle();
}

let restrictedBox = null;
/**
 * A restricted account (reported by several people) is told so where it
 * can't be missed: what happened, what it still may do, and who can lift it.
 */
function drawRestricted() {
  if (!store.state.restricted) {
    if (restrictedBox) restrictedBox.hidden = true;
    return;
  }
  if (!restrictedBox) {
    restrictedBox = h('div', { id: 'restricted-banner', class: 'restricted-banner', role: 'status' });
    document.querySelector('.sidebar-head').after(restrictedBox);
  }
  restrictedBox.hidden = false;
  mount(restrictedBox,
    h('p', { class: 'restricted-title' }, 'Your account is restricted'),
    h('p', null,
      'Several people reported messages from your account. Until an operator of this server lifts the restriction, ',
      'you can write only to people who follow you or who wrote to you; everything else works as before.'),
    h('button', { class: 'link-btn', type: 'button', onclick: () => store.refreshStanding().catch((e) => toast(e.detail)) }, 'Check again'));
}

let bannerTimer = null;
function drawBanner() {
  const s = store.state.connection;
  clearTimeout(bannerTimer);
  if (s === 'online' || s === 'ended') {
    banner.hidden = true;
    document.body.classList.remove('is-offline');
    return;
  }
  const show = () => {
    bannerText.textContent = s === 'offline'
      ? 'You’re offline. Messages you send will go out when you’re back.'
      : 'Connection lost. Reconnecting… Messages you send will go out when it’s back.';
    banner.hidden = false;
    document.body.classList.add('is-offline');
  };
  // A quick reconnect (server restart, brief blip) shouldn't flash a banner.
  if (s === 'offline') show();
  else bannerTimer = setTimeout(show, 2000);
}

function drawTitle() {
  const n = store.unreadCount('inbox') + store.unreadCount('requests');
  document.title = `${n ? `(${n}) ` : ''}Messages · dmhub`;
}
