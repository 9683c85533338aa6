-- The outbox of one hash slot (chat/store/outbox.py): what a split operation
-- still has to do in another slot. Prepended to the script of an operation's
-- first step, so that the step's effect and the record of what remains are one
-- atomic write.
--
-- The entry is only appended here, not delivered to anyone: the process that
-- wrote it finishes the operation and deletes it (Outbox.done), mostly within
-- milliseconds. Reconcilers take entries that are still there into the
-- consumer group themselves (XREADGROUP), and claim them with XAUTOCLAIM once
-- they idle. Making every entry pending here as well (EXISTS, XGROUP CREATE,
-- XREADGROUP) cost Valkey about 17 µs per operation, for entries that almost
-- always disappear before any reconciler looks (docs/performance.md).
local function outbox_add(key, kind, payload)
  return redis.call('XADD', key, '*', 'k', kind, 'p', payload)
end
