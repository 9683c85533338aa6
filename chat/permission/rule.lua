-- The permission rule of PRODUCT.md again, in Lua, so that send.lua can decide
-- and store a message in one atomic script call. It mirrors decide() in rule.py
-- clause for clause, in the same order, with the same reasons and folders;
-- tests/test_rule_lua.py proves they agree on every input. Change both or neither.
--
-- f holds the facts of rule.py's Facts as Lua booleans (never 0/1: 0 is true in
-- Lua). same_account is not here: no script runs for A writing to A.
-- Returns allowed, the reason (a rule.py Reason value), and the folder or nil.
local function decide(f)
  if not f.sender_exists then
    return false, 'unknown_sender'
  end
  if not f.recipient_exists then
    return false, 'unknown_recipient'
  end
  if f.sender_suspended then
    return false, 'suspended'
  end
  if f.recipient_suspended then
    return false, 'cannot_receive'
  end
  -- A block beats every clause below, in both directions.
  if f.sender_blocks_recipient then
    return false, 'you_blocked'
  end
  if f.recipient_blocks_sender then
    return false, 'cannot_receive'
  end
  if f.recipient_follows_sender then
    return true, 'follows_you', 'inbox'
  end
  if f.recipient_wrote_to_sender then
    return true, 'reply', 'inbox'
  end
  -- Only open DMs could let A in now, which is what a restriction takes away.
  if f.sender_restricted then
    return false, 'restricted'
  end
  if f.recipient_open_dms then
    if f.recipient_has_inbox_conversation then
      return true, 'accepted', 'inbox'
    end
    return true, 'open_dms', 'requests'
  end
  return false, 'closed'
end
