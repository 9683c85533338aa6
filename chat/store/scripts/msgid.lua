-- The Lua twin of next_id in chat/store/msgid.py (read its docstring for why):
-- the same arithmetic on doubles, exact below 2^53. tests/test_msgid.py holds
-- them equal. Change both or neither.
local IDS_PER_MS = 1000

local function next_message_id(now_ms, last, floor, top, parity)
  local candidate = math.max(now_ms * IDS_PER_MS, last + 1, floor + 1, top + 1)
  if candidate % 2 ~= parity then
    candidate = candidate + 1
  end
  return candidate
end

-- An id as the decimal string clients see (tostring would write 1.7e+15).
-- '%d' (an integer conversion: ids are below 2^53) costs Valkey about a third
-- of '%.0f', which formats a double.
local function id_string(id)
  return string.format('%d', id)
end
