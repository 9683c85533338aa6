-- A deleted account out of the other side of one of its edges
-- (accounts.finish_deletion): the member goes from the peer's list, and its
-- letter from the pair's field in the peer's hash (pair_flags.lua). Clearing
-- a letter never makes a hash. Idempotent.
-- KEYS: 1 the peer's list (fwers:, fwing:, blkby: or blk:)   2 the peer's user hash
-- ARGV: 1 the deleted account (lc)   2 its letter in the peer's hash
redis.call('ZREM', KEYS[1], ARGV[1])
local was = redis.call('HGET', KEYS[2], 'p:' .. ARGV[1])
if was then
  store_flags(KEYS[2], ARGV[1], was, flags_without(was, ARGV[2]))
end
return 1
