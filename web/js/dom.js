// Tiny DOM helpers. Everything user-supplied goes through text nodes: this
// module has no way to set innerHTML, so no view can accidentally render a
// message or a name as markup.

/**
 * Create an element.
 *   h('button', {class: 'btn', type: 'button', onclick: fn, 'aria-label': 'x'}, 'text', child)
 * Strings and numbers become text nodes; null/false children are skipped so
 * callers can write `cond && h(...)`.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') {
        el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
      } else if (key.startsWith('on') && typeof value === 'function') {
        el.addEventListener(key.slice(2), value);
      } else if (key === 'dataset') {
        Object.assign(el.dataset, value);
      } else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'hidden') {
        // Properties, not attributes, so later reads reflect what the user sees.
        el[key] = value;
      } else if (key === 'style') {
        // Guard: an inline style attribute would be blocked by our CSP anyway.
        throw new Error('use classes, not inline styles');
      } else {
        el.setAttribute(key, value === true ? '' : String(value));
      }
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false || child === true) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replace all children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

let idCounter = 0;
/** Unique ids for label/aria wiring between elements built in code. */
export function uid(prefix = 'id') {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** Text for screen readers only (visually hidden via CSS). */
export function srOnly(text) {
  return h('span', { class: 'sr-only' }, text);
}

const announcer = () => document.getElementById('announcer');
let announceTimer = null;
/**
 * Speak a short sentence through the polite live region. Clearing first and
 * writing on the next frame makes repeated identical sentences announce again.
 */
export function announce(text) {
  const el = announcer();
  if (!el) return;
  clearTimeout(announceTimer);
  el.textContent = '';
  announceTimer = setTimeout(() => { el.textContent = text; }, 50);
}

let toastRoot = null;
/** Transient notice for errors that have no better place on screen. */
export function toast(text, { kind = 'error', timeout = 6000 } = {}) {
  if (!toastRoot) {
    toastRoot = h('div', { class: 'toasts', role: 'alert', 'aria-live': 'assertive' });
    document.body.appendChild(toastRoot);
  }
  const item = h('div', { class: ['toast', `toast-${kind}`] }, text);
  toastRoot.appendChild(item);
  setTimeout(() => item.remove(), timeout);
}

/** Avatar bubble: initials on a colour derived from the handle. */
export function avatar(user, size = 'md') {
  const handle = (user && user.handle) || '?';
  const label = (user && (user.name || user.handle)) || '?';
  const letters = initials(label);
  return h('span', { class: ['avatar', `avatar-${size}`, `hue-${hueOf(handle)}`], 'aria-hidden': 'true' }, letters);
}

function initials(name) {
  const parts = String(name).trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0) return '?';
  const first = Array.from(parts[0])[0] || '';
  const second = parts.length > 1 ? Array.from(parts[parts.length - 1])[0] || '' : '';
  return (first + second).toUpperCase();
}

// Eight fixed palettes in CSS (hue-0..hue-7) keep contrast checked once,
// instead of computing arbitrary colours at run time.
function hueOf(handle) {
  let x = 0;
  for (const ch of handle.toLowerCase()) x = (x * 31 + ch.charCodeAt(0)) >>> 0;
  return x % 8;
}

/**
 * Whether the person chose a name of their own. Accounts created without one
 * get their handle as name; showing "bob @bob" would just stutter.
 */
export function hasOwnName(user) {
  return Boolean(user && user.name && user.name.trim() && user.name.trim().toLowerCase() !== String(user.handle).toLowerCase());
}

/** What to call a person: their name, or "@handle" when they have none. */
export function displayName(user) {
  if (!user) return '';
  return hasOwnName(user) ? user.name : `@${user.handle}`;
}
