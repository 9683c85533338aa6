// The sidebar: Inbox / Requests tabs, search, and the conversation list.

import * as store from '../store.js';
import { h, mount, avatar, displayName, hasOwnName, srOnly, toast } from '../dom.js';
import { key, listTime, oneLine, cleanHandle, HANDLE_RE, sameHandle } from '../format.js';
import { hrefFor, go } from '../router.js';
import { openReportDialog } from './report.js';

const FOLDERS = [
  { id: 'inbox', label: 'Inbox' },
  { id: 'requests', label: 'Requests' },
];

export function createSidebar({ actionsRoot, bodyRoot, onSettings }) {
  let folder = 'inbox';
  let activePeer = null;
  let query = '';

  // Header actions ----------------------------------------------------------
  const meButton = h('button', { class: 'icon-btn me-btn', type: 'button', onclick: onSettings, 'aria-label': 'Settings' });
  const newButton = h('a', { class: 'btn btn-primary new-btn', href: hrefFor.compose(), title: 'New message' },
    h('span', { class: 'icon icon-compose', 'aria-hidden': 'true' }), h('span', { class: 'new-btn-label' }, 'New message'));
  mount(actionsRoot, newButton, meButton);

  function drawMe() {
    const me = store.state.me;
    mount(meButton, avatar(me, 'sm'));
    meButton.setAttribute('aria-label', `Settings for @${me.handle}`);
    meButton.title = `Settings (@${me.handle})`;
  }

  // Tabs: ARIA tab pattern with roving tabindex (arrows move between tabs,
  // Tab moves on into the list).
  const tabButtons = {};
  const badges = {};
  const tablist = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Folders' },
    FOLDERS.map((f) => {
      badges[f.id] = h('span', { class: 'badge', hidden: true });
      const btn = h('a', {
        class: 'tab',
        role: 'tab',
        id: `tab-${f.id}`,
        href: f.id === 'inbox' ? hrefFor.inbox() : hrefFor.requests(),
        'aria-controls': 'conv-panel',
      }, h('span', null, f.label), badges[f.id]);
      btn.addEventListener('keydown', (ev) => {
        if (ev.key !== 'ArrowRight' && ev.key !== 'ArrowLeft') return;
        ev.preventDefault();
        const other = FOLDERS.find((x) => x.id !== f.id).id;
        go(other === 'inbox' ? hrefFor.inbox() : hrefFor.requests());
        tabButtons[other].focus();
      });
      tabButtons[f.id] = btn;
      return btn;
    }));

  // Search ------------------------------------------------------------------
  const searchInput = h('input', {
    id: 'search', class: 'input search-input', type: 'search', placeholder: 'Search by handle',
    autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', 'aria-controls': 'conv-list',
  });
  searchInput.addEventListener('input', () => {
    query = cleanHandle(searchInput.value).toLowerCase();
    drawList();
  });
  searchInput.addEventListener('keydown', (ev) => {
    // Enter on a search: open the single match, or offer to start one.
    if (ev.key !== 'Enter' || !query) return;
    const first = list.querySelector('a');
    if (first) {
      ev.preventDefault();
      first.click();
    }
  });
  const search = h('div', { class: 'search', role: 'search' },
    h('label', { for: 'search', class: 'sr-only' }, 'Search conversations by handle'),
    h('span', { class: 'icon icon-search', 'aria-hidden': 'true' }),
    searchInput);

  // The tab panel wraps the list so the <ul> keeps its list semantics
  // ("list, 5 items") for screen readers.
  const list = h('ul', { id: 'conv-list', class: 'conv-list' });
  const status = h('div', { class: 'list-status' });
  const tools = h('div', { class: 'requests-tools', hidden: true });
  const panel = h('div', { id: 'conv-panel', role: 'tabpanel', 'aria-labelledby': 'tab-inbox' }, tools, list, status);
  mount(bodyRoot, tablist, search, panel);

  function drawTabs() {
    for (const f of FOLDERS) {
      const selected = f.id === folder;
      tabButtons[f.id].setAttribute('aria-selected', String(selected));
      tabButtons[f.id].tabIndex = selected ? 0 : -1;
      const n = store.unreadCount(f.id);
      badges[f.id].hidden = n === 0;
      badges[f.id].textContent = n > 99 ? '99+' : String(n);
      tabButtons[f.id].setAttribute('aria-label', n ? `${f.label}, ${n} unread` : f.label);
    }
    panel.setAttribute('aria-labelledby', `tab-${folder}`);
  }

  function drawList() {
    // Keep keyboard focus on the same row across live re-renders.
    const focusedKey = document.activeElement && list.contains(document.activeElement)
      ? document.activeElement.dataset.key : null;

    let convs;
    if (query) {
      // Search spans both folders: people look for a person, not a folder.
      convs = store.listConvs(null).filter((c) =>
        key(c.peer.handle).includes(query) || (c.peer.name || '').toLowerCase().includes(query));
    } else {
      convs = store.listConvs(folder);
    }
    const rows = convs.map((c) => row(c));
    if (query && HANDLE_RE.test(query) && !convs.some((c) => key(c.peer.handle) === query)) {
      rows.push(h('li', { class: 'conv-item' },
        h('a', { class: 'conv conv-suggest', href: hrefFor.compose(query), dataset: { key: `new:${query}` } },
          h('span', { class: 'avatar avatar-md avatar-new', 'aria-hidden': 'true' }, '+'),
          h('span', { class: 'conv-body' },
            h('span', { class: 'conv-name' }, `Message @${query}`),
            h('span', { class: 'conv-preview' }, 'Start a new conversation')))));
    }
    mount(list, ...rows);
    const showTools = folder === 'requests' && !query && convs.length > 0;
    tools.hidden = !showTools;
    if (showTools && !tools.firstChild) {
      mount(tools, h('button', { class: 'btn btn-ghost btn-sm', type: 'button', 'aria-haspopup': 'dialog', onclick: confirmDeleteAll }, 'Delete all'));
    }

    const f = store.state.folders[folder];
    const bits = [];
    if (!query && f.loaded && convs.length === 0) {
      bits.push(h('div', { class: 'empty-list' },
        folder === 'inbox'
          ? [h('p', { class: 'empty-title' }, 'No conversations yet'),
            h('p', null, 'Start one with ', h('a', { href: hrefFor.compose() }, 'New message'), '.')]
          : [h('p', { class: 'empty-title' }, 'No message requests'),
            h('p', null, 'When someone you don’t follow writes to you while your DMs are open, it lands here first.')]));
    }
    if (query && rows.length === 0) bits.push(h('p', { class: 'empty-list' }, 'No match. Type a full handle to message someone new.'));
    if (f.loading && !f.loaded) bits.push(h('div', { class: 'skeleton-list', 'aria-hidden': 'true' }, h('div', { class: 'skeleton-row' }), h('div', { class: 'skeleton-row' })));
    if (f.error) bits.push(h('p', { class: 'form-error', role: 'alert' }, f.error, ' ', h('button', { class: 'link-btn', type: 'button', onclick: () => store.loadFolder(folder) }, 'Try again')));
    if (!query && f.next) {
      bits.push(h('button', { class: 'btn btn-ghost btn-block', type: 'button', disabled: f.loading, onclick: () => store.loadFolder(folder, { more: true }) },
        f.loading ? 'Loading…' : 'Load more conversations'));
    }
    mount(status, ...bits);
    list.setAttribute('aria-busy', String(f.loading));
    if (f.loaded && !list.classList.contains('is-loaded')) {
      list.classList.add('is-loaded');
      // Lets anyone (and our browser tests) measure time-to-inbox from the
      // Performance timeline instead of guessing from outside the page.
      if (performance.mark) performance.mark('dmhub:inbox-ready');
    }

    if (focusedKey) {
      const again = list.querySelector(`[data-key="${CSS.escape(focusedKey)}"]`);
      if (again) again.focus();
    }
  }

  function row(c) {
    const k = key(c.peer.handle);
    const last = c.last_message;
    const me = store.state.me;
    const pending = store.pendingFor(c.peer.handle);
    const lastPending = pending[pending.length - 1];
    const failed = pending.some((m) => m.status === 'failed');
    let preview = '';
    let previewClass = 'conv-preview';
    if (store.isTyping(c.peer.handle)) {
      preview = 'typing…';
      previewClass += ' is-typing';
    } else if (failed) {
      preview = 'Not sent. Open to retry.';
      previewClass += ' is-failed';
    } else if (lastPending && (!last || lastPending.at >= String(last.sent_at))) {
      preview = `You: ${oneLine(lastPending.text)}`;
    } else if (last) {
      preview = (sameHandle(last.from, me.handle) ? 'You: ' : '') + oneLine(last.text);
    } else if (c.peer.greeting) {
      preview = oneLine(c.peer.greeting);
    }
    const time = last ? last.sent_at : lastPending ? lastPending.at : null;
    const unread = c.unread > 0;
    const isRequest = c.folder === 'requests' && !query;
    return h('li', { class: ['conv-item', isRequest && 'has-tools'] },
      h('a', {
        class: ['conv', unread && 'is-unread', k === activePeer && 'is-active'],
        href: hrefFor.thread(c.peer.handle),
        'aria-current': k === activePeer ? 'page' : null,
        dataset: { key: k, handle: c.peer.handle },
      },
      avatar(c.peer),
      h('span', { class: 'conv-body' },
        h('span', { class: 'conv-top' },
          h('span', { class: 'conv-name' }, displayName(c.peer)),
          hasOwnName(c.peer) && h('span', { class: 'conv-handle' }, `@${c.peer.handle}`),
          c.peer.kind === 'business' && h('span', { class: 'tag' }, 'Business'),
          query && c.folder === 'requests' && h('span', { class: 'tag' }, 'Request'),
          time && h('time', { class: 'conv-time', datetime: time }, listTime(time))),
        h('span', { class: 'conv-bottom' },
          h('span', { class: previewClass }, preview),
          unread && h('span', { class: 'badge' }, c.unread > 99 ? '99+' : String(c.unread)),
          unread && srOnly(`, ${c.unread} unread`)))),
      isRequest && h('button', {
        class: 'btn btn-danger-ghost btn-sm conv-report', type: 'button', 'aria-haspopup': 'dialog',
        'aria-label': `Report @${c.peer.handle}`, onclick: () => reportRequest(c),
      }, 'Report'));
  }

  /** In-page confirmation (the page never uses window.confirm). */
  function confirmDeleteAll() {
    const n = store.listConvs('requests').length;
    const more = store.state.folders.requests.next ? ' and any not shown yet' : '';
    const go2 = h('button', { class: 'btn btn-danger', type: 'button' }, 'Delete all');
    const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': 'delete-all-title' },
      h('div', { class: 'dialog-head' }, h('h2', { id: 'delete-all-title', class: 'dialog-title' }, 'Delete all requests?')),
      h('div', { class: 'dialog-body' },
        h('p', null, `This deletes the ${n} message request${n === 1 ? '' : 's'} shown${more}. `,
          'The senders aren’t told, and aren’t blocked: if they write again, it lands in your requests again.'),
        h('div', { class: 'person-actions' }, go2,
          h('button', { class: 'btn btn-ghost', type: 'button', onclick: () => dlg.close() }, 'Cancel'))));
    dlg.addEventListener('close', () => dlg.remove());
    go2.addEventListener('click', async () => {
      go2.disabled = true;
      try {
        const done = await store.deleteAllRequests();
        toast(`Deleted ${done} request${done === 1 ? '' : 's'}.`, { kind: 'info' });
        if (activePeer && !store.conv(activePeer)) go(hrefFor.requests(), { replace: true });
      } catch (e) {
        toast(e.detail);
      }
      dlg.close();
    });
    document.body.appendChild(dlg);
    dlg.showModal();
  }

  function reportRequest(c) {
    const k = key(c.peer.handle);
    const last = c.last_message && !sameHandle(c.last_message.from, store.state.me.handle) ? c.last_message : null;
    openReportDialog(c.peer.handle, {
      messageId: last ? last.id : null,
      onDone: () => { if (activePeer === k) go(hrefFor.requests(), { replace: true }); },
    });
  }

  function draw() {
    drawTabs();
    drawList();
  }

  store.on('convs', draw);
  store.on('typing', drawList);
  store.on('thread', drawList); // outbox changes show in previews
  store.on('me', drawMe);
  drawMe();
  draw();

  // Re-render relative times ("Mon", "14:05") now and then.
  setInterval(drawList, 60000);

  return {
    setRoute(route) {
      if (route.name === 'list') folder = route.folder;
      else if (route.name === 'thread') {
        const c = store.conv(route.peer);
        if (c) folder = c.folder;
      }
      activePeer = route.name === 'thread' ? key(route.peer) : null;
      draw();
    },
    focusSearch() {
      searchInput.focus();
    },
  };
}
