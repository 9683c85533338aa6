-- Block, step 2, in the blocked B's slot: make blkby:{b} agree with A's block
-- list (the authority, read just before), and when A blocks B, end B's follow
-- of A and the mirror of A's follow of B, as step 1 did on A's side; the
-- pair's letters in B's hash to match (B set or cleared, f and F cleared:
-- pair_flags.lua). Nothing is added for a deleted B. Idempotent.
-- KEYS: 1 blkby:{b}   2 fwing:{b}   3 fwers:{b}   4 user:{b}
-- ARGV: 1 a   2 the edge's score in blk:{a}, '' when A does not block B
-- Returns 1 present, 0 absent.
local a = ARGV[1]
local me = redis.call('HMGET', KEYS[4], 'handle', 'p:' .. a)
local was = me[2] or ''
if ARGV[2] == '' or not me[1] then
  redis.call('ZREM', KEYS[1], a)
  store_flags(KEYS[4], a, was, flags_without(was, 'B'))
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], a)
redis.call('ZREM', KEYS[2], a)
redis.call('ZREM', KEYS[3], a)
store_flags(KEYS[4], a, was, flag_added(flags_without(was, 'fF'), 'B'))
return 1
