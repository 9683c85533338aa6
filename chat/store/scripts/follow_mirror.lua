-- Follow, step 2, in the followee B's slot: make B's followers list agree with
-- what A's following list said (the authority, read just before): present with
-- its score, or absent, and the letter F in B's hash with it (pair_flags.lua).
-- A follow never lands across B's block of A; the caller then takes A's edge
-- back. Nothing is added for a deleted B (a reconciler late with an old entry
-- must not bring its keys back). Idempotent.
-- KEYS: 1 fwers:{b}   2 blk:{b}   3 user:{b}
-- ARGV: 1 a   2 the edge's score in fwing:{a}, '' when A does not follow B
-- Returns 1 present, 0 absent, -1 refused: B blocks A.
local a = ARGV[1]
local me = redis.call('HMGET', KEYS[3], 'handle', 'p:' .. a)
local was = me[2] or ''
if ARGV[2] == '' or not me[1] then
  redis.call('ZREM', KEYS[1], a)
  store_flags(KEYS[3], a, was, flags_without(was, 'F'))
  return 0
end
if redis.call('ZSCORE', KEYS[2], a) then
  redis.call('ZREM', KEYS[1], a)
  store_flags(KEYS[3], a, was, flags_without(was, 'F'))
  return -1
end
redis.call('ZADD', KEYS[1], ARGV[2], a)
store_flags(KEYS[3], a, was, flag_added(was, 'F'))
return 1
