-- The newest id of an event stream and the newest id trimmed away from it,
-- which together say whether a cursor can still be replayed.
-- KEYS: 1 ev:{user}
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'0-0', '0-0'}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, deleted = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
return {last, deleted}
