-- Unfollow or unblock, step 1 of 2, in A's slot: the edge goes, and the outbox
-- records that B's mirror must follow (kind 'follow' or 'block', the same
-- mirror step as adding the edge: chat/store/graph.py).
-- KEYS: 1 fwing:{a} or blk:{a}   2 the outbox of A's slot
-- ARGV: 1 a   2 b   3 kind
-- Returns the outbox entry, or false when there was no such edge.
if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then
  return false
end
return outbox_add(KEYS[2], ARGV[3], cjson.encode({a = ARGV[1], b = ARGV[2]}))
