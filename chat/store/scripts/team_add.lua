-- Add an agent to a business's team, step 1 of 2, in the business's slot:
-- team:{b} is the set that authorizes `as=`, so this step decides. Within the
-- team cap; the outbox records that the agent's index teams:{agent} must
-- follow (chat/store/teams.py).
-- KEYS: 1 team:{b}   2 the outbox of the business's slot
-- ARGV: 1 business   2 agent   3 team cap
-- Returns {1, outbox entry} added, {0} already a member, {-1} the team is full.
local business, agent = ARGV[1], ARGV[2]
if redis.call('SISMEMBER', KEYS[1], agent) == 1 then
  return {0}
end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return {-1}
end
redis.call('SADD', KEYS[1], agent)
return {1, outbox_add(KEYS[2], 'team', cjson.encode({business = business, agent = agent}))}
