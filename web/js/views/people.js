// Plain-language explanations of the permission rule (PRODUCT.md), shared by
// the New message check, the conversation screen and the profile card, so
// the same situation is always described with the same words.

/** "You follow each other" and friends. */
export function relationText(rel, user) {
  if (!rel) return '';
  if (rel.blocking) return `You blocked @${user.handle}`;
  if (rel.following && rel.followed_by) return 'You follow each other';
  if (rel.followed_by) return 'Follows you';
  if (rel.following) return `You follow @${user.handle}`;
  return 'You don’t follow each other';
}

/**
 * Whether and why the person can be messaged, read from the server's own
 * decision (`relationship.reason`, PROTOCOL.md v1.1) so that the page never
 * guesses differently from the send that would follow.
 * Returns {ok, title, reason, action}; action is 'follow' | 'unblock' | null,
 * the one thing the person can do that would help.
 */
export function verdict(rel, user) {
  const at = `@${user.handle}`;
  if (rel.can_message) {
    let reason;
    if (rel.followed_by) reason = `${at} follows you, so your messages go straight to their inbox.`;
    else if (user.open_dms) reason = `${at} receives messages from anyone. Unless they follow you or wrote to you first, your first message waits in their requests until they accept it.`;
    // Neither a follow nor open DMs: the reply rule is what lets you in.
    else reason = `${at} wrote to you, so you can reply even though they otherwise receive messages only from people they follow.`;
    return { ok: true, title: `You can message ${at}`, reason, action: null };
  }
  switch (reasonOf(rel, user)) {
    case 'self':
      return { ok: false, title: 'That’s you', reason: 'You can’t send a message to yourself.', action: null };
    case 'you_blocked':
      return { ok: false, title: `You blocked ${at}`, reason: 'Neither of you can message the other while the block is on. Unblock them to write again.', action: 'unblock' };
    case 'suspended':
      return { ok: false, title: 'Your account is suspended', reason: 'A suspended account can’t send messages. An operator of this server can lift the suspension.', action: null };
    case 'restricted':
      return {
        ok: false,
        title: `You can’t start a conversation with ${at}`,
        reason: 'Several people reported messages from your account, so it is restricted: you can write only to people who follow you or have written to you. An operator of this server can lift the restriction.',
        action: null,
      };
    case 'closed': {
      const reason = rel.following
        ? `${at} only receives messages from people they follow. You follow them; once they follow you back, you can write.`
        : `${at} only receives messages from people they follow. Follow them: if they follow you back, you can write.`;
      return { ok: false, title: `You can’t message ${at} yet`, reason, action: rel.following ? null : 'follow' };
    }
    default:
      // cannot_receive: deliberately vague (it may be a block, or a suspension).
      return { ok: false, title: `You can’t message ${at}`, reason: `${at} can’t receive messages from you.`, action: null };
  }
}

/** The server's reason; derived from the booleans only for a server without it. */
function reasonOf(rel, user) {
  if (rel.reason) return rel.reason;
  if (rel.blocking) return 'you_blocked';
  if (rel.blocked_by) return 'cannot_receive';
  if (!rel.followed_by && !user.open_dms) return 'closed';
  return 'cannot_receive';
}

/** Who can write to them, in words that agree with `verdict`. */
export function dmsText(rel, user) {
  const at = `@${user.handle}`;
  if (user.open_dms) return `${at} receives messages from anyone.`;
  if (rel && rel.can_message && !rel.followed_by) return `${at} receives messages from people they follow and people they wrote to, like you.`;
  return `${at} receives messages only from people they follow and people they wrote to.`;
}
