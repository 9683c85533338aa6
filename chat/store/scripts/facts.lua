-- Every fact the permission rule needs about sender A and recipient B, in one
-- round trip, plus whether A follows B (for the `relationship` object) and
-- whether A has the conversation in their requests (A has not accepted B yet).
-- KEYS: 1 user:{a}  2 user:{b}  3 blk:{a}  4 blk:{b}  5 fwing:{b}  6 wrote:{b}
--       7 cin:{b}   8 fwing:{a}   9 creq:{a}
-- ARGV: 1 a  2 b
local a, b = ARGV[1], ARGV[2]
return {
  redis.call('HMGET', KEYS[1], 'handle', 'active', 'restricted'),
  redis.call('HMGET', KEYS[2], 'handle', 'name', 'kind', 'open_dms', 'greeting', 'active', 'rr', 'qr'),
  redis.call('ZSCORE', KEYS[3], b) and 1 or 0,
  redis.call('ZSCORE', KEYS[4], a) and 1 or 0,
  redis.call('ZSCORE', KEYS[5], a) and 1 or 0,
  redis.call('SISMEMBER', KEYS[6], a),
  redis.call('ZSCORE', KEYS[7], a) and 1 or 0,
  redis.call('ZSCORE', KEYS[8], b) and 1 or 0,
  redis.call('ZSCORE', KEYS[9], b) and 1 or 0,
}
