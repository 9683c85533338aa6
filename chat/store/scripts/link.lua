-- Follow: add the edge once, keeping its first time; both directions, and never
-- across a block in either direction (a block ends follows and keeps them ended).
-- KEYS: 1 seq   2 fwing:{a}   3 fwers:{b}   4 blk:{a}   5 blk:{b}
-- ARGV: 1 a   2 b
-- Returns 1 added, 0 already there, -1 a blocks b, -2 b blocks a.
if redis.call('ZSCORE', KEYS[4], ARGV[2]) then
  return -1
end
if redis.call('ZSCORE', KEYS[5], ARGV[1]) then
  return -2
end
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then
  return 0
end
local n = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], n, ARGV[2])
redis.call('ZADD', KEYS[3], n, ARGV[1])
return 1
