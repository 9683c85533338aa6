-- Take back one edge if it is still the one that was read (same score): a
-- follow refused by step 2 is undone without touching a newer follow; its
-- letter in the owner's hash goes with it (pair_flags.lua).
-- KEYS: 1 the sorted set   2 its owner's user hash
-- ARGV: 1 member   2 score   3 the edge's letter in the owner's hash
-- Returns 1 removed, 0 not there or a different edge.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  local was = redis.call('HGET', KEYS[2], 'p:' .. ARGV[1])
  if was then
    store_flags(KEYS[2], ARGV[1], was, flags_without(was, ARGV[3]))
  end
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
