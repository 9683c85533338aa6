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
 * Whether and why the person can be messaged.
 * Returns {ok, title, reason, action}; action is 'follow' | 'unblock' | null,
 * the one thing the person can do that would help.
 */
export function verdict(rel, user) {
  const at = `@${user.handle}`;
  if (rel.can_message) {
    let reason;
    if (rel.followed_by) reason = `${at} follows you.`;
    else if (user.open_dms) reason = `${at} receives messages from anyone. If they don’t follow you, your first message waits in their requests until they accept it.`;
    else reason = 'You’ve talked before.';
    return { ok: true, title: `You can message ${at}`, reason, action: null };
  }
  if (rel.blocking) {
    return { ok: false, title: `You blocked ${at}`, reason: 'Neither of you can message the other while the block is on. Unblock them to write again.', action: 'unblock' };
  }
  if (rel.blocked_by) {
    return { ok: false, title: `You can’t message ${at}`, reason: `${at} isn’t accepting messages from you.`, action: null };
  }
  if (!rel.followed_by && !user.open_dms) {
    const reason = rel.following
      ? `${at} only receives messages from people they follow. You follow them; once they follow you back, you can write.`
      : `${at} only receives messages from people they follow. Follow them: if they follow you back, you can write.`;
    return { ok: false, title: `You can’t message ${at} yet`, reason, action: rel.following ? null : 'follow' };
  }
  return { ok: false, title: `You can’t message ${at} right now`, reason: 'dmhub isn’t letting new conversations through from your account at the moment.', action: null };
}
