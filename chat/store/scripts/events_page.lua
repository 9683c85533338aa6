-- A page of one user's events after a cursor, bounded by a count and by bytes,
-- so that a replay holds one page in memory however large the events are.
-- KEYS: 1 ev:{user}
-- ARGV: 1 cursor (exclusive), 2 most events, 3 most bytes (field values summed;
--       the first event is always taken, whatever its size)
-- Returns {more, id, fields, id, fields...}; more is 1 when events may follow.
local start = '(' .. ARGV[1]
local left = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
-- Small XRANGE batches: each is loaded whole into the script's memory.
local BATCH = 32
local out = {0}
local size = 0
while true do
  local want = math.min(left, BATCH)
  if want <= 0 then
    out[1] = 1
    return out
  end
  local batch = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', want)
  for _, entry in ipairs(batch) do
    local n = 0
    local fields = entry[2]
    for i = 2, #fields, 2 do
      n = n + #fields[i]
    end
    if #out > 1 and size + n > budget then
      out[1] = 1
      return out
    end
    out[#out + 1] = entry[1]
    out[#out + 1] = fields
    size = size + n
    left = left - 1
    start = '(' .. entry[1]
  end
  if #batch < want then
    return out
  end
end
