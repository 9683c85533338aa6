-- pair_facts, recipient B's half (B's slot): B's account and what B's own
-- lists say of sender A: B's block, follow and writes are the pair's letters
-- in B's hash (b, f, w: pair_flags.lua), read in the same HMGET as the
-- account, as a send reads them; B's inbox is read from cin:{b}.
-- KEYS: 1 user:{b}   2 cin:{b}
-- ARGV: 1 a
local a = ARGV[1]
local recipient = redis.call('HMGET', KEYS[1], 'handle', 'name', 'kind', 'open_dms', 'greeting',
  'active', 'rr', 'qr', 'p:' .. a)
local letters = recipient[9] or ''
recipient[9] = nil
return {
  recipient,
  string.find(letters, 'b', 1, true) and 1 or 0,
  string.find(letters, 'f', 1, true) and 1 or 0,
  string.find(letters, 'w', 1, true) and 1 or 0,
  redis.call('ZSCORE', KEYS[2], a) and 1 or 0,
}
