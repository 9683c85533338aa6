-- Remove a webhook, its lease with it. KEYS: 1 whs:{lc}   2 wh:{lc}:{id}   3 whl:{lc}:{id}
-- ARGV: 1 id. Returns {removed (0|1), webhooks left}.
local removed = redis.call('SREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
return {removed, redis.call('SCARD', KEYS[1])}
