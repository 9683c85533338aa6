-- The order of a follow or block edge (its score in both users' lists, and the
-- lists' page cursors): the next id of the writing slot's generator idgen:{lc},
-- the generator message ids come from (msgid.lua, prepended). No parity: an edge
-- list is written by one slot's generator only.
local function edge_id(idgen_key)
  local time = redis.call('TIME')
  local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local id = id_string(next_message_id(now_ms, tonumber(redis.call('GET', idgen_key) or '0'), 0, 0, 0))
  redis.call('SET', idgen_key, id)
  return id
end
