-- Add a webhook unless the account already has the most it may have.
-- KEYS: 1 whs:{lc}   2 wh:{lc}:{id}
-- ARGV: 1 id   2 the most webhooks per account   3.. field, value pairs
-- Returns 1 when created, 0 when the account is at its limit.
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
return 1
