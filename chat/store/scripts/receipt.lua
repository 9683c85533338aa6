-- A read receipt, step 2 of 2, in the peer's slot: the receipt event in the
-- peer's stream and on their channel, unless, since step 1 looked, the peer
-- blocked the reader, turned receipts off, or has the reader in their requests
-- (PRODUCT.md: none of these get receipts). Idempotent: rcpt:{peer} keeps the
-- last up_to delivered from each reader, so a receipt the reconciler runs again
-- (or an older one it runs late) is not delivered twice.
-- KEYS: 1 ev:{peer}   2 ch:{peer}   3 blk:{peer}   4 user:{peer}   5 creq:{peer}
--       6 rcpt:{peer}
-- ARGV: 1 me (the reader, lower case)   2 the read frame body without its cursor
--       3 event retention   4 up_to
-- Returns 1 delivered, 0 no longer wanted or delivered already.
local me, body = ARGV[1], ARGV[2]
local delivered = redis.call('HGET', KEYS[6], me)
if delivered and tonumber(delivered) >= tonumber(ARGV[4]) then
  return 0
end
if redis.call('ZSCORE', KEYS[3], me) or redis.call('ZSCORE', KEYS[5], me) then
  return 0
end
local peer = redis.call('HMGET', KEYS[4], 'handle', 'rr')
if not peer[1] or peer[2] == '0' then
  return 0
end
redis.call('HSET', KEYS[6], me, ARGV[4])
local cursor = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'p', me, 'f', body)
redis.call('SPUBLISH', KEYS[2], 'r ' .. cursor .. ' ' .. me .. ' -\n' .. body .. ',"cursor":"' .. cursor .. '"}')
return 1
