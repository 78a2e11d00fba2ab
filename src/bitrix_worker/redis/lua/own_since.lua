-- own_since.lua: record, once, the newest stream id when a version that keeps the own-entries hash first
-- started (turns.lua: entries up to it keep the older rule, which trusted fields). Later starts keep it.
-- KEYS[1] stream   KEYS[2] own entries hash
-- ARGV[1] 1 when the consumer group was just created: no worker of any version has read the stream, so
--         every entry in it is a producer's (the older rule applies to none)
-- Returns the recorded id.
local since = redis.call('HGET', KEYS[2], '~since')
if since then return since end
since = '0-0'
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest > 0 and ARGV[1] ~= '1' then since = newest[1][1] end
redis.call('HSET', KEYS[2], '~since', since)
return since
