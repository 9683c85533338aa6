-- Unfollow or unblock, step 1 of 2, in A's slot: the edge goes, with its letter
-- in A's hash (f or b, pair_flags.lua), and the outbox records that B's mirror
-- must follow (kind 'follow' or 'block', the same mirror step as adding the
-- edge: chat/store/graph.py).
-- KEYS: 1 fwing:{a} or blk:{a}   2 the outbox of A's slot   3 user:{a}
-- ARGV: 1 a   2 b   3 kind
-- Returns the outbox entry, or false when there was no such edge.
local b = ARGV[2]
local removed = redis.call('ZREM', KEYS[1], b)
-- Clearing a letter writes only a field that exists: it never makes a hash.
local was = redis.call('HGET', KEYS[3], 'p:' .. b)
if was then
  store_flags(KEYS[3], b, was, flags_without(was, ARGV[3] == 'follow' and 'f' or 'b'))
end
if removed == 0 then
  return false
end
return outbox_add(KEYS[2], ARGV[3], cjson.encode({a = ARGV[1], b = b}))
