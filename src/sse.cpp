#include "sse.h"

#include <charconv>

#include "json.h"

namespace sse {
namespace {
constexpr std::string_view kDataPrefix = "\ndata: ";
}

std::string message_json(const StoredMessage& m) {
  std::string out;
  out.reserve(48 + m.user.size() + m.text.size());
  out += "{\"id\":";
  json::append_uint(out, m.id);
  out += ",\"room\":";
  json::append_string(out, m.room);
  out += ",\"user\":";
  json::append_string(out, m.user);
  out += ",\"text\":";
  json::append_string(out, m.text);
  out += ",\"ts\":";
  json::append_uint(out, static_cast<uint64_t>(m.ts_ms));
  out += "}";
  return out;
}

std::string json_with_room(std::string_view old_json, std::string_view room) {
  size_t comma = old_json.find(',');  // after {"id":N
  if (!old_json.starts_with("{\"id\":") || comma == std::string_view::npos)
    return std::string(old_json);
  std::string out(old_json.substr(0, comma));
  out += ",\"room\":";
  json::append_string(out, room);
  out += old_json.substr(comma);
  return out;
}

FrameRef stream_frame(std::string_view event) {
  char size[16];
  auto [end, ec] = std::to_chars(size, size + sizeof size, event.size(), 16);
  return FrameRef({{size, end}, "\r\n", event, "\r\n"});
}

std::pair<size_t, size_t> event_span(const Frame& frame) {
  std::string_view bytes = frame.bytes();
  return {bytes.find('\n') + 1, bytes.size() - 2};
}

std::string_view frame_event(const Frame& frame) {
  auto [begin, end] = event_span(frame);
  return frame.bytes().substr(begin, end - begin);
}

// The chunk of stream_frame() built straight into the frame: the JSON is copied once.
FrameRef message_frame(uint64_t id, std::string_view json) {
  char id_text[20];
  auto [id_end, id_ec] = std::to_chars(id_text, id_text + sizeof id_text, id);
  std::string_view id_part(id_text, id_end);
  size_t event_size = 4 + id_part.size() + kDataPrefix.size() + json.size() + 2;
  char size[16];
  auto [size_end, size_ec] = std::to_chars(size, size + sizeof size, event_size, 16);
  return FrameRef({{size, size_end}, "\r\nid: ", id_part, kDataPrefix, json, "\n\n\r\n"});
}

std::string_view frame_json(const Frame& frame) {
  std::string_view bytes = frame.bytes();
  size_t start = bytes.find(kDataPrefix) + kDataPrefix.size();
  return bytes.substr(start, event_span(frame).second - 2 - start);
}

uint64_t frame_id(const Frame& frame) {
  std::string_view bytes = frame.bytes().substr(event_span(frame).first + 4);  // after "id: "
  uint64_t id = 0;
  std::from_chars(bytes.data(), bytes.data() + bytes.size(), id);
  return id;
}

std::string retry_line(uint32_t retry_ms) {
  std::string out = "retry: ";
  json::append_uint(out, retry_ms);
  out += '\n';
  return out;
}

namespace {

// "retry: <ms>\nid: <id>\n": the fields a block that tells a client where it stands starts with.
std::string retry_and_id(uint32_t retry_ms, std::string_view id) {
  std::string out = retry_line(retry_ms);
  out += "id: ";
  out += id;
  out += '\n';
  return out;
}

}  // namespace

std::string opening_event(uint32_t retry_ms, uint64_t id) {
  std::string out = retry_and_id(retry_ms, std::to_string(id));
  out += "event: ready\ndata: {\"newest\":";
  json::append_uint(out, id);
  out += "}\n\n";
  return out;
}

std::string refused_event(std::string_view reason, uint32_t retry_ms, std::string_view id) {
  std::string out = id.empty() ? retry_line(retry_ms) : retry_and_id(retry_ms, id);
  out += "event: refused\ndata: {\"reason\":";
  json::append_string(out, reason);
  out += ",\"retry\":";
  json::append_uint(out, retry_ms);
  out += "}\n\n";
  return out;
}

std::string reset_event(std::string_view room, uint64_t oldest, uint64_t newest) {
  std::string out = "event: reset\ndata: {\"room\":";
  json::append_string(out, room);
  out += ",\"oldest\":";
  json::append_uint(out, oldest);
  out += ",\"newest\":";
  json::append_uint(out, newest);
  out += "}\n\n";
  return out;
}

std::string presence_event(std::string_view room, uint64_t online,
                           const std::vector<std::string_view>& users) {
  std::string out = "event: presence\ndata: {\"room\":";
  json::append_string(out, room);
  out += ",\"online\":";
  json::append_uint(out, online);
  out += ",\"users\":[";
  for (size_t i = 0; i < users.size(); ++i) {
    if (i > 0) out += ',';
    json::append_string(out, users[i]);
  }
  out += "]}\n\n";
  return out;
}

}  // namespace sse
