-- A blocks B, step 1 of 2, in A's slot (docs/architecture.md, "Split
-- operations"): the block edge (first time kept), follows ended on A's side (A's
-- follow of B, and the mirror of B's follow of A), and B's conversation out of
-- A's requests with its unread count (a block answers a request; it does not
-- accept it); the pair's letters in A's hash to match (b set, f and F cleared:
-- pair_flags.lua). The outbox records that B's side must follow
-- (chat/store/graph.py).
-- KEYS: 1 blk:{a}   2 fwing:{a}   3 fwers:{a}   4 creq:{a}   5 user:{a}
--       6 the outbox of A's slot
-- ARGV: 1 a   2 b
-- Returns {1, outbox entry} when the block is new, {0} when A already blocked B.
local a, b = ARGV[1], ARGV[2]
redis.call('ZREM', KEYS[2], b)
redis.call('ZREM', KEYS[3], b)
if redis.call('ZREM', KEYS[4], b) == 1 then
  -- The unread count is a field of A's hash (`u:<b>`); deleting one makes no hash.
  redis.call('HDEL', KEYS[5], 'u:' .. b)
end
-- As in follow.lua: the generator and the letters are stored back into a live
-- account's hash only.
local me = redis.call('HMGET', KEYS[5], 'handle', 'idgen', 'p:' .. b)
local was = me[3] or ''
local flags = flag_added(flags_without(was, 'fF'), 'b')
if redis.call('ZSCORE', KEYS[1], b) then
  if me[1] then
    store_flags(KEYS[5], b, was, flags)
  end
  return {0}
end
local id = edge_id(me[2])
redis.call('ZADD', KEYS[1], id, b)
if me[1] then
  redis.call('HSET', KEYS[5], 'idgen', id, 'p:' .. b, flags)
end
return {1, outbox_add(KEYS[6], 'block', cjson.encode({a = a, b = b}))}
