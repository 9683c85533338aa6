-- `dmhub admin backfill` (chat/store/backfill.py), one account, one bounded
-- batch: what a deployment written before the relationship letters and the
-- read state moved into the user hash lacks, derived from what it kept.
-- Idempotent: a second run finds everything as it leaves it.
--
--   letters: every peer named by a `p:` field of the user hash or by one of
--     the six collections gets exactly the letters the collections back
--     (pair_flags.lua); a letter nothing backs is cleared.
--   read state: each field of rd:{lc} / unread:{lc} becomes `r:<peer>` /
--     `u:<peer>` of the user hash unless that field is there already (written
--     by this version since: newer); each old hash goes once it is read through.
--
-- Only a live account (the hash has `handle`): a tombstone is left as it is,
-- and no hash is ever made.
--
-- KEYS: 1 user:{lc}   2 blk:{lc}   3 blkby:{lc}   4 fwing:{lc}   5 fwers:{lc}
--       6 wrote:{lc}   7 heard:{lc}   8 rd:{lc}   9 unread:{lc}
-- ARGV: 1 the source to go on with (1: the user hash's `p:` fields, 2-7 the
--       collections of KEYS[2-7], 8 rd, 9 unread)   2 its cursor ('0' first)
--       3 the budget: about how many members, fields or entries this call reads
--       (a SCAN's COUNT is a hint: a small packed set or hash comes whole, at
--       most Valkey's listpack size, a few hundred)
-- Returns {live (0|1), next source (10: done), its cursor, letters set,
--          letters cleared, read pointers moved, unread counts moved, old hashes deleted}
local user = KEYS[1]
if redis.call('HEXISTS', user, 'handle') == 0 then
  return {0, 10, '0', 0, 0, 0, 0, 0}
end

-- The letters in KEYS[2..7]'s order; 2-5 are sorted sets, 6-7 sets.
local LETTERS = 'bBfFwh'
local set, cleared, pointers, counts, deleted = 0, 0, 0, 0, 0

local function backed(peer)
  local want = ''
  for i = 1, 6 do
    local key = KEYS[i + 1]
    local member
    if i <= 4 then
      member = redis.call('ZSCORE', key, peer)
    else
      member = redis.call('SISMEMBER', key, peer) == 1
    end
    if member then
      want = want .. string.sub(LETTERS, i, i)
    end
  end
  return want
end

-- The pair's field made the collections' twin. Readers look letters up
-- (has_flag), so letters in another order are left as they are.
local function settle(peer)
  local raw = redis.call('HGET', user, 'p:' .. peer)
  local was = raw or ''
  local want = backed(peer)
  -- An empty field, or a letter twice, is rewritten too.
  local same = #was == #want and not (raw and raw == '')
  for i = 1, 6 do
    local letter = string.sub(LETTERS, i, i)
    local wanted, held = has_flag(want, letter), has_flag(was, letter)
    if wanted and not held then
      set = set + 1
      same = false
    elseif held and not wanted then
      cleared = cleared + 1
      same = false
    end
  end
  if not same then
    store_flags(user, peer, false, want)
  end
end

local function move(peer, value, prefix)
  if redis.call('HEXISTS', user, prefix .. peer) == 0 then
    redis.call('HSET', user, prefix .. peer, value)
    return 1
  end
  return 0
end

local source, cursor, budget = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
while source <= 9 and budget > 0 do
  local key = KEYS[source]
  local nxt, taken
  if source >= 2 and source <= 5 then
    -- A sorted set pages by rank: nothing here changes it.
    local from = tonumber(cursor)
    local members = redis.call('ZRANGE', key, from, from + budget - 1)
    for _, member in ipairs(members) do
      settle(member)
    end
    taken = #members
    nxt = #members < budget and '0' or tostring(from + #members)
  elseif source == 6 or source == 7 then
    local page = redis.call('SSCAN', key, cursor, 'COUNT', budget)
    for _, member in ipairs(page[2]) do
      settle(member)
    end
    nxt, taken = page[1], #page[2]
  else
    local page = redis.call('HSCAN', key, cursor, 'COUNT', budget)
    local items = page[2]
    for i = 1, #items, 2 do
      local field = items[i]
      if source == 1 then
        if string.sub(field, 1, 2) == 'p:' then
          settle(string.sub(field, 3))
        end
      elseif source == 8 then
        pointers = pointers + move(field, items[i + 1], 'r:')
      else
        counts = counts + move(field, items[i + 1], 'u:')
      end
    end
    nxt, taken = page[1], #items / 2
    if nxt == '0' and source >= 8 then
      deleted = deleted + redis.call('DEL', key)
    end
  end
  budget = budget - math.max(taken, 1)
  if nxt == '0' then
    source, cursor = source + 1, '0'
  else
    cursor = nxt
  end
end
return {1, source, cursor, set, cleared, pointers, counts, deleted}
