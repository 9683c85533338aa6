-- Take an agent out of a business's team, step 1 of 2, in the business's
-- slot: out of team:{b} (which ends their authority at once), and the outbox
-- records that the agent's index teams:{agent} must follow.
-- KEYS: 1 team:{b}   2 the outbox of the business's slot
-- ARGV: 1 business   2 agent
-- Returns the outbox entry, or false when the agent was not in the team.
if redis.call('SREM', KEYS[1], ARGV[2]) == 0 then
  return false
end
return outbox_add(KEYS[2], 'team', cjson.encode({business = ARGV[1], agent = ARGV[2]}))
