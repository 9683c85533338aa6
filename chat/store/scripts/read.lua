-- A read receipt, step 1 of 2, in the reader's slot (docs/architecture.md,
-- "Split operations"): move the reader's read pointer forward, recount their
-- unread, tell the reader's own sockets, and when a receipt goes to the peer,
-- record it in the outbox; step 2 (receipt.lua, in the peer's slot) delivers it.
--
-- KEYS: 1 rd:{me}   2 unread:{me}   3 msgs:{me}:peer   4 ev:{me}   5 ch:{me}
--       6 blk:{me}   7 blkby:{me}   8 the outbox of me's slot
-- ARGV: 1 me (lower case)   2 peer (lower case)   3 up_to (message id)
--       4 the read frame body without its cursor   5 send a receipt to the peer ('1'|'0')
--       6 event retention
-- Returns {-1} when up_to is not a message of this conversation, {0} when the
-- pointer was already there or past it, {1} when it moved, {1, outbox entry}
-- when it moved and a receipt is on its way to the peer.
local me, peer, up_to = ARGV[1], ARGV[2], ARGV[3]

if #redis.call('ZRANGEBYSCORE', KEYS[3], up_to, up_to, 'LIMIT', 0, 1) == 0 then
  return {-1}
end
local current = redis.call('HGET', KEYS[1], peer)
if current and tonumber(current) >= tonumber(up_to) then
  return {0}
end
redis.call('HSET', KEYS[1], peer, up_to)

-- Unread is what the peer wrote after the pointer (members start with the
-- sender's handle, then a space or /agent); usually a handful of entries.
local unread = 0
local n = #peer
for _, stored in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. up_to, '+inf')) do
  local after = string.sub(stored, n + 1, n + 1)
  if string.sub(stored, 1, n) == peer and (after == ' ' or after == '/') then
    unread = unread + 1
  end
end
if unread == 0 then
  redis.call('HDEL', KEYS[2], peer)
else
  redis.call('HSET', KEYS[2], peer, unread)
end

local body = ARGV[4]
local cursor = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'p', peer, 'f', body)
redis.call('SPUBLISH', KEYS[5], 'r ' .. cursor .. ' ' .. peer .. ' -\n' .. body .. ',"cursor":"' .. cursor .. '"}')
-- Checked here too, so that a block made after the caller looked stops the
-- receipt: the reader's own blocks, and the mirror of the peer's.
local blocked = redis.call('ZSCORE', KEYS[6], peer) or redis.call('ZSCORE', KEYS[7], peer)
if ARGV[5] == '1' and not blocked then
  return {1, outbox_add(KEYS[8], 'receipt', cjson.encode({me = me, peer = peer, body = body, up_to = up_to}))}
end
return {1}
