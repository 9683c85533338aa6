-- Step 2 of a send s → r, in r's slot: THE decision (chat/store/sends.py).
-- The pieces it calls of the send's library (sends.py: SEND_LIB: rule.lua,
-- limits.lua, msgid.lua, send_side.lua, send_parts.lua, outbox.lua) go in front.
-- What this step writes makes the send certain: the message in r's view, r's
-- folders and event, and the outbox entry from which step 3 (s's side,
-- send_apply.lua) is completed by this process or, if it dies, a reconciler.
--
-- KEYS: 1 cidin:{r}   2 user:{r}   3 cin:{r}   4 creq:{r}   5 heard:{r}
--       6 msgs:{r}:s   7 ev:{r}   8 ch:{r}   9 reqrecv:{r}   10 tconv:{r}
--       11 the outbox of r's slot   12 cid:{r}   13 sending:{r}:s
--       14 wrote:{r} (r's side of r's owed messages)
-- ARGV: 1 client_id or ''   2 s (lower case)   3 r (lower case), not s
--       4 the text as a JSON string   5 sent_at (ISO 8601)   6 client_id as JSON
--       7 event retention (entries)   8 origin connection id or '-'
--       9 optional message fields as JSON text (',"ref":"x"'...) or ''
--       10-16 from step 1: sender's handle or '', its `active`, restricted,
--       blocks r, floor, ms to wait for `messages`, new conversation
--       17 ms to wait for `new_conversations`
--       18 requests received   19 their window (ms); 0 is off
--       20 seconds a client_id is remembered (0: forever)
--       21 the agent's handle when an agent sends for the business, or ''
--       22 the parity of this direction's ids (msgid.direction)
--       23 '1' when this send waits for r's marked sends to s in flight (answer 5)
--       24 N, the count of ids that follow: r's latest messages in s's view
--       25 .. 24+N those ids; then (id, view member, origin) triples: those of
--       them that r's view lacked when an earlier call answered 4
-- Returns {1, id, the sender's copy of the message, folder, outbox entry id,
-- the view member, {ids of s's latest earlier messages here}} (step 3 completes
-- any that s's view still lacks before this one);
-- {0, id, payload or nil, entry id} when this client_id reached r before (the
-- payload while step 3 may still be owed); {2, reason, r's handle or ''} when
-- the rule refuses; {3, limit, ms to wait} when a limit does; {4, {ids}} when
-- r's view lacks some of r's own messages and they must be passed in; {5} when
-- r has a send to s in flight, to wait for (4 and 5 write nothing). Only 1
-- writes, and 2 and 3 may have completed owed messages.
local client_id, s, r = ARGV[1], ARGV[2], ARGV[3]
local dedupe = s .. ':' .. client_id

-- Before the rule: a retry of a send decided before the rule changed still
-- gets its original message back, as the contract promises.
if client_id ~= '' then
  local seen = redis.call('HGET', KEYS[1], dedupe)
  if seen then
    local bar = string.find(seen, '|', 1, true)
    local id, entry = string.sub(seen, 1, bar - 1), string.sub(seen, bar + 1)
    local found = redis.call('XRANGE', KEYS[11], entry, entry)
    local payload = false
    if #found > 0 then
      local fields = found[1][2]
      for i = 1, #fields, 2 do
        if fields[i] == 'p' then payload = fields[i + 1] end
      end
    end
    return {0, id, payload, entry}
  end
end

-- r's own messages to s that s's view has and r's view lacks (their sender's
-- side is still owed: its process died between the steps) are completed first,
-- in id order, as their step 3 would: r's history and sockets then never have
-- this message before the one it may answer, and the reply clause sees them.
--
-- Crossing messages: while r has a send to s between its steps 1 and 3, r's
-- own event for it is still to come, and this message, decided now, would reach
-- r's sockets first although it may sort after it. One direction of each
-- conversation (s > r) waits for the other's sends in flight, so that r's
-- stream has each conversation in id order. A wait is bounded (sends.py); one
-- that runs out goes ahead marked, and the sends from s < r wait for those
-- (the send it stopped waiting for would otherwise be decided here while it is
-- between its steps 2 and 3). A send that went ahead never waits again, so no
-- two sends wait for each other.
if ARGV[23] == '1' and tonumber(redis.call('GET', KEYS[13]) or '0') > 0 then
  return {5}
end
-- r's view's latest entries, read once: its top (the id goes above it), the
-- owed check of r's messages, and s's earlier messages for step 3.
local OWED_SCAN = 4
local latest = redis.call('ZREVRANGE', KEYS[6], 0, OWED_SCAN - 1, 'WITHSCORES')
local missing, owed, supplied, origins = owed_messages(KEYS[6], 24, latest, OWED_SCAN)
if #missing > 0 then
  return {4, missing}
end
if #owed > 0 then
  -- Their `w` in r's hash (pair_flags.lua), read and written only here, for
  -- a live r: the common path reads the pair's letters in the decision below.
  -- And r's read pointer (`r:<s>`), which they move: a reply means read.
  local mine = redis.call('HMGET', KEYS[2], 'handle', 'p:' .. s, 'r:' .. s)
  local was = mine[2] or ''
  local side = {flags = was, read = mine[3]}
  local top = apply_owed({view = KEYS[6], wrote = KEYS[14], requests = KEYS[4],
    inbox = KEYS[3], cids = KEYS[12], events = KEYS[7], channel = KEYS[8]}, s, owed,
    supplied, origins, ARGV[7], ARGV[20], side)
  if mine[1] then
    -- And the top of r's view (`t:<s>`), should this send be refused below.
    store_sender_state(KEYS[2], nil, s, was, side.flags, id_string(tonumber(top)), side.read,
      side.unread)
  end
end

-- The sender's facts come from step 1.
local sender = {handle = ARGV[10], active = ARGV[11], restricted = ARGV[12] == '1',
  blocks = ARGV[13] == '1'}
local allowed, reason, folder, recipient_handle, facts, last_id, flags, _, unread =
  recipient_decision({user = KEYS[2], inbox = KEYS[3]}, s, sender)
if not allowed then
  return {2, reason, recipient_handle}
end

-- The limits in the order of the single-slot send: messages, new conversations
-- (both checked in step 1, charged in step 3), requests received (checked and
-- charged here, in r's slot).
if tonumber(ARGV[15]) > 0 then
  return {3, 'messages', tonumber(ARGV[15])}
end
if tonumber(ARGV[17]) > 0 then
  return {3, 'new_conversations', tonumber(ARGV[17])}
end
-- The clock of this step, not step 1's: of two crossing messages, the one
-- decided later must get the higher id, or the sender of the other (whose
-- sends do not wait, send_decide's answer 5) could see its own message land
-- in its stream after the crossing one with a higher id.
local now = clock_ms()
local requests_wait = admit_request({requests = KEYS[4], received = KEYS[9]}, s, folder, now,
  tonumber(ARGV[18]), tonumber(ARGV[19]))
if requests_wait > 0 then
  return {3, 'requests_received', requests_wait}
end

-- The owed messages just applied are in s's view, so under the floor: the top
-- read before them still bounds the id.
local id = issue_id(last_id, now, ARGV[14], latest[2], ARGV[22])
local message, stored, own = message_bytes(id, sender.handle, recipient_handle, ARGV[4],
  ARGV[5], ARGV[6], ARGV[9], s, ARGV[21])
apply_recipient_side({user = KEYS[2], view = KEYS[6], heard = KEYS[5], inbox = KEYS[3],
  requests = KEYS[4], events = KEYS[7], channel = KEYS[8],
  team = facts.recipient_business and KEYS[10] or nil}, s, id, stored,
  message, folder, sender.handle, ARGV[7], flags, unread)

-- What step 3 needs, all of it: no re-reading of this slot.
local payload = cjson.encode({s = s, r = r, id = id, m = stored, c = client_id, o = ARGV[8],
  n = ARGV[16]})
local entry = outbox_add(KEYS[11], 'send', payload)
if client_id ~= '' then
  -- Expires on its own, as a client_id record does (remember, send_side.lua).
  remember(KEYS[1], dedupe, id .. '|' .. entry, tonumber(ARGV[20]))
end

-- s's own latest messages before this one: step 3 makes sure s's view has them
-- first (a send of s's still owed, or a moment behind on another socket).
local earlier = {}
for i = 1, #latest, 2 do
  if written_by(latest[i], s) then
    earlier[#earlier + 1] = latest[i + 1]
  end
end

return {1, id, own, folder, entry, stored, earlier}
