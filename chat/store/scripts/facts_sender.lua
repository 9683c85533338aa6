-- pair_facts, sender A's half (A's slot): what the permission rule needs of A
-- and of A's lists, plus whether A follows B (the `relationship` object) and
-- whether A has the conversation in their requests (A has not accepted B yet).
-- A's blocks and follows of B are the pair's letters in A's hash (b, f:
-- pair_flags.lua), read in the same HMGET as the account, as a send reads
-- them. The recipient's half is facts_recipient.lua; the two run side by side.
-- KEYS: 1 user:{a}   2 creq:{a}
-- ARGV: 1 b
local b = ARGV[1]
local sender = redis.call('HMGET', KEYS[1], 'handle', 'active', 'restricted', 'p:' .. b)
local letters = sender[4] or ''
return {
  {sender[1], sender[2], sender[3]},
  string.find(letters, 'b', 1, true) and 1 or 0,
  string.find(letters, 'f', 1, true) and 1 or 0,
  redis.call('ZSCORE', KEYS[2], b) and 1 or 0,
}
