-- Store an internal note and tell the team, in one step: the note, its event in
-- the business's stream (never the customer's) and its publish on the business's
-- channel. The note's id is its entry id in the conversation's notes stream, so
-- the entry keeps only the fields after the id.
--
-- KEYS: 1 notes:{b}:peer   2 ev:{b}   3 ch:{b}
-- ARGV: 1 peer (lower case)   2 the note's fields after its id, as JSON text
--       ('"peer":...,"author":...,"text":...,"created_at":...')
--       3 notes kept per conversation   4 event retention (entries)
--       5 the peer's handle as typed, as JSON
-- Returns {note JSON, cursor}.
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'j', ARGV[2])
local note = '{"id":"' .. id .. '",' .. ARGV[2] .. '}'
local body = '{"type":"note","peer":' .. ARGV[5] .. ',"note":' .. note
local cursor = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'p', ARGV[1], 'f', body)
redis.call('SPUBLISH', KEYS[3], 'n ' .. cursor .. ' ' .. ARGV[1] .. ' -\n'
  .. body .. ',"cursor":"' .. cursor .. '"}')
return {note, cursor}
