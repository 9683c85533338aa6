-- Delete an account, keeping its handle reserved: the user hash becomes a
-- tombstone with no `handle` field, so every lookup sees no such account and
-- create_user.lua still finds the key taken.
-- The tombstone is step 1 of the deletion: the rest (sessions, teams, webhooks,
-- the account out of everyone's lists: chat/store/accounts.py) is recorded in
-- the outbox of the account's slot, so the reconciler finishes it if the
-- process dies on the way.
-- KEYS: 1 user:{lc}   2 the outbox of lc's slot   ARGV: 1 deleted at (ms)   2 lc
-- Returns the outbox entry, or 0 when there is no live account.
if redis.call('HEXISTS', KEYS[1], 'handle') == 0 then
  return 0
end
local created = redis.call('HGET', KEYS[1], 'created')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'deleted', ARGV[1], 'created', created or '')
return outbox_add(KEYS[2], 'delete', cjson.encode({lc = ARGV[2]}))
