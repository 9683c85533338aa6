-- Renew (ARGV[2] > 0, milliseconds) or release (ARGV[2] == 0) a lease, only if
-- the caller still holds it. KEYS: 1 whl:{lc}:{id}   ARGV: 1 owner   2 ttl ms
-- Returns 1 when the caller held it, 0 otherwise.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
