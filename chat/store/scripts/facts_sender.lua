-- pair_facts, sender A's half (A's slot): what the permission rule needs of A
-- and of A's lists, plus whether A follows B (the `relationship` object) and
-- whether A has the conversation in their requests (A has not accepted B yet).
-- The recipient's half is facts_recipient.lua; the two run side by side.
-- KEYS: 1 user:{a}   2 blk:{a}   3 fwing:{a}   4 creq:{a}
-- ARGV: 1 b
local b = ARGV[1]
return {
  redis.call('HMGET', KEYS[1], 'handle', 'active', 'restricted'),
  redis.call('ZSCORE', KEYS[2], b) and 1 or 0,
  redis.call('ZSCORE', KEYS[3], b) and 1 or 0,
  redis.call('ZSCORE', KEYS[4], b) and 1 or 0,
}
