-- Step 1 of a send s → r, in s's slot (chat/store/sends.py): the sender's own
-- facts, the sender-side limits checked (not charged: step 3 charges them), the
-- floor of the message id, and one write: the mark that s has a send to r in
-- flight, which a message from r to s decided meanwhile waits for (send_decide).
-- The send's library goes in front (sends.py: SEND_LIB, the pieces it calls).
--
-- KEYS: 1 user:{s}   2 cid:{s}   3 msgs:{s}:r   4 newconv:{s}   5 sending:{s}:r
-- ARGV: 1 client_id or ''   2 r (lower case)   3 messages burst   4 its period (ms)
--       5 new conversations   6 their window (ms); a limit of 0 is off
--       7 how long a mark lasts (ms), or 0 when this send is marked already
-- Returns {0, id, peer} when this client_id was sent before (the send is over);
-- else {1, handle or '', active, restricted '1'|'0', blocks r '1'|'0', floor,
-- ms to wait for `messages` (0: allowed), new conversation '1'|'0',
-- ms to wait for `new_conversations` (0: allowed), {ids of r's latest messages
-- here}, {ids of the latest messages here}, the time (ms) the limits were
-- checked at, or 0}: step 2 completes any of r's that r's view still lacks.
local client_id, r = ARGV[1], ARGV[2]

if client_id ~= '' then
  local seen = redis.call('HGET', KEYS[2], client_id)
  if seen then
    local bar = string.find(seen, '|', 1, true)
    return {0, string.sub(seen, 1, bar - 1), string.sub(seen, bar + 1)}
  end
end

-- The mark expires on its own if the process dies before its last step takes
-- it back. Its expiry is set when the count rises from 0, not by every send:
-- a count a killed process left would otherwise live as long as s keeps
-- writing to r, and every send of r's to s would wait for it in vain.
local mark_ms = tonumber(ARGV[7])
if mark_ms > 0 and redis.call('INCR', KEYS[5]) == 1 then
  redis.call('PEXPIRE', KEYS[5], mark_ms)
end

local sender = sender_facts({user = KEYS[1]}, r)
-- The floor of the new id is the top of this view. Among its latest entries,
-- r's own messages: one missing from r's view is a send whose sender's side is
-- still owed (its process died), which step 2 completes before this message.
local OWED_SCAN = 4
local latest = redis.call('ZREVRANGE', KEYS[3], 0, OWED_SCAN - 1, 'WITHSCORES')
-- All of their ids go back too: step 3 need not look in this view again for
-- s's earlier messages seen here (a view only loses messages with its account).
local top = latest[2] or '0'
local theirs, seen = {}, {}
for i = 1, #latest, 2 do
  seen[#seen + 1] = latest[i + 1]
  if written_by(latest[i], r) then
    theirs[#theirs + 1] = latest[i + 1]
  end
end

-- The limits' clock reading, given to step 3, which charges what this step
-- checked at the same time (a TIME costs what any call does). Not step 2's:
-- its id needs the time of the decision (send_decide.lua).
local now = 0
local burst, new_limit = tonumber(ARGV[3]), tonumber(ARGV[5])
local messages_wait_ms, new_conversation, new_wait = 0, false, 0
if burst > 0 or new_limit > 0 then
  now = clock_ms()
  if burst > 0 then
    messages_wait_ms = messages_wait(sender.bucket, now, burst, tonumber(ARGV[4]))
  end
  new_conversation = new_limit > 0 and opens_conversation(sender.flags)
  if new_conversation then
    new_wait = new_conversations_wait(KEYS[4], now, new_limit, tonumber(ARGV[6]))
  end
end

return {1, sender.handle, sender.active, sender.restricted and '1' or '0',
  sender.blocks and '1' or '0', top, messages_wait_ms, new_conversation and '1' or '0', new_wait,
  theirs, seen, now}
