-- Add an edge (follow or block) once, keeping its first time; both directions.
-- KEYS: 1 seq   2 forward zset {a}   3 reverse zset {b}   ARGV: 1 a   2 b
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then
  return 0
end
local n = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], n, ARGV[2])
redis.call('ZADD', KEYS[3], n, ARGV[1])
return 1
