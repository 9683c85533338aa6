-- A blocks B, all at once: the block edge (both directions, first time kept),
-- follows removed both ways, and B's conversation out of A's requests with its
-- unread count (a block answers a request; it does not accept it).
-- KEYS: 1 seq   2 blk:{a}   3 blkby:{b}   4 fwing:{a}   5 fwers:{b}   6 fwing:{b}
--       7 fwers:{a}   8 creq:{a}   9 unread:{a}
-- ARGV: 1 a   2 b
-- Returns 1 when the block is new, 0 when A already blocked B.
local a, b = ARGV[1], ARGV[2]
redis.call('ZREM', KEYS[4], b)
redis.call('ZREM', KEYS[5], a)
redis.call('ZREM', KEYS[6], a)
redis.call('ZREM', KEYS[7], b)
if redis.call('ZREM', KEYS[8], b) == 1 then
  redis.call('HDEL', KEYS[9], b)
end
if redis.call('ZSCORE', KEYS[2], b) then
  return 0
end
local n = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], n, b)
redis.call('ZADD', KEYS[3], n, a)
return 1
