// Formatting helpers: times, counts, handles. Pure functions, no DOM.

export const MAX_LEN = 10000;
export const HANDLE_RE = /^[A-Za-z0-9_]{1,15}$/;

/** Handles are case-insensitive everywhere; this is the one place we fold them. */
export function key(handle) {
  return String(handle || '').toLowerCase();
}

export function sameHandle(a, b) {
  return key(a) === key(b);
}

/** Strip a leading "@" and spaces the person may have typed. */
export function cleanHandle(input) {
  return String(input || '').trim().replace(/^@+/, '');
}

// Trimming exactly as the server trims (chat/protocol/validation.py, trim):
// spaces, line breaks, controls, format characters (zero-width spaces, word
// joiners, byte-order marks, bidi controls) and the letters that render as
// nothing, at either end. String.prototype.trim keeps some of these and the
// server would then count more than the page did.
const TRIMS = /[\p{Zs}\p{Zl}\p{Zp}\p{Cc}\p{Cf}\u115F\u1160\u3164\uFFA0\u2800]/u;
// Marks that show nothing on their own (validation.py, INVISIBLE_MARKS).
const INVISIBLE = /[\u034F\u17B4\u17B5\u180B-\u180D\u180F\uFE00-\uFE0F]/u;

function trimmedPoints(text) {
  const points = Array.from(String(text));
  let start = 0;
  let end = points.length;
  while (start < end && TRIMS.test(points[start])) start += 1;
  while (end > start && TRIMS.test(points[end - 1])) end -= 1;
  return points.slice(start, end);
}

/** The text as the server will store it. */
export function trimText(text) {
  return trimmedPoints(text).join('');
}

/** Nothing a reader could see: the server refuses such a message. */
export function isBlank(text) {
  return trimmedPoints(text).every((c) => TRIMS.test(c) || INVISIBLE.test(c));
}

/**
 * Length as the server counts it: code points of the trimmed text (a JS
 * string's .length counts UTF-16 units, which would over-count emoji).
 */
export function textLength(text) {
  return trimmedPoints(text).length;
}

const nf = new Intl.NumberFormat();
export function num(n) {
  return nf.format(n);
}

function toDate(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? null : d;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const weekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
const shortDateFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const longDateFmt = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });

function startOfDay(d) {
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
}

/** Clock time of a message, e.g. "14:05". */
export function clock(iso) {
  const d = toDate(iso);
  return d ? timeFmt.format(d) : '';
}

/** Full timestamp for tooltips and <time datetime>. */
export function fullTime(iso) {
  const d = toDate(iso);
  return d ? fullFmt.format(d) : '';
}

/** Compact time for the inbox list: today → clock, this week → weekday, else date. */
export function listTime(iso, now = new Date()) {
  const d = toDate(iso);
  if (!d) return '';
  const days = Math.round((startOfDay(now) - startOfDay(d)) / 86400000);
  if (days <= 0) return timeFmt.format(d);
  if (days < 7) return weekdayFmt.format(d);
  if (d.getFullYear() === now.getFullYear()) return shortDateFmt.format(d);
  return longDateFmt.format(d);
}

/** Day separator label in a conversation. */
export function dayLabel(iso, now = new Date()) {
  const d = toDate(iso);
  if (!d) return '';
  const days = Math.round((startOfDay(now) - startOfDay(d)) / 86400000);
  if (days === 0) return 'Today';
  if (days === 1) return 'Yesterday';
  if (d.getFullYear() === now.getFullYear()) return dayFmt.format(d);
  return longDateFmt.format(d);
}

export function dayKey(iso) {
  const d = toDate(iso);
  return d ? `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}` : '';
}

/** Milliseconds between two ISO times (b - a). */
export function gapMs(a, b) {
  const da = toDate(a);
  const db = toDate(b);
  return da && db ? db - da : Infinity;
}

/** One line of preview text: collapse whitespace so line breaks don't leak into the list. */
export function oneLine(text, max = 140) {
  const s = String(text || '').replace(/\s+/g, ' ').trim();
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** A client_id that is unique per sender without coordination. */
export function newClientId() {
  if (globalThis.crypto && typeof crypto.randomUUID === 'function') {
    try { return `w-${crypto.randomUUID()}`; } catch { /* insecure context: fall through */ }
  }
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return `w-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}
