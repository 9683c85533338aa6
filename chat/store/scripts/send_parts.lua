-- The pieces a send is made of, shared by the three per-slot steps
-- (send_prepare.lua, send_decide.lua, send_apply.lua) and by the single-script
-- send of one Valkey (send_whole.lua), so both paths run the same code
-- (chat/store/sends.py). rule.lua, limits.lua, msgid.lua and send_side.lua go
-- in front of it; each script gets only the functions it calls (SEND_LIB).
--
-- Every redis.call costs Valkey about 2-3 µs (docs/performance.md): the
-- functions take what their caller knows already instead of reading it again.

-- This script's clock in milliseconds. One TIME per script: a call costs as
-- much as any other.
local function clock_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end

-- The sender's own facts, in s's slot, its `messages` bucket (the user hash's
-- field `msgrate`), the pair's relationship letters as s's hash holds them
-- (field `p:<r>`, pair_flags.lua) and the top of s's view of the conversation
-- (field `t:<r>`, below): all in one HMGET, where a key or a set of their own
-- would cost a redis.call each. k: {user}.
local function sender_facts(k, r)
  local sender = redis.call('HMGET', k.user, 'handle', 'active', 'restricted', 'msgrate', 'p:' .. r,
    't:' .. r)
  local flags = sender[5] or ''
  return {handle = sender[1] or '', active = sender[2] or '', restricted = sender[3] ~= false,
    blocks = has_flag(flags, 'b'), bucket = sender[4] or nil, flags = flags, top = sender[6]}
end

-- The one fact read only when the rule asks for it: the inbox conversation
-- (`cin:{r}` ∋ s; open DMs, nothing else deciding first). One metatable for
-- every send: in the function library a top-level local is made once, where a
-- closure per call costs Valkey about 0.6 µs. The facts carry its key and peer.
local inbox_fact = {__index = function(facts, name)
  if name ~= 'recipient_has_inbox_conversation' then
    return nil
  end
  local value = redis.call('ZSCORE', rawget(facts, 'inbox_key'), rawget(facts, 'peer')) ~= false
  rawset(facts, name, value)
  return value
end}

-- The rule (decide, rule.lua) over the sender's facts and every fact read in
-- r's slot: the same facts as Store.pair_facts (facts_*.lua), all read in this
-- one script, so the decision is atomic. One HMGET of r's hash holds r's
-- account, its id generator (`idgen`), the pair's letters (`p:<s>`,
-- pair_flags.lua): r blocks s (b), s blocks r (B, the mirror), r follows s
-- (f), r wrote to s (w); and r's unread count of s's messages (`u:<s>`),
-- which apply_recipient_side raises in the HSET it makes anyway. A block by s is in s's slot (sender.blocks) and
-- mirrored in r's: either says so, since the mirror lags the block (and its
-- removal) by a split step. Only the inbox conversation is a read of its own,
-- made when the rule asks for it (open DMs, nothing else deciding first).
-- k: r's keys {user, inbox}.
-- Returns allowed, reason, folder, r's handle or '', the facts (with
-- recipient_business: only a business has team state to keep), r's last
-- issued id or false, the pair's letters in r's hash ('' for none), the
-- top of r's view of the conversation (`t:<s>`) or false, and r's unread
-- count of the conversation (`u:<s>`) or false.
local function recipient_decision(k, s, sender)
  local recipient = redis.call('HMGET', k.user, 'handle', 'active', 'open_dms', 'kind', 'idgen',
    'p:' .. s, 't:' .. s, 'u:' .. s)
  local recipient_exists = recipient[1] ~= false
  local flags = recipient[6] or ''
  local f = setmetatable({
    sender_exists = sender.handle ~= '',
    recipient_exists = recipient_exists,
    sender_suspended = sender.active == '0',
    recipient_suspended = recipient_exists and recipient[2] == '0',
    sender_restricted = sender.restricted,
    recipient_open_dms = recipient_exists and recipient[3] == '1',
    recipient_business = recipient[4] == 'business',
    sender_blocks_recipient = sender.blocks or has_flag(flags, 'B'),
    recipient_blocks_sender = has_flag(flags, 'b'),
    recipient_follows_sender = has_flag(flags, 'f'),
    recipient_wrote_to_sender = has_flag(flags, 'w'),
    inbox_key = k.inbox,
    peer = s,
  }, inbox_fact)
  local allowed, reason, folder = decide(f)
  return allowed, reason, folder, recipient[1] or '', f, recipient[5], flags, recipient[7],
    recipient[8]
end

-- `messages` (GCRA, limits.lua) over the bucket as sender_facts read it: ms to
-- wait (0: allowed), and the bucket's value once this send is charged.
local function messages_wait(stored, now, burst, period_ms)
  local ok, tat, wait = gcra(stored and tonumber(stored), now, burst, period_ms)
  if not ok then
    return wait, nil
  end
  return 0, tat
end

-- The sender's hash written once, if at all: the bucket (`msgrate`, tat nil
-- when not charged), the pair's letters when the send changed them (`p:<r>`:
-- `w`, s wrote to r), the top of s's view of the conversation (`t:<r>`,
-- top nil when the view was not written), and s's read state of it when the
-- pointer moved (`r:<r>` the read pointer, `u:<r>` r's messages above it;
-- unread nil when it did not): a reply means s has read the conversation up
-- to it. The count is written even at 0, where a field deleted would cost a
-- call of its own; readers take "0" as no field. The bucket is a field of the user
-- hash, so it goes with the account; it never expires: a time already past
-- reads as a full bucket (gcra starts from now), exactly as the key of its own
-- that expired then did. Only for a live sender (the rule, or step 3, read its
-- handle): no hash is made for an account that does not exist.
--
-- `t:<peer>` is the highest id in the user's view of the conversation with
-- peer (msgs:{me}:peer), written by every script that adds to a view, in the
-- HSET of the user's hash it makes anyway: the one-script send reads both
-- users' tops in the HMGETs the rule makes (send_whole.lua) instead of a
-- ZREVRANGE of each view, whose reply carries a whole message. The steps read
-- their views themselves (they look for owed messages among the latest
-- entries) and write the true top, so a field a crash left behind is set
-- right by the next send in steps.
local function store_sender_state(user_key, tat, r, was, flags, top, read, unread)
  local fields = {}
  if tat then
    fields[#fields + 1] = 'msgrate'
    fields[#fields + 1] = string.format('%d', tat)
  end
  if flags ~= was then
    fields[#fields + 1] = 'p:' .. r
    fields[#fields + 1] = flags
  end
  if top then
    fields[#fields + 1] = 't:' .. r
    fields[#fields + 1] = top
  end
  if unread then
    fields[#fields + 1] = 'r:' .. r
    fields[#fields + 1] = read
    fields[#fields + 1] = 'u:' .. r
    fields[#fields + 1] = string.format('%d', unread)
  end
  if #fields > 0 then
    redis.call('HSET', user_key, unpack(fields))
  end
end

-- The bucket's charge as gcra makes it, without its refusal, over the bucket
-- as read (`stored`, or false): for a step that charges what an earlier step
-- checked. Returns the bucket's new value.
local function charged_bucket(stored, now, burst, period_ms)
  local tat = stored and tonumber(stored) or now
  if tat < now then tat = now end
  return tat + math.max(1, math.floor(period_ms / burst))
end

-- A first message to someone who neither follows the sender nor ever wrote
-- to it, nor was written to by it: what mass messaging is made of. Read from
-- the pair's letters in s's hash (sender_facts): F (r follows s, the mirror of
-- r's following), h (r wrote to s, the mirror of r's wrote), w (s wrote to r).
local function opens_conversation(flags)
  return not (has_flag(flags, 'F') or has_flag(flags, 'h') or has_flag(flags, 'w'))
end

-- `new_conversations`: ms to wait (0: allowed), the window read as
-- charge_new_conversation will see it once it trims, without trimming.
local function new_conversations_wait(key, now, limit, window_ms)
  local after = '(' .. string.format('%d', now - window_ms)
  local count = redis.call('ZCOUNT', key, after, '+inf')
  local oldest = nil
  if count >= limit then
    oldest = tonumber(redis.call('ZRANGEBYSCORE', key, after, '+inf', 'WITHSCORES',
      'LIMIT', 0, 1)[2])
  end
  local ok, wait = sliding_window(count, oldest, now, limit, window_ms)
  if not ok then
    return wait
  end
  return 0
end

local function charge_new_conversation(key, now, r, window_ms)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - window_ms))
  redis.call('ZADD', key, string.format('%d', now), r)
  redis.call('PEXPIRE', key, window_ms)
end

-- `requests_received`, in r's slot, checked and charged at once: ms to wait
-- (0: admitted, and charged when it is a new request). k: r's {requests, received}.
local function admit_request(k, s, folder, now, limit, window_ms)
  if limit <= 0 or folder ~= 'requests' or redis.call('ZSCORE', k.requests, s) ~= false then
    return 0
  end
  redis.call('ZREMRANGEBYSCORE', k.received, '-inf', string.format('%d', now - window_ms))
  local count = redis.call('ZCARD', k.received)
  local oldest = nil
  if count >= limit then
    oldest = tonumber(redis.call('ZRANGE', k.received, 0, 0, 'WITHSCORES')[2])
  end
  local ok, wait = sliding_window(count, oldest, now, limit, window_ms)
  if not ok then
    return wait
  end
  redis.call('ZADD', k.received, string.format('%d', now), s)
  redis.call('PEXPIRE', k.received, window_ms)
  return 0
end

-- The id (msgid.lua): above r's slot's last (`last`, the user hash's `idgen`
-- as recipient_decision read it, or false), the sender's view (floor) and r's
-- view (top, or nil when empty). Both views and the generator are read by the
-- caller's own means, and apply_recipient_side stores it as r's last.
local function issue_id(last, now, floor, top, parity)
  return id_string(next_message_id(now, tonumber(last or '0'), tonumber(floor),
    tonumber(top or '0'), tonumber(parity)))
end

-- The bytes clients get in the ack, the events and the history, field order
-- included: id, from, to, text, sent_at, client_id, then the optional fields.
-- An agent's name is for the business's team only: the view member carries it
-- (`s/agent `), r's (the customer's) copy of the message does not. Both views
-- hold the same member (views.py). Returns the message as r sees it, the
-- member, and the message as s sees it (sender_copy of the member, made
-- without reading the member again).
local function message_bytes(id, from, to, text_json, sent_at, client_id_json, extra, s, agent)
  local message = '{"id":"' .. id .. '","from":' .. json_handle(from)
    .. ',"to":' .. json_handle(to) .. ',"text":' .. text_json
    .. ',"sent_at":"' .. sent_at .. '","client_id":' .. client_id_json .. extra .. '}'
  if agent ~= '' then
    return message, s .. '/' .. agent .. ' ' .. message,
      string.sub(message, 1, -2) .. ',"agent":' .. json_handle(agent) .. '}'
  end
  return message, s .. ' ' .. message, message
end

-- r's side of a new message from s: r's view, the mirror heard, folders,
-- unread count, event and publish; and a customer writing again reopens the
-- conversation for the business's team, in this same script, so no agent can
-- see the message and a stale "resolved".
-- One HSET of r's hash: the id as the generator's last (`idgen`) and as the
-- top of r's view (`t:<s>`: the id is above everything in it, store_sender_state),
-- r's unread count one up (`u:<s>`: `unread` as recipient_decision read it,
-- in the same script, so no HINCRBY of its own) and, the first time s writes
-- to r, the letter h (`flags`: the pair's letters in r's hash as
-- recipient_decision read them), whose set `heard:` is then added to; after
-- that, it is not written again. r's account exists, the rule said so, so
-- this makes no hash of its own.
-- k: r's {user, view, heard, inbox, requests, events, channel, team};
-- team nil when r is not a business (no team state: one read less).
local function apply_recipient_side(k, s, id, stored, message, folder, sender_handle, retention,
    flags, unread)
  local count = string.format('%d', (tonumber(unread or '0') or 0) + 1)
  if has_flag(flags, 'h') then
    redis.call('HSET', k.user, 'idgen', id, 't:' .. s, id, 'u:' .. s, count)
  else
    redis.call('SADD', k.heard, s)
    redis.call('HSET', k.user, 'idgen', id, 't:' .. s, id, 'u:' .. s, count, 'p:' .. s,
      flags .. 'h')
  end
  redis.call('ZADD', k.view, id, stored)
  -- The folder comes from facts read in this same script, so it cannot be
  -- stale: 'requests' means the recipient has no inbox entry for the sender.
  -- A peer is in one folder at most (a request is added only when the rule,
  -- in the same script, found no inbox entry; every new inbox entry takes the
  -- request back; accept and hide move or drop both), so only a peer new to
  -- the inbox can have a request to take back: one call less per message of
  -- an ongoing conversation.
  if folder == 'inbox' then
    if redis.call('ZADD', k.inbox, id, s) == 1 then
      redis.call('ZREM', k.requests, s)
    end
  else
    redis.call('ZADD', k.requests, id, s)
  end

  local body = '{"type":"message","message":' .. message .. ',"folder":"' .. folder .. '"'
  local cursor = redis.call('XADD', k.events, 'MAXLEN', '~', retention, '*', 'p', s, 'f', body)
  redis.call('SPUBLISH', k.channel, 'm ' .. cursor .. ' ' .. s .. ' -\n'
    .. body .. ',"cursor":"' .. cursor .. '"}')

  local team_state = k.team and redis.call('HGET', k.team, s)
  if team_state then
    local ok, state = pcall(cjson.decode, team_state)
    if ok and type(state) == 'table' and state.status == 'resolved' then
      local assignee = state.assignee or cjson.null
      redis.call('HSET', k.team, s, cjson.encode({status = 'open', assignee = assignee}))
      local change = '{"type":"conversation","peer":' .. json_handle(sender_handle)
        .. ',"status":"open","assignee":' .. cjson.encode(assignee) .. ',"by":null'
      local at = redis.call('XADD', k.events, 'MAXLEN', '~', retention, '*', 'p', s, 'f', change)
      redis.call('SPUBLISH', k.channel, 'c ' .. at .. ' ' .. s .. ' -\n'
        .. change .. ',"cursor":"' .. at .. '"}')
    end
  end
end
