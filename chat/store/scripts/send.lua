-- Decide, store and publish one message, atomically: the whole send in one
-- round trip. Redis runs this with rule.lua (chat/permission) in front of it,
-- which defines decide(); the two are loaded as one script by store.py.
--
-- KEYS: 1 cid:{s}   2 msgs:{s}:r   3 ev:{s}   4 ev:{r}   5 cin:{s}   6 creq:{s}
--       7 cin:{r}   8 creq:{r}   9 unread:{r}   10 wrote:{s}   11 idgen:{r}   12 ch:{s}   13 ch:{r}
--       14 rd:{s}   15 unread:{s}   16 user:{s}   17 user:{r}   18 blk:{s}   19 blk:{r}
--       20 fwing:{r}   21 wrote:{r}   22 msgrate:{s}   23 newconv:{s}   24 reqrecv:{r}
--       25 tconv:{r}   26 msgs:{r}:s   27 heard:{r}
-- ARGV: 1 client_id or ''   2 sender (lower case)   3 recipient (lower case), not the sender
--       4 the text as a JSON string   5 sent_at (ISO 8601)   6 client_id as JSON (string or null)
--       7 event retention (entries)   8 origin connection id or '-'
--       9 optional message fields as JSON text (',"ref":"x"'...) or ''
--       10 messages burst   11 its period (ms)   12 new conversations   13 their window (ms)
--       14 requests received   15 their window (ms); a limit of 0 is off
--       16 seconds a client_id is remembered (0: forever)
--       17 the agent's handle when an agent sends for the business, or ''
--       18 the parity of this direction's ids (msgid.direction)
-- Returns {1, id, message JSON, folder} for a new message; {0, id, peer} when
-- client_id was seen before; {2, reason, recipient's handle or ''} when the rule
-- refuses; {3, limit name, milliseconds to wait} when a limit refuses. Only the
-- first writes anything.
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
local sender = redis.call('HMGET', KEYS[16], 'handle', 'active', 'restricted')
local recipient = redis.call('HMGET', KEYS[17], 'handle', 'active', 'open_dms')
local recipient_exists = recipient[1] ~= false
local f = {
  sender_exists = sender[1] ~= false,
  recipient_exists = recipient_exists,
  sender_suspended = sender[2] == '0',
  recipient_suspended = recipient_exists and recipient[2] == '0',
  sender_restricted = sender[3] ~= false,
  sender_blocks_recipient = redis.call('ZSCORE', KEYS[18], r) ~= false,
  recipient_blocks_sender = redis.call('ZSCORE', KEYS[19], s) ~= false,
  recipient_follows_sender = redis.call('ZSCORE', KEYS[20], s) ~= false,
  recipient_open_dms = recipient_exists and recipient[3] == '1',
  recipient_wrote_to_sender = redis.call('SISMEMBER', KEYS[21], s) == 1,
  recipient_has_inbox_conversation = redis.call('ZSCORE', KEYS[7], s) ~= false,
}
local allowed, reason, folder = decide(f)
if not allowed then
  return {2, reason, recipient[1] or ''}
end

-- The limits (limits.lua), in this same atomic step, so that no node and no
-- transport gets past them. All are checked before any is charged: a refused
-- send writes nothing and may be retried with the same client_id.
-- The limits' arguments start at ARGV[L] (see the header).
local L = 10
local burst, new_limit, requests_limit = tonumber(ARGV[L]), tonumber(ARGV[L + 2]), tonumber(ARGV[L + 4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if burst > 0 or new_limit > 0 or requests_limit > 0 then
  local ok, wait, tat
  if burst > 0 then
    local stored = redis.call('GET', KEYS[22])
    ok, tat, wait = gcra(stored and tonumber(stored), now, burst, tonumber(ARGV[L + 1]))
    if not ok then
      return {3, 'messages', wait}
    end
  end
  local function window_open(key, limit, window_ms)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - window_ms))
    local count = redis.call('ZCARD', key)
    local oldest = nil
    if count >= limit then
      oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
    end
    return sliding_window(count, oldest, now, limit, window_ms)
  end
  -- A first message to someone who neither follows the sender nor ever wrote
  -- to it: what mass messaging is made of.
  local new_conversation = new_limit > 0 and not f.recipient_follows_sender
    and not f.recipient_wrote_to_sender and redis.call('SISMEMBER', KEYS[10], r) == 0
  if new_conversation then
    ok, wait = window_open(KEYS[23], new_limit, tonumber(ARGV[L + 3]))
    if not ok then
      return {3, 'new_conversations', wait}
    end
  end
  local new_request = requests_limit > 0 and folder == 'requests'
    and redis.call('ZSCORE', KEYS[8], s) == false
  if new_request then
    ok, wait = window_open(KEYS[24], requests_limit, tonumber(ARGV[L + 5]))
    if not ok then
      return {3, 'requests_received', wait}
    end
  end
  if burst > 0 then
    redis.call('SET', KEYS[22], string.format('%d', tat), 'PX', string.format('%d', tat - now))
  end
  if new_conversation then
    redis.call('ZADD', KEYS[23], string.format('%d', now), r)
    redis.call('PEXPIRE', KEYS[23], ARGV[L + 3])
  end
  if new_request then
    redis.call('ZADD', KEYS[24], string.format('%d', now), s)
    redis.call('PEXPIRE', KEYS[24], ARGV[L + 5])
  end
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
local function view_top(key)
  local top = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')[2]
  return top and tonumber(top) or 0
end
local last = tonumber(redis.call('GET', KEYS[11]) or '0')
local id = id_string(next_message_id(now, last, view_top(KEYS[2]), view_top(KEYS[26]),
  tonumber(ARGV[18])))
redis.call('SET', KEYS[11], id)
local message = '{"id":"' .. id .. '","from":' .. json_handle(sender[1])
  .. ',"to":' .. json_handle(recipient[1]) .. ',"text":' .. ARGV[4]
  .. ',"sent_at":"' .. ARGV[5] .. '","client_id":' .. ARGV[6] .. ARGV[9] .. '}'
-- An agent's name is for the business's team only: the business's view and
-- events have it, the customer's do not.
local own = message
if ARGV[17] ~= '' then
  own = string.sub(message, 1, -2) .. ',"agent":' .. json_handle(ARGV[17]) .. '}'
end
redis.call('ZADD', KEYS[2], id, s .. ' ' .. own)
redis.call('ZADD', KEYS[26], id, s .. ' ' .. message)
redis.call('SADD', KEYS[10], r)
redis.call('SADD', KEYS[27], s)
if client_id ~= '' then
  redis.call('HSET', KEYS[1], client_id, id .. '|' .. r)
  -- Each client_id expires on its own (HEXPIRE: Valkey 9, Redis 7.4); on older
  -- servers the whole map expires that long after the sender's last such send.
  local ttl = tonumber(ARGV[16])
  if ttl > 0 and not pcall(redis.call, 'HEXPIRE', KEYS[1], ttl, 'FIELDS', 1, client_id) then
    redis.call('EXPIRE', KEYS[1], ttl)
  end
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
local sender_body = '{"type":"message","message":' .. own .. ',"folder":"inbox"'
local recipient_body = '{"type":"message","message":' .. message .. ',"folder":"' .. folder .. '"'
-- The sender's event remembers the socket it came from (o), so that a replay to
-- that same socket skips it, as live delivery does: that socket had the ack.
local sender_cursor = redis.call('XADD', KEYS[3], 'MAXLEN', '~', retention, '*',
  'p', r, 'f', sender_body, 'o', ARGV[8])
local recipient_cursor = redis.call('XADD', KEYS[4], 'MAXLEN', '~', retention, '*', 'p', s, 'f', recipient_body)

redis.call('SPUBLISH', KEYS[12], 'm ' .. sender_cursor .. ' ' .. r .. ' ' .. ARGV[8] .. '\n'
  .. sender_body .. ',"cursor":"' .. sender_cursor .. '"}')
redis.call('SPUBLISH', KEYS[13], 'm ' .. recipient_cursor .. ' ' .. s .. ' -\n'
  .. recipient_body .. ',"cursor":"' .. recipient_cursor .. '"}')

-- A customer writing again reopens the conversation for the business's team,
-- in this same step, so no agent can see the message and a stale "resolved".
local team_state = redis.call('HGET', KEYS[25], s)
if team_state then
  local ok, state = pcall(cjson.decode, team_state)
  if ok and type(state) == 'table' and state.status == 'resolved' then
    state.status = 'open'
    local assignee = state.assignee or cjson.null
    redis.call('HSET', KEYS[25], s, cjson.encode({status = 'open', assignee = assignee}))
    local body = '{"type":"conversation","peer":' .. json_handle(sender[1])
      .. ',"status":"open","assignee":' .. cjson.encode(assignee) .. ',"by":null'
    local cursor = redis.call('XADD', KEYS[4], 'MAXLEN', '~', retention, '*', 'p', s, 'f', body)
    redis.call('SPUBLISH', KEYS[13], 'c ' .. cursor .. ' ' .. s .. ' -\n'
      .. body .. ',"cursor":"' .. cursor .. '"}')
  end
end

return {1, id, own, folder}
