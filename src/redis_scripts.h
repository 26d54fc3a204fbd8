// The Lua that makes a Redis-backed commit atomic (issue #15's Redis broker). One script, run
// with EVALSHA, does everything a POST needs in one step, so ids, nonces and the logs can never
// disagree, whichever node the POST reached and whatever fails around it.
//
// Keys live under one prefix, in one hash slot ({prefix}) so the script may touch them all:
//   {p}:seq          the last id given (INCR)
//   {p}:log          every message, one stream in id order: entry id "<id>-0", fields room, json
//   {p}:room:<name>  one room's messages, same entry ids, trimmed to about the room's history
//   {p}:nonce:<key>  the id an idempotent POST got, for a day
// Stream entry ids are the message ids, so a node reads the one ordered log from the last id it
// has (XREAD … STREAMS {p}:log <id>-0) and sees any gap as a jump it can check.
#pragma once

#include <string_view>

namespace sse::redis_scripts {

// KEYS: seq, log, room stream, nonce key ("" when the POST has no nonce: then KEYS[4] is a
// placeholder in the slot and is not touched).
// ARGV: room, floor (the highest id the calling node has seen: ids never go below it, even after
// Redis lost its data), the message JSON, which starts {"id":%ID% (the first "%ID%" becomes the
// id, so a text that contains one is left alone), the room's history
// length, the log's length, the nonce TTL in seconds, has_nonce ("1"/"0").
// Returns {id, 1 when new | 0 when the nonce was seen before (id is the original)}. Ids are exact
// up to 2^53 (Lua numbers are doubles), a million messages a second for 285 years.
// The room stream's newest entry is never above the log's, so its XADD cannot fail either; the
// nonce TTL is checked when the broker is configured.
inline constexpr std::string_view kPublish = R"lua(
if ARGV[7] == '1' then
  local seen = redis.call('GET', KEYS[4])
  if seen then return {tonumber(seen), 0} end
end
-- Above the counter, the caller's floor and the log's newest entry, so that neither a lost
-- counter nor lost data can make an id go back or an XADD fail halfway through this script.
local id = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[2])
if id <= floor then id = floor + 1 end
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if top then
  local newest = tonumber(string.match(top[1], '^(%d+)'))
  if id <= newest then id = newest + 1 end
end
redis.call('SET', KEYS[1], id)
local text = string.format('%d', id)
local entry = text .. '-0'
local json = string.gsub(ARGV[3], '%%ID%%', text, 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], entry, 'room', ARGV[1], 'json', json)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], entry, 'json', json)
if ARGV[7] == '1' then redis.call('SET', KEYS[4], id, 'EX', ARGV[6]) end
return {id, 1}
)lua";

}  // namespace sse::redis_scripts
