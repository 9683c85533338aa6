-- Record one report of account t by a reporter, counted once per reporter per
-- window: the reporter's first report since the window (or the last clear)
-- goes into the weighed set and into the operators' log; a repeat changes
-- nothing. Both keys are bounded: the set expires with its window and is
-- capped, the log is capped.
-- KEYS: 1 reporters:{t}   2 reports:{t}
-- ARGV: 1 reporter (lower case)   2 now (ms)   3 window (ms)   4 the log entry (JSON)
--       5 log cap   6 reporters cap
-- Returns 1 when the report counts, 0 for a repeat.
local now, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - window))
local added = redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
if added == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[4])
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
  local count = redis.call('ZCARD', KEYS[1])
  local cap = tonumber(ARGV[6])
  if count > cap then
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, count - cap - 1)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return added
