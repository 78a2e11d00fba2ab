-- breaker.lua: open the portal's circuit breaker, atomically, once per outage.
-- KEYS[1] breaker hash (open, reason, until, cooldown, trips, opened_at, probe_owner)
-- ARGV[1] now (s)   ARGV[2] reason   ARGV[3] base cool-down (s)   ARGV[4] max cool-down (s)
-- ARGV[5] explicit cool-down (s) or ''   ARGV[6] probe owner (consumer name) or ''
-- Returns {tripped (0|1), until, cooldown, trips} as strings.
-- While a cool-down is running, further trips change nothing: every batch that was in flight when the
-- portal started refusing reports the same outage. A trip after the cool-down ran out means a probe failed:
-- the cool-down doubles, up to the maximum. An explicit cool-down (OVERLOAD_LIMIT) extends, never shortens.
local key = KEYS[1]
local now, reason = tonumber(ARGV[1]), ARGV[2]
local base, max_cd = tonumber(ARGV[3]), tonumber(ARGV[4])
local h = redis.call('HMGET', key, 'open', 'until', 'cooldown', 'trips')
local is_open = h[1] == '1'
local till = tonumber(h[2]) or 0
local cooldown = tonumber(h[3]) or 0
local trips = tonumber(h[4]) or 0
local explicit = tonumber(ARGV[5])

local function fmt(x) return string.format('%.3f', x) end

if is_open and now < till then
  if explicit == nil or now + explicit <= till then
    return {'0', fmt(till), fmt(cooldown), tostring(trips)}
  end
end
local next_cd
if explicit ~= nil then
  next_cd = explicit
elseif is_open then
  next_cd = math.min(max_cd, math.max(cooldown, base) * 2)
else
  next_cd = base
end
trips = trips + 1
till = now + next_cd
redis.call('HSET', key, 'open', '1', 'reason', reason, 'until', fmt(till), 'cooldown', fmt(next_cd),
  'trips', tostring(trips), 'opened_at', fmt(now), 'probe_owner', ARGV[6])
return {'1', fmt(till), fmt(next_cd), tostring(trips)}
