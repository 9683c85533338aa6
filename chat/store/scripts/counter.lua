-- One event in a fixed window (limits.fixed_window): the window starts with
-- its first event and the counter expires with it, so an idle account keeps
-- no key. KEYS: 1 the counter   ARGV: 1 the window (ms)
-- Returns {events in this window so far, milliseconds until it ends}.
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  -- A counter left without an expiry (it should not happen) must not live forever.
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
