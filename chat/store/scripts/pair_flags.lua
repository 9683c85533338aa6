-- The relationship facts of a pair in ONE field of each user's hash, so that a
-- send reads them in the HMGET it makes of that hash anyway (send_parts.lua):
-- no ZSCORE or SISMEMBER of its own per fact (each redis.call costs Valkey
-- about 3.5 µs, docs/performance.md). Field `p:<peer lc>` of `user:{x}`; its
-- value holds single letters, in no particular order, relative to the hash's
-- owner X and the peer Y (no field: none):
--   b  X blocks Y       (the twin of blk:{x} ∋ Y)
--   B  Y blocks X       (the twin of the mirror blkby:{x} ∋ Y)
--   f  X follows Y      (the twin of fwing:{x} ∋ Y)
--   F  Y follows X      (the twin of the mirror fwers:{x} ∋ Y)
--   w  X wrote to Y     (the twin of wrote:{x} ∋ Y)
--   h  Y wrote to X     (the twin of the mirror heard:{x} ∋ Y)
-- The collections stay (lists, pages, an account's deletion read them); every
-- script that adds or removes a member of one sets or clears its letter in
-- the same script, in the same slot. A letter is added only to a live
-- account's hash (an orphan hash would take the handle: create_user.lua);
-- clearing one never makes a hash. chat/store/keys.py names them for Python.

local function has_flag(flags, letter)
  return string.find(flags, letter, 1, true) ~= nil
end

-- `flags` with `letter`, once.
local function flag_added(flags, letter)
  if string.find(flags, letter, 1, true) then
    return flags
  end
  return flags .. letter
end

-- `flags` without any of `letters` (letters only: no pattern characters).
local function flags_without(flags, letters)
  return (string.gsub(flags, '[' .. letters .. ']', ''))
end

-- The pair's field written when it changed: HSET, or HDEL once no letter is left.
local function store_flags(user_key, peer, was, flags)
  if flags == was then
    return
  end
  if flags == '' then
    redis.call('HDEL', user_key, 'p:' .. peer)
  else
    redis.call('HSET', user_key, 'p:' .. peer, flags)
  end
end
