-- A read receipt, step 1 of 2, in the reader's slot (docs/architecture.md,
-- "Split operations"): move the reader's read pointer forward, recount their
-- unread, tell the reader's own sockets, and when a receipt goes to the peer,
-- record it in the outbox; step 2 (receipt.lua, in the peer's slot) delivers it.
-- The pointer and the count are fields of the reader's hash (`r:<peer>`,
-- `u:<peer>`, chat/store/keys.py), read in one HMGET and written in one HSET.
--
-- KEYS: 1 user:{me}   2 msgs:{me}:peer   3 ev:{me}   4 ch:{me}
--       5 blk:{me}   6 blkby:{me}   7 the outbox of me's slot
-- ARGV: 1 me (lower case)   2 peer (lower case)   3 up_to (message id)
--       4 the read frame body without its cursor   5 send a receipt to the peer ('1'|'0')
--       6 event retention
-- Returns {-1} when up_to is not a message of this conversation (or me has
-- no account), {0} when the pointer was already there or past it, {1} when it
-- moved, {1, outbox entry} when it moved and a receipt is on its way to the peer.
local me, peer, up_to = ARGV[1], ARGV[2], ARGV[3]

if #redis.call('ZRANGEBYSCORE', KEYS[2], up_to, up_to, 'LIMIT', 0, 1) == 0 then
  return {-1}
end
-- Only a live account's hash is written: one written for a handle without an
-- account would take it (create_user.lua), and a tombstone keeps no state.
local mine = redis.call('HMGET', KEYS[1], 'handle', 'r:' .. peer)
if not mine[1] then
  return {-1}
end
local current = mine[2]
if current and tonumber(current) >= tonumber(up_to) then
  return {0}
end

-- Unread is what the peer wrote after the pointer (members start with the
-- sender's handle, then a space or /agent); usually a handful of entries.
-- "0" is written rather than the field deleted, as a reply does (send_parts.lua):
-- one call either way.
local unread = 0
local n = #peer
for _, stored in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. up_to, '+inf')) do
  local after = string.sub(stored, n + 1, n + 1)
  if string.sub(stored, 1, n) == peer and (after == ' ' or after == '/') then
    unread = unread + 1
  end
end
redis.call('HSET', KEYS[1], 'r:' .. peer, up_to, 'u:' .. peer, string.format('%d', unread))

local body = ARGV[4]
local cursor = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'p', peer, 'f', body)
redis.call('SPUBLISH', KEYS[4], 'r ' .. cursor .. ' ' .. peer .. ' -\n' .. body .. ',"cursor":"' .. cursor .. '"}')
-- Checked here too, so that a block made after the caller looked stops the
-- receipt: the reader's own blocks, and the mirror of the peer's.
local blocked = redis.call('ZSCORE', KEYS[5], peer) or redis.call('ZSCORE', KEYS[6], peer)
if ARGV[5] == '1' and not blocked then
  return {1, outbox_add(KEYS[7], 'receipt', cjson.encode({me = me, peer = peer, body = body, up_to = up_to}))}
end
return {1}
