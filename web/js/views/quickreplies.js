// Quick replies: a business's tappable options. Tapping one sends its label
// as the message, with its metadata as `quick_reply` for the business's bot.

import { h } from '../dom.js';

/** A row of chips, or null when there is nothing to offer. */
export function quickReplyChips(replies, onPick, { label = 'Quick replies' } = {}) {
  if (!Array.isArray(replies) || replies.length === 0) return null;
  return h('div', { class: 'chips', role: 'group', 'aria-label': label },
    replies.map((reply) => h('button', {
      class: 'qr-chip', type: 'button',
      onclick: (ev) => {
        // One tap, one message: the row goes quiet until the view redraws.
        for (const b of ev.currentTarget.parentNode.querySelectorAll('button')) b.disabled = true;
        onPick(reply);
      },
    }, reply.label)));
}
