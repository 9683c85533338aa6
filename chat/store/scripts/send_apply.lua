-- Step 3 of a send s → r, in s's slot (chat/store/sends.py): the sender's side
-- of a message that step 2 stored for good. Idempotent: the process that ran
-- step 2 runs it, and a reconciler may run it again from the outbox payload.
-- The send's library goes in front (sends.py: SEND_LIB, the pieces it calls).
--
-- KEYS: 1 user:{s}   2 msgs:{s}:r   3 wrote:{s}   4 creq:{s}   5 cin:{s}
--       6 newconv:{s}   7 cid:{s}   8 ev:{s}   9 ch:{s}   10 sending:{s}:r
-- ARGV: 1 r   2 id   3 the view member (views.py)   4 client_id or ''
--       5 origin connection id or '-'   6 a new conversation ('1'|'0')
--       7 event retention   8 seconds a client_id is remembered (0: forever)
--       9 messages burst   10 its period (ms)   11 new conversations' window (ms)
--       12 '1' when this call ends a send that step 1 marked (not a reconciler's)
--       13 the time (ms) step 1 checked the limits at, or 0 (a reconciler's:
--       this step reads the clock when it charges)
--       14 N, the count of ids that follow: s's earlier messages in r's view
--       15 .. 14+N those ids; then (id, view member, origin) triples: those of
--       them that s's view lacked when an earlier call answered with them
-- Returns 1 when applied now, 0 when it was already, -1 when s has no account
-- any more (its keys are gone; nothing to bring back); {ids} when s's view
-- lacks some of s's earlier messages and they must be passed in (nothing
-- written).
local r = ARGV[1]
local keys_of_s = {view = KEYS[2], wrote = KEYS[3], requests = KEYS[4], inbox = KEYS[5],
  cids = KEYS[7], events = KEYS[8], channel = KEYS[9]}

-- s's earlier messages to r that s's view lacks go first, in id order, so that
-- s's history and sockets have them before this one.
local missing, owed, supplied, origins = owed_messages(KEYS[2], 14)
if #missing > 0 then
  return missing
end

if ARGV[12] == '1' then
  unmark_send(KEYS[10])
end
-- s's hash, once: the account, its bucket, the pair's letters (its `w` goes
-- with the first message s's side gets; pair_flags.lua) and s's read pointer
-- (`r:<r>`), which s's messages move.
local me = redis.call('HMGET', KEYS[1], 'handle', 'msgrate', 'p:' .. r, 'r:' .. r)
if not me[1] then
  return -1
end
local flags = me[3] or ''
local side = {flags = flags, read = me[4]}
local owed_top = apply_owed(keys_of_s, r, owed, supplied, origins, ARGV[7], ARGV[8], side)
local applied, top = apply_sender_side(keys_of_s, r, ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[7],
  ARGV[8], side)
-- The view's true top (`t:<r>`, store_sender_state), whatever a crash left there.
if owed_top and tonumber(owed_top) > tonumber(top) then
  top = owed_top
end
top = id_string(tonumber(top))
if not applied then
  store_sender_state(KEYS[1], nil, r, flags, side.flags, top, side.read, side.unread)
  return 0
end

-- The sender-side limits that step 1 checked are charged now; sends of one
-- sender in flight together can overshoot them by that many (documented). The
-- bucket's charge is gcra's (limits.lua) without its refusal: step 1 refused.
local burst = tonumber(ARGV[9])
local tat = nil
if burst > 0 or ARGV[6] == '1' then
  local now = tonumber(ARGV[13])
  if now == 0 then
    now = clock_ms()
  end
  if burst > 0 then
    tat = charged_bucket(me[2], now, burst, tonumber(ARGV[10]))
  end
  if ARGV[6] == '1' then
    charge_new_conversation(KEYS[6], now, r, tonumber(ARGV[11]))
  end
end
store_sender_state(KEYS[1], tat, r, flags, side.flags, top, side.read, side.unread)
return 1
