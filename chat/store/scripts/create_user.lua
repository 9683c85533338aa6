-- Create an account unless the handle is taken in any letter case.
-- KEYS: 1 user:{lower}   ARGV: field, value, field, value, ...
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
