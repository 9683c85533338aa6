-- A whole send s → r in one script, when both users' keys are on one Valkey
-- (chat/store/sends.py): the three steps' pieces (send_parts.lua,
-- send_side.lua, the send's library in front) run in one atomic call. Nothing
-- is ever half-done, so there is no outbox entry, no in-flight mark, no wait
-- for a crossing send, and one TIME.
--
-- What the steps leave for later ones, this script does not handle: it answers
-- {4} ("use the steps", nothing written) and sends.py runs the three steps.
-- That is when a message is owed: the tops of the two views differ (an owed
-- message, whichever its author, is in one view and not yet in the other; the
-- steps complete owed messages among a view's latest entries before any later
-- one lands in it, so equal tops mean nothing is owed: one left older than
-- what they scan is the reconciler's, on either path). The tops are the
-- fields `t:<peer>` of the two user hashes, which every script that writes a
-- view keeps (store_sender_state), read in the HMGETs the rule makes anyway.
--
-- No `cidin:{r}` record is written or read. It exists for the steps: their
-- step 2 answers a retry whose step 3 may still be owed, and it gives owed
-- messages their origin. Here the sender's own record (`cid:{s}`) is written in
-- the same atomic call as both views, so a retry of this send always finds it,
-- on either path (send_prepare.lua reads it first), and nothing from this send
-- is ever owed. A retry of a split send whose step 3 is owed reaches the steps
-- through the tops, which differ until that step 3 runs; once it ran,
-- `cid:{s}` has it. So `cidin:{r}` is neither needed nor checked here.
--
-- In-flight marks (`sending:`) are not checked either: a split send from r
-- decided (step 2) and not applied (step 3) shows in the tops; one not yet
-- decided is decided after this message, above it (the top of s's view is in
-- its id), and reaches r's stream after it, in id order.
--
-- The relationship facts are the pair's letters in the two user hashes
-- (pair_flags.lua), read in the HMGET each side makes anyway; `wrote:{s}` and
-- `heard:{r}` are written only the first time s writes to r.
--
-- The read state is in the user hashes too: r's unread count (`u:<s>`) is
-- read in the rule's HMGET and raised in the HSET of r's hash; s's read
-- pointer and cleared count (`r:<r>`, `u:<r>`) go in the HSET of s's hash.
--
-- KEYS: 1 cid:{s}   2 user:{s}   3 msgs:{s}:r   4 newconv:{s}   5 wrote:{s}
--       6 creq:{s}   7 cin:{s}   8 ev:{s}   9 ch:{s}
--       10 user:{r}   11 cin:{r}   12 creq:{r}   13 heard:{r}
--       14 msgs:{r}:s   15 ev:{r}   16 ch:{r}   17 reqrecv:{r}   18 tconv:{r}
-- ARGV: 1 client_id or ''   2 s (lower case)   3 r (lower case), not s
--       4 the text as a JSON string   5 sent_at (ISO 8601)   6 client_id as JSON
--       7 event retention (entries)   8 origin connection id or '-'
--       9 optional message fields as JSON text (',"ref":"x"'...) or ''
--       10 messages burst   11 its period (ms)   12 new conversations
--       13 their window (ms)   14 requests received   15 their window (ms); 0 is off
--       16 seconds a client_id is remembered (0: forever)
--       17 the agent's handle when an agent sends for the business, or ''
--       18 the parity of this direction's ids (msgid.direction)
-- Returns {1, id, the sender's copy of the message, folder} for a new message;
-- {0, id, peer} when this client_id was sent before; {2, reason, r's handle or
-- ''} when the rule refuses; {3, limit, ms to wait} when a limit does; {4}:
-- use the steps. Only 1 writes.
local client_id, s, r = ARGV[1], ARGV[2], ARGV[3]

if client_id ~= '' then
  local seen = redis.call('HGET', KEYS[1], client_id)
  if seen then
    local bar = string.find(seen, '|', 1, true)
    return {0, string.sub(seen, 1, bar - 1), string.sub(seen, bar + 1)}
  end
end

-- Each user's keys in one table, for every function of the library this
-- calls: their key groups share names, never keys, and each table built costs
-- Valkey CPU on every call (about 0.8 µs less than one per function).
local sk = {user = KEYS[2], wrote = KEYS[5], view = KEYS[3], requests = KEYS[6],
  inbox = KEYS[7], cids = KEYS[1], events = KEYS[8], channel = KEYS[9]}
local rk = {user = KEYS[10], inbox = KEYS[11], requests = KEYS[12], heard = KEYS[13],
  view = KEYS[14], events = KEYS[15], channel = KEYS[16], received = KEYS[17], team = KEYS[18]}
local sender = sender_facts(sk, r)
local allowed, reason, folder, recipient_handle, facts, last_id, flags, top, unread =
  recipient_decision(rk, s, sender)
-- The floor of the id (the top of s's view) and the top of r's view, as the
-- user hashes hold them (`t:<peer>`, store_sender_state): unequal, something
-- is owed, and the steps send. Never written is 0 on both sides. Both are
-- written as id_string writes them, so they compare as strings (tonumber of
-- a 16-digit string costs Valkey about 0.3 µs).
local floor = sender.top or '0'
top = top or '0'
if floor ~= top then
  return {4}
end
if not allowed then
  return {2, reason, recipient_handle}
end

-- The limits in the steps' order (messages, new conversations, requests
-- received), all checked before any is charged: a refused send writes nothing.
local now = clock_ms()
local burst, new_limit = tonumber(ARGV[10]), tonumber(ARGV[12])
local tat = nil
if burst > 0 then
  local wait
  wait, tat = messages_wait(sender.bucket, now, burst, tonumber(ARGV[11]))
  if wait > 0 then
    return {3, 'messages', wait}
  end
end
local new_conversation = new_limit > 0 and opens_conversation(sender.flags)
if new_conversation then
  local wait = new_conversations_wait(KEYS[4], now, new_limit, tonumber(ARGV[13]))
  if wait > 0 then
    return {3, 'new_conversations', wait}
  end
end
local requests_wait = admit_request(rk, s, folder, now, tonumber(ARGV[14]), tonumber(ARGV[15]))
if requests_wait > 0 then
  return {3, 'requests_received', requests_wait}
end

local id = issue_id(last_id, now, floor, top, ARGV[18])
local message, stored, own = message_bytes(id, sender.handle, recipient_handle, ARGV[4],
  ARGV[5], ARGV[6], ARGV[9], s, ARGV[17])
local retention = ARGV[7]
-- Only a business has team state (one read less for anyone else).
if not facts.recipient_business then
  rk.team = nil
end
apply_recipient_side(rk, s, id, stored, message, folder, sender.handle, retention, flags, unread)
local copy, sender_flags = write_sender_side(sk, r, id, stored, client_id, ARGV[8], retention,
  ARGV[16], sender.flags, own)

-- The id is above everything in s's view, r's messages included: the read
-- pointer moves to it and nothing is left unread (apply_sender_side).
store_sender_state(KEYS[2], tat, r, sender.flags, sender_flags, id, id, 0)
if new_conversation then
  charge_new_conversation(KEYS[4], now, r, tonumber(ARGV[13]))
end
return {1, id, copy, folder}
