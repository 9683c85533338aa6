#!lua flags=no-writes,allow-cross-slot-keys
-- Which of these outboxes (all on this node, any slots) hold entries? One call
-- per node instead of one command per slot: the reconciler's whole sweep.
-- ARGV: outboxes (not KEYS: a cluster refuses declared keys of several slots
-- even with allow-cross-slot-keys; the flag lets the script reach them)
-- Returns the names of those that are not empty.
local found = {}
for _, key in ipairs(ARGV) do
  if redis.call('XLEN', key) > 0 then
    found[#found + 1] = key
  end
end
return found
