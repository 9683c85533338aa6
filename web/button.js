/* dmhub Message button. Turns each <a class="dmhub-message-button"> on the page
   into a "Message @handle" button that opens the link. No dependencies; one
   global (window.dmhub); styles live in a shadow root as a constructed
   stylesheet, which a host CSP without 'unsafe-inline' still allows. Without
   this script the plain link works the same. */
(function () {
  'use strict';
  var w = window, d = document;
  if (w.dmhub && w.dmhub.render) { w.dmhub.render(); return; }
  var SEL = 'a.dmhub-message-button';
  var done = typeof WeakSet === 'function' ? new WeakSet() : null;
  var CSS = ':host{all:initial;display:inline-block;vertical-align:middle;' +
    '--bg:#0b63ce;--fg:#fff;--hover:#0953ad;--ring:#0f1419}' +
    '@media (prefers-color-scheme:dark){:host{--bg:#eff3f4;--fg:#0f1419;--hover:#d7dbdc;--ring:#fff}}' +
    ':host([data-theme=light]){--bg:#0b63ce;--fg:#fff;--hover:#0953ad;--ring:#0f1419}' +
    ':host([data-theme=dark]){--bg:#eff3f4;--fg:#0f1419;--hover:#d7dbdc;--ring:#fff}' +
    'a{all:initial;display:inline-flex;align-items:center;gap:.5em;box-sizing:border-box;height:40px;' +
    'padding:0 18px;border-radius:999px;background:var(--bg);color:var(--fg);' +
    'font:600 15px/1 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;text-decoration:none;' +
    'white-space:nowrap;cursor:pointer;transition:background .15s}' +
    'a:hover{background:var(--hover)}a:focus-visible{outline:2px solid var(--ring);outline-offset:2px}' +
    ':host([data-size=small]) a{height:30px;padding:0 12px;font-size:13px;gap:.4em}' +
    'svg{width:1.15em;height:1.15em;flex:none;fill:none;stroke:currentColor;stroke-width:2;' +
    'stroke-linecap:round;stroke-linejoin:round}';
  var sheet = null;

  function styles(root) {
    // A constructed stylesheet is not an inline <style>: a host CSP without
    // 'unsafe-inline' lets it apply.
    try {
      if (!sheet) { sheet = new CSSStyleSheet(); sheet.replaceSync(CSS); }
      root.adoptedStyleSheets = [sheet];
    } catch (e) {
      var st = d.createElement('style'); // older browsers; their hosts' CSP permitting
      st.textContent = CSS;
      root.appendChild(st);
    }
  }

  var SVG = 'http://www.w3.org/2000/svg';
  function icon() {
    var svg = d.createElementNS(SVG, 'svg'), path = d.createElementNS(SVG, 'path');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    path.setAttribute('d', 'M21 12a8 8 0 0 1-11.6 7.1L4 20.5l1.4-4.9A8 8 0 1 1 21 12z');
    svg.appendChild(path);
    return svg;
  }

  function handleOf(a) {
    try {
      var r = new URL(a.href, d.baseURI).searchParams.get('recipient') || '';
      return r.replace(/^@+/, '').slice(0, 15);
    } catch (e) { return ''; }
  }

  function one(a) {
    if ((done && done.has(a)) || !a.parentNode) return;
    if (done) done.add(a);
    var handle = handleOf(a);
    var text = (a.textContent || '').replace(/\s+/g, ' ').trim() ||
      (handle ? 'Message @' + handle : 'Message');
    // A custom element name: the host page's own selectors (span, a) miss it.
    var host = d.createElement('dmhub-button');
    var size = a.getAttribute('data-size');
    host.setAttribute('data-size', size === 'small' ? 'small' : 'large');
    var theme = a.getAttribute('data-theme');
    if (theme === 'light' || theme === 'dark') host.setAttribute('data-theme', theme);
    if (!host.attachShadow) return; // very old browser: the plain link stays
    var root = host.attachShadow({ mode: 'open' });
    styles(root);
    // The link itself becomes the button: it moves into the shadow root, where
    // the page's selectors and styles do not reach it, and keeps its href,
    // target and class. One element, one name, one tab stop.
    a.parentNode.insertBefore(host, a);
    a.textContent = '';
    a.appendChild(icon());
    var label = d.createElement('span');
    label.textContent = text;
    a.appendChild(label);
    a.setAttribute('part', 'button');
    if (a.target && !a.rel) a.rel = 'noopener';
    root.appendChild(a);
  }

  function render(scope) {
    var list = (scope && scope.querySelectorAll ? scope : d).querySelectorAll(SEL);
    for (var i = 0; i < list.length; i++) {
      try { one(list[i]); } catch (e) { /* leave that link as it is */ }
    }
  }

  var queued = false;
  function later() {
    if (queued) return;
    queued = true;
    (w.queueMicrotask || setTimeout)(function () { queued = false; render(); });
  }

  w.dmhub = { render: render, version: 1 };
  render();
  if (w.MutationObserver) {
    // Only additions that are or hold a button link cost a scan, so a busy
    // page's own DOM churn stays cheap.
    new MutationObserver(function (records) {
      for (var i = 0; i < records.length; i++) {
        var added = records[i].addedNodes;
        for (var j = 0; j < added.length; j++) {
          var n = added[j];
          if (n.nodeType === 1 && (n.matches(SEL) || n.querySelector(SEL))) { later(); return; }
        }
      }
    }).observe(d.documentElement, { childList: true, subtree: true });
  }
  if (d.readyState === 'loading') d.addEventListener('DOMContentLoaded', function () { render(); });
})();
