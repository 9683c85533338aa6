-- Delete an account, keeping its handle reserved: the user hash becomes a
-- tombstone with no `handle` field, so every lookup sees no such account and
-- create_user.lua still finds the key taken.
-- KEYS: 1 user:{lc}   ARGV: 1 deleted at (ms)
-- Returns 1, or 0 when there is no live account.
if redis.call('HEXISTS', KEYS[1], 'handle') == 0 then
  return 0
end
local created = redis.call('HGET', KEYS[1], 'created')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'deleted', ARGV[1], 'created', created or '')
return 1
