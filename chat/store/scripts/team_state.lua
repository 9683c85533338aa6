-- Change the team's status and/or assignee of one conversation, and tell the
-- team: the change, its event in the business's stream and its publish are one
-- step, so a socket resuming by cursor sees exactly what live sockets saw.
--
-- KEYS: 1 tconv:{b}   2 ev:{b}   3 ch:{b}
-- ARGV: 1 peer (lower case)   2 peer's handle as typed   3 new status or ''
--       4 'keep' | 'set'   5 assignee handle as typed, '' for none
--       6 the agent's handle as typed   7 event retention (entries)
-- Returns {state JSON, cursor}.
local current = redis.call('HGET', KEYS[1], ARGV[1])
local state = {status = 'open', assignee = cjson.null}
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' then
    state.status = decoded.status or 'open'
    if decoded.assignee then state.assignee = decoded.assignee end
  end
end
if ARGV[3] ~= '' then state.status = ARGV[3] end
if ARGV[4] == 'set' then
  if ARGV[5] == '' then state.assignee = cjson.null else state.assignee = ARGV[5] end
end
local encoded = cjson.encode({status = state.status, assignee = state.assignee})
redis.call('HSET', KEYS[1], ARGV[1], encoded)

local body = '{"type":"conversation","peer":' .. cjson.encode(ARGV[2])
  .. ',"status":' .. cjson.encode(state.status)
  .. ',"assignee":' .. cjson.encode(state.assignee)
  .. ',"by":' .. cjson.encode(ARGV[6])
local cursor = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'p', ARGV[1], 'f', body)
redis.call('SPUBLISH', KEYS[3], 'c ' .. cursor .. ' ' .. ARGV[1] .. ' -\n'
  .. body .. ',"cursor":"' .. cursor .. '"}')
return {encoded, cursor}
