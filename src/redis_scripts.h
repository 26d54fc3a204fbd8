// The Lua that makes a Redis-backed commit atomic (issue #15's Redis broker). One script, run
// with EVALSHA, does everything a POST needs in one step, so ids, nonces and the logs can never
// disagree, whichever node the POST reached and whatever fails around it.
//
// Keys live under one prefix, in one hash slot ({prefix}) so the script may touch them all:
//   {p}:seq          the last id given
//   {p}:since        the first id this Redis data set gave: older messages are gone from it
//   {p}:log          every message, one stream in id order: entry id "<id>-0", fields room,
//                    json and prev (the log's previous entry id: a reader that finds prev above
//                    the last id it read knows it missed entries)
//   {p}:room:<name>  one room's messages, same entry ids, fields json and prev (the room's
//                    previous id), trimmed to about the room's history
//   {p}:rooms        sorted set: room name -> its newest id (warming a node, filling a gap)
//   {p}:history      the longest per-room history of any node that posted: room streams are
//                    trimmed to it, so a node with a shorter --history does not trim the others'
//   {p}:max-rooms    the largest --max-rooms of any node that posted: past it, the rooms posted
//                    to longest ago are dropped from {p}:rooms with their streams
//   {p}:dropped      the newest id a dropped room had: a room without a stream (or one made
//                    again, whose first entry's prev says so) may have had messages up to it
//   {p}:nonce:<key>  the id an idempotent POST got, for a day
//   {p}:losses       (written by nodes, not the script) a stream of losses a node found: ids
//                    after `after` through `through` it read are gone from Redis
// Stream entry ids are the message ids, so a node reads the one ordered log from the last id it
// has (XREAD … STREAMS {p}:log <id>-0).
#pragma once

#include <string_view>

namespace sse::redis_scripts {

// Whether `prefix` makes {prefix} a hash tag: an empty one, or braces inside, would spread the keys
// over Redis Cluster's slots, and the publish script writes them together.
inline bool is_key_prefix(std::string_view prefix) {
  return !prefix.empty() && prefix.find_first_of("{}") == std::string_view::npos;
}

// KEYS: seq, log, room stream, nonce key (when the POST has no nonce, a placeholder in the slot
// that is not touched), rooms, since, history, max-rooms, dropped, presence-rooms.
// ARGV: room, floor (the highest id the calling node has seen: ids never go below it), the
// message JSON, which starts {"id":%ID% (the first "%ID%" becomes the id, so a text that contains
// one is left alone), the room's history length, the log's length, the nonce TTL in seconds,
// has_nonce ("1"/"0"), the deadline (Redis's clock, microseconds; "0": none), the node's
// --max-rooms, the prefix of room stream keys ("{p}:room:"). Dropped rooms' streams are named from
// that prefix: every key shares the {p} hash slot.
// Returns {id, 1 when new | 0 when the nonce was seen before (id is the original)}, or {0, 2}
// when Redis runs it after the deadline: it stored nothing (a node gives up on a command long
// after its deadline, so a POST answered 503 because Redis was stuck is not stored later, when
// Redis wakes up and runs what was waiting in its socket).
// Ids: Redis's clock in microseconds, or one more than the last id when that is higher (faster
// than one a microsecond). So ids keep rising across anything Redis can lose: a data set that is
// new after Redis lost its data, or one restored from an older AOF (the last second under
// everysec, a lagging replica), starts above every id given before, even by a node that started
// since and has seen none of them. They stay exact up to 2^53 (Lua numbers are doubles): until
// the year 2255.
// The room stream's newest entry is never above the log's, so its XADD cannot fail either; the
// nonce TTL is checked when the broker is configured.
inline constexpr std::string_view kPublish = R"lua(
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
if ARGV[8] ~= '0' and now > tonumber(ARGV[8]) then return {0, 2} end
if ARGV[7] == '1' then
  local seen = redis.call('GET', KEYS[4])
  if seen then return {tonumber(seen), 0} end
end
local last = redis.call('GET', KEYS[1])
local fresh_set = not last
local id = now
if last then
  last = tonumber(last)
  if not last then return redis.error_reply(KEYS[1] .. ' is not a number') end
  if last >= id then id = last + 1 end
end
-- Above the caller's floor and the newest entries of the log and the room too, so that neither a
-- lost counter nor lost or odd data can make an id go back or an XADD fail halfway through this
-- script (Redis keeps what a script wrote before it failed). Every check comes before a write.
local floor = tonumber(ARGV[2])
if id <= floor then id = floor + 1 end
-- The id of a stream's newest entry ("<id>-0"), 0 when it has none.
local function newest(stream)
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if top then return tonumber(string.match(top[1], '^(%d+)')) end
  return 0
end
local prev = newest(KEYS[2])
local room_prev = newest(KEYS[3])
if id <= prev then id = prev + 1 end
if id <= room_prev then id = room_prev + 1 end
if id >= 9007199254740992 then return redis.error_reply('ids ran past 2^53') end
-- The longest history any node keeps (a key that is not a number counts as none).
local keep = tonumber(ARGV[4])
local longest = tonumber(redis.call('GET', KEYS[7]) or '')
if longest and longest > keep then keep = longest end
local limit = tonumber(ARGV[9])
local widest = tonumber(redis.call('GET', KEYS[8]) or '')
if widest and widest > limit then limit = widest end
local dropped = tonumber(redis.call('GET', KEYS[9]) or '0') or 0
local rooms_type = redis.call('TYPE', KEYS[5])['ok']
if rooms_type ~= 'zset' and rooms_type ~= 'none' then
  return redis.error_reply(KEYS[5] .. ' is not a sorted set')
end
-- Presence written by nodes; odd data there only means nobody is known to read (no error after
-- the writes below).
local presence_readable = redis.call('TYPE', KEYS[10])['ok'] == 'zset'
redis.call('SET', KEYS[1], id)
if fresh_set then redis.call('SET', KEYS[6], id) end
if not longest or keep > longest then redis.call('SET', KEYS[7], keep) end
local text = string.format('%d', id)
local entry = text .. '-0'
local json = string.gsub(ARGV[3], '%%ID%%', text, 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], entry, 'room', ARGV[1], 'json', json,
           'prev', string.format('%d', prev))
-- A room without a stream may have been dropped: its first entry says what it may have lost.
local room_floor = room_prev
if room_prev == 0 and dropped < id then room_floor = dropped end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', keep, entry, 'json', json,
           'prev', string.format('%d', room_floor))
redis.call('ZADD', KEYS[5], id, ARGV[1])
-- At most the largest --max-rooms of any node: of the rooms nobody reads on any node (whose
-- presence has expired), those posted to longest ago go, streams and all. Only the 32 posted to
-- longest ago are looked at (each POST, while over): when they are all read, none goes, and the
-- set stays over its limit until a later POST finds one nobody reads.
if not widest or limit > widest then redis.call('SET', KEYS[8], limit) end
local over = redis.call('ZCARD', KEYS[5]) - limit
if over > 0 then
  local now_ms = math.floor(now / 1000)
  local oldest = redis.call('ZRANGE', KEYS[5], 0, 31, 'WITHSCORES')
  for i = 1, #oldest, 2 do
    if over == 0 then break end
    local room = oldest[i]
    local read_until = 0
    if presence_readable then
      read_until = tonumber(redis.call('ZSCORE', KEYS[10], room) or '0') or 0
    end
    if room ~= ARGV[1] and read_until <= now_ms then
      redis.call('ZREM', KEYS[5], room)
      -- A key not in KEYS (which room goes is known only here): it shares the {p} hash slot,
      -- so one node or one cluster shard holds it with the rest.
      redis.call('DEL', ARGV[10] .. room)
      local last = tonumber(oldest[i + 1])
      if last > dropped then dropped = last end
      over = over - 1
    end
  end
  redis.call('SET', KEYS[9], string.format('%d', dropped))
end
if ARGV[7] == '1' then redis.call('SET', KEYS[4], id, 'EX', ARGV[6]) end
return {id, 1}
)lua";

}  // namespace sse::redis_scripts
