-- Store one message and publish it, atomically: the whole send in one round trip.
--
-- KEYS: 1 cid:{s}   2 msgs:{a}:{b}   3 ev:{s}   4 ev:{r}   5 cin:{s}   6 creq:{s}
--       7 cin:{r}   8 creq:{r}   9 unread:{r}   10 wrote:{s}   11 seq   12 ch:{s}   13 ch:{r}
--       14 rd:{s}   15 unread:{s}
-- ARGV: 1 client_id or ''   2 sender (lower case)   3 recipient (lower case)
--       4 recipient folder decided by the permission rule ('inbox' | 'requests')
--       5 the message JSON after its id: ',"from":...}'   6 event retention (entries)
--       7 origin connection id or '-'
-- Returns {1, id, sender cursor, recipient cursor, folder} for a new message, or
-- {0, id, peer} when client_id was seen before (nothing is written).
local client_id, s, r = ARGV[1], ARGV[2], ARGV[3]

if client_id ~= '' then
  local seen = redis.call('HGET', KEYS[1], client_id)
  if seen then
    local bar = string.find(seen, '|', 1, true)
    return {0, string.sub(seen, 1, bar - 1), string.sub(seen, bar + 1)}
  end
end

local id = tostring(redis.call('INCR', KEYS[11]))
local message = '{"id":"' .. id .. '"' .. ARGV[5]
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

-- The rule decided the folder from facts read a moment ago; if the recipient
-- accepted in between, the conversation must not sit in both folders.
local folder = ARGV[4]
if folder == 'requests' and redis.call('ZSCORE', KEYS[7], s) then
  folder = 'inbox'
end
if folder == 'inbox' then
  redis.call('ZREM', KEYS[8], s)
  redis.call('ZADD', KEYS[7], id, s)
else
  redis.call('ZADD', KEYS[8], id, s)
end
redis.call('HINCRBY', KEYS[9], s, 1)

local retention = ARGV[6]
local sender_body = '{"type":"message","message":' .. message .. ',"folder":"inbox"'
local recipient_body = '{"type":"message","message":' .. message .. ',"folder":"' .. folder .. '"'
-- The sender's event remembers the socket it came from (o), so that a replay to
-- that same socket skips it, as live delivery does: that socket had the ack.
local sender_cursor = redis.call('XADD', KEYS[3], 'MAXLEN', '~', retention, '*',
  'p', r, 'f', sender_body, 'o', ARGV[7])
local recipient_cursor = redis.call('XADD', KEYS[4], 'MAXLEN', '~', retention, '*', 'p', s, 'f', recipient_body)

redis.call('PUBLISH', KEYS[12], 'm ' .. sender_cursor .. ' ' .. r .. ' ' .. ARGV[7] .. '\n'
  .. sender_body .. ',"cursor":"' .. sender_cursor .. '"}')
redis.call('PUBLISH', KEYS[13], 'm ' .. recipient_cursor .. ' ' .. s .. ' -\n'
  .. recipient_body .. ',"cursor":"' .. recipient_cursor .. '"}')

return {1, id, sender_cursor, recipient_cursor, folder}
