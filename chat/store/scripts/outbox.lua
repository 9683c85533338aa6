-- The outbox of one hash slot (chat/store/outbox.py): what a split operation
-- still has to do in another slot. Prepended to the script of an operation's
-- first step, so that the step's effect and the record of what remains are one
-- atomic write.
--
-- The entry is delivered to the consumer 'inflight' at once, in this same
-- script, so it is pending from its first moment: the process that wrote it
-- finishes the operation and removes it (outbox_done.lua); if that process
-- dies, the entry idles, and a reconciler claims it with XAUTOCLAIM. Every
-- process uses the same two consumer names, so the group never grows with
-- restarts.
local function outbox_add(key, kind, payload)
  if redis.call('EXISTS', key) == 0 then
    redis.call('XGROUP', 'CREATE', key, 'reconcile', '$', 'MKSTREAM')
  end
  local entry = redis.call('XADD', key, '*', 'k', kind, 'p', payload)
  redis.call('XREADGROUP', 'GROUP', 'reconcile', 'inflight', 'COUNT', '1', 'STREAMS', key, '>')
  return entry
end
