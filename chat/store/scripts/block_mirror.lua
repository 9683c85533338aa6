-- Block, step 2, in the blocked B's slot: make blkby:{b} agree with A's block
-- list (the authority, read just before), and when A blocks B, end B's follow
-- of A and the mirror of A's follow of B, as step 1 did on A's side. Nothing
-- is added for a deleted B. Idempotent.
-- KEYS: 1 blkby:{b}   2 fwing:{b}   3 fwers:{b}   4 user:{b}
-- ARGV: 1 a   2 the edge's score in blk:{a}, '' when A does not block B
-- Returns 1 present, 0 absent.
local a = ARGV[1]
if ARGV[2] == '' or redis.call('HEXISTS', KEYS[4], 'handle') == 0 then
  redis.call('ZREM', KEYS[1], a)
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], a)
redis.call('ZREM', KEYS[2], a)
redis.call('ZREM', KEYS[3], a)
return 1
