-- pair_facts, recipient B's half (B's slot): B's account and what B's lists say
-- of sender A. Read natively, not from mirrors: B's own block, follow, writes
-- and inbox.
-- KEYS: 1 user:{b}   2 blk:{b}   3 fwing:{b}   4 wrote:{b}   5 cin:{b}
-- ARGV: 1 a
local a = ARGV[1]
return {
  redis.call('HMGET', KEYS[1], 'handle', 'name', 'kind', 'open_dms', 'greeting', 'active', 'rr', 'qr'),
  redis.call('ZSCORE', KEYS[2], a) and 1 or 0,
  redis.call('ZSCORE', KEYS[3], a) and 1 or 0,
  redis.call('SISMEMBER', KEYS[4], a),
  redis.call('ZSCORE', KEYS[5], a) and 1 or 0,
}
