-- An event stream's bounds, and the events after a position: what a resuming
-- socket (bounds only) and a webhook (bounds and a page) both need.
-- KEYS: 1 ev:{lc}   ARGV: 1 position (exclusive)   2 most entries (0: only the bounds)
-- Returns {newest id, oldest id kept when older ones were trimmed ('0-0' when
-- nothing was), entries}. A position below that floor cannot be replayed
-- without a gap.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'0-0', '0-0', {}}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local fields = {}
for i = 1, #info, 2 do
  fields[info[i]] = info[i + 1]
end
local floor = '0-0'
if tonumber(fields['entries-added']) > tonumber(fields['length']) then
  floor = fields['recorded-first-entry-id']
end
local entries = {}
if ARGV[2] ~= '0' then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
end
return {fields['last-generated-id'], floor, entries}
