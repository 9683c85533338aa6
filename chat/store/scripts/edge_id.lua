-- The order of a follow or block edge (its score in both users' lists, and the
-- lists' page cursors): the next id of the writing slot's generator, the user
-- hash's field `idgen` (`last`, as the caller read it, or false), the generator
-- message ids come from (msgid.lua, prepended). The caller stores the id back
-- as `idgen`, in the same HSET as anything else it writes there. No parity: an
-- edge list is written by one slot's generator only.
local function edge_id(last)
  local time = redis.call('TIME')
  local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  return id_string(next_message_id(now_ms, tonumber(last or '0'), 0, 0, 0))
end
