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

-- Whether the server has HSETEX, once a record found out. In the function
-- library (chat/store/lua.py) a top-level local lives as long as the library,
-- so only the first record after a load pays for a pcall (about 0.6 µs); an
-- EVAL script finds out on every call, as before.
local hsetex_known = nil

-- A client_id record: one hash field that expires on its own after ttl seconds
-- (0: never). HSETEX (Valkey 9, Redis 8) sets both in one command, about 3.5 µs
-- of Valkey CPU less than HSET and HEXPIRE (docs/performance.md); before it,
-- HSET then HEXPIRE (Redis 7.4), or else the whole map expires that long after
-- its last such write.
local function remember(key, field, value, ttl)
  if ttl == 0 then
    redis.call('HSET', key, field, value)
    return
  end
  if hsetex_known then
    redis.call('HSETEX', key, 'EX', ttl, 'FIELDS', 1, field, value)
    return
  end
  if hsetex_known == nil then
    local ok, err = pcall(redis.call, 'HSETEX', key, 'EX', ttl, 'FIELDS', 1, field, value)
    if ok then
      hsetex_known = true
      return
    end
    -- Only an unknown command says the server lacks it; anything else (out
    -- of memory ...) is this call's, and the next record asks again.
    if string.find(string.lower(tostring(err and (err.err or err) or '')), 'unknown', 1, true) then
      hsetex_known = false
    end
  end
  redis.call('HSET', key, field, value)
  if not pcall(redis.call, 'HEXPIRE', key, ttl, 'FIELDS', 1, field) then
    redis.call('EXPIRE', key, ttl)
  end
end

-- The sender's side written: s's view, wrote (the first time s writes to r:
-- `flags`, the pair's letters in s's hash, lack w; pair_flags.lua), folders
-- (writing to someone accepts their request, so the sender's side is inbox;
-- GT: a late apply never moves a conversation back in the list), the
-- client_id record, s's event and publish.
-- k: the sender's keys {view, wrote, requests, inbox, cids, events, channel}.
-- Returns the message as the sender sees it (`copy` when the caller has it, as
-- message_bytes makes it, else sender_copy of the member), and the pair's
-- letters after it, which the caller stores in s's hash in the HSET it makes
-- there anyway (store_sender_state), with the read state (a reply moves the
-- read pointer: apply_sender_side).
local function write_sender_side(k, r, id, stored, client_id, origin, retention, cid_ttl, flags,
    copy)
  redis.call('ZADD', k.view, id, stored)
  if not has_flag(flags, 'w') then
    redis.call('SADD', k.wrote, r)
    flags = flags .. 'w'
  end
  -- One folder at most (apply_recipient_side): only a peer new to the inbox can
  -- have a request to take back. GT adds a new member all the same, and ZADD
  -- counts only the members it added.
  if redis.call('ZADD', k.inbox, 'GT', id, r) == 1 then
    redis.call('ZREM', k.requests, r)
  end
  if client_id ~= '' then
    remember(k.cids, client_id, id .. '|' .. r, tonumber(cid_ttl))
  end
  -- The sender's event remembers the socket it came from (o), so that a replay to
  -- that same socket skips it, as live delivery does: that socket had the ack.
  copy = copy or sender_copy(stored)
  local body = '{"type":"message","message":' .. copy .. ',"folder":"inbox"'
  local cursor = redis.call('XADD', k.events, 'MAXLEN', '~', retention, '*', 'p', r, 'f', body,
    'o', origin)
  redis.call('SPUBLISH', k.channel, 'm ' .. cursor .. ' ' .. r .. ' ' .. origin .. '\n'
    .. body .. ',"cursor":"' .. cursor .. '"}')
  return copy, flags
end

-- The sender's side of a message decided in r's slot, idempotent. k: as
-- write_sender_side's. side: s's state of the conversation as s's hash holds
-- it, which this updates and the caller writes once (store_sender_state):
-- {flags = the pair's letters, read = the read pointer (`r:<r>`) or false,
-- unread = the count to write with it, nil while the pointer has not moved}.
-- The pointer moves to the message unless it is past it already (a reply
-- means s has read up to it), leaving r's crossing messages above it unread.
-- Returns true when applied now, false when it was already; and the top of
-- the view (the id, or a crossing message of r's above it), for `t:<r>`.
local function apply_sender_side(k, r, id, stored, client_id, origin, retention, cid_ttl, side)
  -- This message and those above it, in one read: this one there means applied
  -- already; the others are r's crossing messages, counted unread below.
  local above = redis.call('ZRANGEBYSCORE', k.view, id, '+inf', 'WITHSCORES')
  local top = above[#above] or id
  if above[2] and tonumber(above[2]) == tonumber(id) then
    return false, top
  end
  if not side.read or tonumber(side.read) < tonumber(id) then
    local unread = 0
    for i = 1, #above, 2 do
      if written_by(above[i], r) then unread = unread + 1 end
    end
    side.read, side.unread = id, unread
  end
  local _
  _, side.flags = write_sender_side(k, r, id, stored, client_id, origin, retention, cid_ttl,
    side.flags)
  return true, top
end

-- A send of s to r is over (its last step ran, or it ended early): its mark
-- goes. A count back at 0 stays until its expiry (DECR keeps it; one call, not
-- two); below 0 the mark had expired and DECR made a key without one: it goes.
local function unmark_send(sending_key)
  if redis.call('DECR', sending_key) < 0 then
    redis.call('DEL', sending_key)
  end
end

-- Owed messages passed to a script: ARGV[at] = N, then N ids (the author's
-- latest messages as the other view has them), then (id, view member, origin)
-- triples for those the caller was told are missing. Returns the ids missing
-- from `view` with no member passed (the caller is to pass them), and the
-- owed ones that can be applied, with their members and origins.
-- `top`, when given, is what the caller read of the view already: its `scan`
-- highest entries (ZREVRANGE ... WITHSCORES). An id among them is there; an id
-- above the lowest of them (or any, when the view has fewer) is not; only an
-- id below them costs a read of its own (each redis.call costs 2-3 µs).
local function owed_messages(view, at, top, scan)
  local count = tonumber(ARGV[at] or '0')
  local supplied, origins = {}, {}
  for i = at + 1 + count, #ARGV, 3 do
    supplied[ARGV[i]] = ARGV[i + 1]
    origins[ARGV[i]] = ARGV[i + 2]
  end
  local known, lowest = {}, nil
  if top then
    for i = 2, #top, 2 do
      known[tonumber(top[i])] = true
    end
    lowest = -1
    if #top >= 2 * scan then
      lowest = tonumber(top[#top])
    end
  end
  local missing, owed = {}, {}
  for i = at + 1, at + count do
    local owed_id = ARGV[i]
    local there
    if known[tonumber(owed_id)] then
      there = true
    elseif lowest and tonumber(owed_id) > lowest then
      there = false
    else
      there = #redis.call('ZRANGEBYSCORE', view, owed_id, owed_id, 'LIMIT', 0, 1) > 0
    end
    if not there then
      if supplied[owed_id] then
        owed[#owed + 1] = owed_id
      else
        missing[#missing + 1] = owed_id
      end
    end
  end
  return missing, owed, supplied, origins
end

-- The author's side of owed messages, in id order, as their step 3 would.
-- side: the author's state of the conversation (apply_sender_side), updated;
-- returns the top of the author's view once they are in it (nil when none
-- was owed).
local function apply_owed(k, peer, owed, supplied, origins, retention, cid_ttl, side)
  local top = nil
  table.sort(owed, function(x, y) return tonumber(x) < tonumber(y) end)
  for _, owed_id in ipairs(owed) do
    local stored = supplied[owed_id]
    local ok, decoded = pcall(cjson.decode,
      string.sub(stored, string.find(stored, ' ', 1, true) + 1))
    local owed_cid = ''
    if ok and type(decoded) == 'table' and type(decoded.client_id) == 'string' then
      owed_cid = decoded.client_id
    end
    local _, view_top = apply_sender_side(k, peer, owed_id, stored, owed_cid, origins[owed_id],
      retention, cid_ttl, side)
    if not top or tonumber(view_top) > tonumber(top) then
      top = view_top
    end
  end
  return top
end
