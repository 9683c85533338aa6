-- Change a webhook's state, never bringing back one that was deleted.
-- KEYS: 1 wh:{lc}:{id}   2 whl:{lc}:{id}
-- ARGV: 1 lease owner, or '' for a change from the API (no lease needed)
--       2 generation the change was computed for, or '' (any)
--       3 a pending ping id to clear if it is still the pending one, or ''
--       4 '1' to start a new generation (a replay)
--       5 number of field/value pairs n   6 .. 5+2n the pairs   then fields to delete
-- Returns 1 when applied; 0 when the webhook is gone; -1 when the lease is not
-- the caller's; -2 when a replay started a newer generation meanwhile.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
if ARGV[2] ~= '' and (redis.call('HGET', KEYS[1], 'gen') or '0') ~= ARGV[2] then
  return -2
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'ping') == ARGV[3] then
  redis.call('HDEL', KEYS[1], 'ping')
end
if ARGV[4] == '1' then
  redis.call('HINCRBY', KEYS[1], 'gen', 1)
end
local pairs_count = tonumber(ARGV[5])
if pairs_count > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 6, 5 + 2 * pairs_count))
end
if #ARGV > 5 + 2 * pairs_count then
  redis.call('HDEL', KEYS[1], unpack(ARGV, 6 + 2 * pairs_count))
end
return 1
