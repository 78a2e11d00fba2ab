-- limiter.lua: one GCRA leaky bucket per portal, shared by every worker process on every host.
-- KEYS[1] limiter hash (tat_ms, factor, factor_at_ms)
-- ARGV[1] command: 'acquire' | 'penalize' | 'refund' | 'reset' | 'state'
-- ARGV[2] rate per second   ARGV[3] burst   ARGV[4] max wait to reserve (ms)   ARGV[5] now (ms) or ''
-- ARGV[6] recovery of the slow-down factor per second (e.g. '0.02')
-- acquire: reserves the next slot and returns the ms to wait before sending (0 = now); when the wait would
--   exceed ARGV[4] nothing is reserved and -wait is returned (the caller sleeps and asks again).
--   A request is counted when it is *sent*, not when its answer arrives: that is what keeps a burst of
--   parallel requests from overrunning the portal's bucket.
-- penalize: the portal refused a request (QUERY_LIMIT_EXCEEDED): halve the rate (floor 0.1x) for every
--   worker and treat the bucket as full; the factor recovers linearly at ARGV[6] per second.
-- reset: forget the slow-down after refusals (an operator fixed what made the portal refuse us).
-- refund: a booked request never reached the portal (its connection was refused): give its slot back.
-- state: returns {factor, tat_ms, now_ms, ms until the next request may be sent} as strings.
local key = KEYS[1]
local cmd = ARGV[1]
local rate, burst, max_wait = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local recovery = tonumber(ARGV[6])
local now
if ARGV[5] ~= '' then
  now = tonumber(ARGV[5])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local h = redis.call('HMGET', key, 'tat', 'factor', 'factor_at')
local tat = tonumber(h[1]) or now
local factor = tonumber(h[2]) or 1
local factor_at = tonumber(h[3]) or now
factor = math.min(1, factor + math.max(0, now - factor_at) / 1000 * recovery)

local interval = 1000 / (rate * factor)
local tolerance = math.max(0, burst * factor - 1) * interval
if tat < now then tat = now end

local function save()
  redis.call('HSET', key, 'tat', string.format('%.3f', tat), 'factor', string.format('%.6f', factor),
    'factor_at', string.format('%d', now))
  redis.call('PEXPIRE', key, math.ceil(tolerance + interval * 2 + 60000))
end

if cmd == 'acquire' then
  local wait = math.floor(tat - tolerance - now + 0.5)
  if wait < 0 then wait = 0 end
  if wait > max_wait then
    save()
    return -wait
  end
  tat = tat + interval
  save()
  return wait
elseif cmd == 'penalize' then
  factor = math.max(0.1, factor * 0.5)
  interval = 1000 / (rate * factor)
  tolerance = math.max(0, burst * factor - 1) * interval
  if tat < now + tolerance + interval then tat = now + tolerance + interval end
  save()
  return 0
elseif cmd == 'reset' then
  factor = 1
  save()
  return 0
elseif cmd == 'refund' then
  tat = math.max(now, tat - interval)
  save()
  return 0
end
local next_ms = math.max(0, tat - tolerance - now)
return {string.format('%.6f', factor), string.format('%.3f', tat), string.format('%d', now),
  string.format('%.3f', next_ms)}
