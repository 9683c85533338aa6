-- An operation is complete: forget its outbox entries.
-- KEYS: 1 the outbox   ARGV: entry ids
-- Returns how many entries were removed.
redis.call('XACK', KEYS[1], 'reconcile', unpack(ARGV))
return redis.call('XDEL', KEYS[1], unpack(ARGV))
