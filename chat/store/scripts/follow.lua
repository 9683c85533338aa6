-- Follow, step 1 of 2, in the follower A's slot (docs/architecture.md, "Split
-- operations"): refuse across a block either way (A's own list and the mirror
-- blkby:{a} of B's list), else add the edge, keeping its first time, with its
-- letter f in A's hash (pair_flags.lua), and record in the outbox that B's
-- mirror fwers:{b} must follow (chat/store/graph.py).
-- KEYS: 1 fwing:{a}   2 blk:{a}   3 blkby:{a}   4 user:{a}   5 the outbox of A's slot
-- ARGV: 1 a   2 b
-- Returns {1, outbox entry} added, {0} already there, {-1} a blocks b, {-2} b blocks a.
local a, b = ARGV[1], ARGV[2]
if redis.call('ZSCORE', KEYS[2], b) then
  return {-1}
end
if redis.call('ZSCORE', KEYS[3], b) then
  return {-2}
end
if redis.call('ZSCORE', KEYS[1], b) then
  return {0}
end
-- The edge's id from A's generator, stored back with the letter only into a
-- live account's hash (a follow racing A's deletion must not make a hash of
-- its own).
local me = redis.call('HMGET', KEYS[4], 'handle', 'idgen', 'p:' .. b)
local id = edge_id(me[2])
redis.call('ZADD', KEYS[1], id, b)
if me[1] then
  redis.call('HSET', KEYS[4], 'idgen', id, 'p:' .. b, flag_added(me[3] or '', 'f'))
end
return {1, outbox_add(KEYS[5], 'follow', cjson.encode({a = a, b = b}))}
