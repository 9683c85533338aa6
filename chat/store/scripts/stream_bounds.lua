-- The newest id of an event stream, and the oldest id it still holds when
-- older entries were trimmed away ('0-0' when nothing was): a cursor below that
-- floor cannot be replayed without a gap.
-- KEYS: 1 ev:{user}
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'0-0', '0-0'}
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
return {fields['last-generated-id'], floor}
