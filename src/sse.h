// Server-Sent Events wire format. Every function is pure: bytes in, bytes out.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "frame.h"

namespace sse {

struct StoredMessage {
  uint64_t id;
  std::string_view room;
  std::string_view user;
  std::string_view text;
  int64_t ts_ms;  // server receive time, Unix milliseconds
};

// {"id":42,"room":"general","user":"alice","text":"hello","ts":1764072000123}
std::string message_json(const StoredMessage& m);

// A message written before rooms existed ({"id":42,"user":…}) as one of `room`.
std::string json_with_room(std::string_view old_json, std::string_view room);

// A frame a stream sends: one event as one chunk of HTTP/1.1's chunked coding, "<hex length>\r\n
// <event>\r\n", framed once and shared like the event itself. Clients that read a body without a
// length in fixed blocks (Python's requests and urllib3) take each chunk as it comes, so every
// event arrives at once; an HTTP/1.0 stream gets the event alone (event_span).
FrameRef stream_frame(std::string_view event);
// Where the event is inside a stream frame: [first, second) of its bytes.
std::pair<size_t, size_t> event_span(const Frame& frame);
// The event a stream frame carries, without its chunk framing.
std::string_view frame_event(const Frame& frame);
// "0\r\n\r\n": the end of a chunked stream the server closes on purpose.
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

// The stream frame of "id: 42\ndata: <json>\n\n": the one frame every subscriber and the history
// share.
FrameRef message_frame(uint64_t id, std::string_view json);

// The JSON payload inside a frame made by message_frame.
std::string_view frame_json(const Frame& frame);

// The id a frame made by message_frame carries.
uint64_t frame_id(const Frame& frame);

// "retry: <ms>\n": opens a stream that resumes. A line, not a block of its own: it joins the
// first event that follows, since a block with no data makes some clients (httpx-sse,
// @microsoft/fetch-event-source) report an empty message.
std::string retry_line(uint32_t retry_ms);

// "retry: <ms>\nid: <id>\nevent: ready\ndata: {"newest":<id>}\n\n": opens a stream that resumes
// from nowhere, so that its client has an id to come back with even if it loses the stream before
// any message. An event with data, not an id alone: npm `eventsource` 3 and 4 (and other clients
// built on eventsource-parser) take an id only from an event they dispatch.
std::string opening_event(uint32_t retry_ms, uint64_t id);

// "retry: <ms>\nid: <id>\nevent: refused\ndata: {"reason":..,"retry":<ms>}\n\n": a stream
// refused for now comes back after <ms> from <id>. The id rides on an event with data, since some
// clients (npm eventsource 3 and 4) take no id from a block without data. An empty <id>: no `id:`
// line. <id> must hold no CR, LF or NUL.
std::string refused_event(std::string_view reason, uint32_t retry_ms, std::string_view id);

// "event: reset\ndata: {"room":..,"oldest":..,"newest":..}\n\n": `room` no longer keeps what a
// stream still needed; it goes on from `oldest` (newest + 1 when nothing is kept).
std::string reset_event(std::string_view room, uint64_t oldest, uint64_t newest);

// "event: presence\ndata: {"room":..,"online":N,"users":[..]}\n\n"; `users` sorted, distinct.
std::string presence_event(std::string_view room, uint64_t online,
                           const std::vector<std::string_view>& users);

// Sent when the token that opened a stream expires, just before the server closes it; the
// reconnect with that token gets 401.
inline constexpr std::string_view kExpiredEvent =
    "event: expired\ndata: {\"reason\":\"token expired\"}\n\n";
// The same when the key that signed the token is no longer accepted (a rotation, on SIGHUP).
inline constexpr std::string_view kKeyWithdrawnEvent =
    "event: expired\ndata: {\"reason\":\"token key withdrawn\"}\n\n";

// ": ping\n", a comment that keeps proxies from timing out an idle stream.
// A line, not a block: a blank line after it would make some clients (httpx-sse) dispatch an empty
// message, so it ends with the next event's block.
inline constexpr std::string_view kPingComment = ": ping\n";

}  // namespace sse
