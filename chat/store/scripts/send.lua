-- Decide, store and publish one message, atomically: the whole send in one
-- round trip. Redis runs this with rule.lua (chat/permission) in front of it,
-- which defines decide(); the two are loaded as one script by store.py.
--
-- KEYS: 1 cid:{s}   2 msgs:{a}:{b}   3 ev:{s}   4 ev:{r}   5 cin:{s}   6 creq:{s}
--       7 cin:{r}   8 creq:{r}   9 unread:{r}   10 wrote:{s}   11 seq   12 ch:{s}   13 ch:{r}
--       14 rd:{s}   15 unread:{s}   16 user:{s}   17 user:{r}   18 blk:{s}   19 blk:{r}
--       20 fwing:{r}   21 wrote:{r}
-- ARGV: 1 client_id or ''   2 sender (lower case)   3 recipient (lower case), not the sender
--       4 the text as a JSON string   5 sent_at (ISO 8601)   6 client_id as JSON (string or null)
--       7 event retention (entries)   8 origin connection id or '-'
--       9 optional message fields as JSON text (',"ref":"x"'...) or ''
-- Returns {1, id, message JSON, folder} for a new message; {0, id, peer} when
-- client_id was seen before; {2, reason, recipient's handle or ''} when the rule
-- refuses. Only the first writes anything.
local client_id, s, r = ARGV[1], ARGV[2], ARGV[3]

-- Before the rule: a retry of a send stored before the rule changed still gets
-- its original message back, as the contract promises.
if client_id ~= '' then
  local seen = redis.call('HGET', KEYS[1], client_id)
  if seen then
    local bar = string.find(seen, '|', 1, true)
    return {0, string.sub(seen, 1, bar - 1), string.sub(seen, bar + 1)}
  end
end

-- The same reads and the same readings of them as facts.lua and Store.pair_facts.
local sender = redis.call('HMGET', KEYS[16], 'handle', 'active')
local recipient = redis.call('HMGET', KEYS[17], 'handle', 'active', 'open_dms')
local recipient_exists = recipient[1] ~= false
local allowed, reason, folder = decide({
  sender_exists = sender[1] ~= false,
  recipient_exists = recipient_exists,
  sender_active = sender[2] ~= '0',
  recipient_active = recipient_exists and recipient[2] ~= '0',
  sender_blocks_recipient = redis.call('ZSCORE', KEYS[18], r) ~= false,
  recipient_blocks_sender = redis.call('ZSCORE', KEYS[19], s) ~= false,
  recipient_follows_sender = redis.call('ZSCORE', KEYS[20], s) ~= false,
  recipient_open_dms = recipient_exists and recipient[3] == '1',
  recipient_wrote_to_sender = redis.call('SISMEMBER', KEYS[21], s) == 1,
  recipient_has_inbox_conversation = redis.call('ZSCORE', KEYS[7], s) ~= false,
})
if not allowed then
  return {2, reason, recipient[1] or ''}
end

-- Handles are meant to be [A-Za-z0-9_] (validation.HANDLE_RE), which JSON needs
-- no escaping for; anything else found in a user hash is encoded, not trusted.
local function json_handle(handle)
  if string.find(handle, '[^A-Za-z0-9_]') then
    return cjson.encode(handle)
  end
  return '"' .. handle .. '"'
end

-- The bytes clients get in the ack, the events and the history, field order
-- included: id, from, to, text, sent_at, client_id, then the optional fields.
local id = tostring(redis.call('INCR', KEYS[11]))
local message = '{"id":"' .. id .. '","from":' .. json_handle(sender[1])
  .. ',"to":' .. json_handle(recipient[1]) .. ',"text":' .. ARGV[4]
  .. ',"sent_at":"' .. ARGV[5] .. '","client_id":' .. ARGV[6] .. ARGV[9] .. '}'
redis.call('XADD', KEYS[2], id .. '-0', 'j', message, 's', s)
redis.call('SADD', KEYS[10], r)
if client_id ~= '' then
  redis.call('HSET', KEYS[1], client_id, id .. '|' .. r)
end

-- Writing to someone accepts their request, so the sender's side is always inbox;
-- and a reply means the sender has read the conversation up to it.
redis.call('ZREM', KEYS[6], r)
redis.call('ZADD', KEYS[5], id, r)
redis.call('HSET', KEYS[14], r, id)
redis.call('HDEL', KEYS[15], r)

-- The folder comes from facts read in this same script, so it cannot be stale:
-- 'requests' means the recipient has no inbox entry for the sender.
if folder == 'inbox' then
  redis.call('ZREM', KEYS[8], s)
  redis.call('ZADD', KEYS[7], id, s)
else
  redis.call('ZADD', KEYS[8], id, s)
end
redis.call('HINCRBY', KEYS[9], s, 1)

local retention = ARGV[7]
local sender_body = '{"type":"message","message":' .. message .. ',"folder":"inbox"'
local recipient_body = '{"type":"message","message":' .. message .. ',"folder":"' .. folder .. '"'
-- The sender's event remembers the socket it came from (o), so that a replay to
-- that same socket skips it, as live delivery does: that socket had the ack.
local sender_cursor = redis.call('XADD', KEYS[3], 'MAXLEN', '~', retention, '*',
  'p', r, 'f', sender_body, 'o', ARGV[8])
local recipient_cursor = redis.call('XADD', KEYS[4], 'MAXLEN', '~', retention, '*', 'p', s, 'f', recipient_body)

redis.call('PUBLISH', KEYS[12], 'm ' .. sender_cursor .. ' ' .. r .. ' ' .. ARGV[8] .. '\n'
  .. sender_body .. ',"cursor":"' .. sender_cursor .. '"}')
redis.call('PUBLISH', KEYS[13], 'm ' .. recipient_cursor .. ' ' .. s .. ' -\n'
  .. recipient_body .. ',"cursor":"' .. recipient_cursor .. '"}')

return {1, id, message, folder}
