-- Take back one edge if it is still the one that was read (same score): a
-- follow refused by step 2 is undone without touching a newer follow.
-- KEYS: 1 the sorted set   ARGV: 1 member   2 score
-- Returns 1 removed, 0 not there or a different edge.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
