-- The limits checked inside the send script, in Lua: the twins of gcra and
-- sliding_window in limits.py, with the same integer arithmetic.
-- tests/test_limits.py holds them equal to the Python. Change both or neither.

-- Returns allowed, the new theoretical arrival time (or the old one when
-- refused), and the milliseconds to wait when refused.
local function gcra(tat_ms, now_ms, burst, period_ms)
  local interval = math.max(1, math.floor(period_ms / burst))
  local tat = now_ms
  if tat_ms and tat_ms >= now_ms then
    tat = tat_ms
  end
  local ahead = tat + interval - now_ms
  local capacity = interval * burst
  if ahead > capacity then
    return false, tat, ahead - capacity
  end
  return true, tat + interval, 0
end

-- Returns allowed and the milliseconds to wait when refused.
local function sliding_window(count, oldest_ms, now_ms, limit, window_ms)
  if count < limit then
    return true, 0
  end
  local oldest = oldest_ms or now_ms
  return false, math.max(1, oldest + window_ms - now_ms)
end
