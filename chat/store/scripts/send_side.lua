-- The sender's side of a message s → r, in s's slot: what send_apply.lua does
-- for the message it was given, and what send_decide.lua does, in the
-- recipient's slot, for the recipient's own messages still owed there (so that
-- a user's sockets and history never get a reply before the message it
-- answers). Idempotent: the message already in the view means it was applied.
--
-- Members are the same bytes in both views (chat/store/views.py):
-- `<sender>[/<agent>] <message JSON as the recipient sees it>`.

-- Handles are meant to be [A-Za-z0-9_] (validation.HANDLE_RE), which JSON needs
-- no escaping for; anything else found in a user hash is encoded, not trusted.
local function json_handle(handle)
  if string.find(handle, '[^A-Za-z0-9_]') then
    return cjson.encode(handle)
  end
  return '"' .. handle .. '"'
end

-- Whether a view member was written by `peer`.
local function written_by(stored, peer)
  local n = #peer
  local after = string.sub(stored, n + 1, n + 1)
  return string.sub(stored, 1, n) == peer and (after == ' ' or after == '/')
end

-- The message as its sender sees it: with the agent, when an agent wrote it.
local function sender_copy(stored)
  local space = string.find(stored, ' ', 1, true)
  local head, message = string.sub(stored, 1, space - 1), string.sub(stored, space + 1)
  local slash = string.find(head, '/', 1, true)
  if not slash then
    return message
  end
  return string.sub(message, 1, -2) .. ',"agent":' .. json_handle(string.sub(head, slash + 1)) .. '}'
end

-- k: the sender's keys {view, wrote, requests, inbox, read, unread, cids, events,
-- channel}. Returns true when applied now, false when it was already.
local function apply_sender_side(k, r, id, stored, client_id, origin, retention, cid_ttl)
  if #redis.call('ZRANGEBYSCORE', k.view, id, id, 'LIMIT', 0, 1) > 0 then
    return false
  end
  redis.call('ZADD', k.view, id, stored)
  redis.call('SADD', k.wrote, r)
  -- Writing to someone accepts their request, so the sender's side is inbox. GT:
  -- a late apply never moves a conversation back in the list.
  redis.call('ZREM', k.requests, r)
  redis.call('ZADD', k.inbox, 'GT', id, r)
  -- A reply means the sender has read the conversation up to it. r's messages
  -- above it (crossing ones) stay unread.
  local current = redis.call('HGET', k.read, r)
  if not current or tonumber(current) < tonumber(id) then
    redis.call('HSET', k.read, r, id)
    local unread = 0
    for _, later in ipairs(redis.call('ZRANGEBYSCORE', k.view, '(' .. id, '+inf')) do
      if written_by(later, r) then unread = unread + 1 end
    end
    if unread == 0 then
      redis.call('HDEL', k.unread, r)
    else
      redis.call('HSET', k.unread, r, unread)
    end
  end
  if client_id ~= '' then
    redis.call('HSET', k.cids, client_id, id .. '|' .. r)
    -- Each client_id expires on its own (HEXPIRE: Valkey 9, Redis 7.4); on older
    -- servers the whole map expires that long after the last such send.
    local ttl = tonumber(cid_ttl)
    if ttl > 0 and not pcall(redis.call, 'HEXPIRE', k.cids, ttl, 'FIELDS', 1, client_id) then
      redis.call('EXPIRE', k.cids, ttl)
    end
  end
  -- The sender's event remembers the socket it came from (o), so that a replay to
  -- that same socket skips it, as live delivery does: that socket had the ack.
  local body = '{"type":"message","message":' .. sender_copy(stored) .. ',"folder":"inbox"'
  local cursor = redis.call('XADD', k.events, 'MAXLEN', '~', retention, '*', 'p', r, 'f', body,
    'o', origin)
  redis.call('SPUBLISH', k.channel, 'm ' .. cursor .. ' ' .. r .. ' ' .. origin .. '\n'
    .. body .. ',"cursor":"' .. cursor .. '"}')
  return true
end

-- A send of s to r is over (its last step ran, or it ended early): its mark goes.
local function unmark_send(sending_key, r)
  if redis.call('HINCRBY', sending_key, r, -1) <= 0 then
    redis.call('HDEL', sending_key, r)
  end
end
