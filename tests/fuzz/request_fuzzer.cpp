// libFuzzer target over the whole request path: HTTP bytes (split at a point the input chooses)
// -> llhttp -> route-level decoding (query, JSON or form body) -> validation -> the SSE frame.
// Besides crashes and sanitizer reports it checks an oracle: every accepted message encodes to a
// frame whose data line is one line of JSON that parses back to exactly the validated fields.
#include <simdjson.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "form.h"
#include "http_parser.h"
#include "journal.h"
#include "message.h"
#include "sse.h"
#include "utf8.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void check_frame(const sse::ChatInput& in) {
  std::string json = sse::message_json({7, in.room, in.user, in.text, 1764072000123});
  sse::FrameRef frame = sse::message_frame(7, json);
  // One chunk ("<hex length>\r\n<event>\r\n") of one event: "id: 7\ndata: <json>\n\n", and no
  // other line break anywhere.
  std::string_view bytes = sse::frame_event(*frame.get());
  check(bytes.substr(0, 13) == "id: 7\ndata: {");
  check(bytes.find('\n', 13) == bytes.size() - 2);
  std::string_view chunk = frame.bytes();
  check(chunk.ends_with("\r\n") &&
        std::stoul(std::string(chunk.substr(0, chunk.find('\r'))), nullptr, 16) == bytes.size());
  check(sse::frame_json(*frame.get()) == json);
  check(sse::utf8::is_valid(json));
  static simdjson::dom::parser parser;
  simdjson::dom::element doc;
  check(parser.parse(json).get(doc) == simdjson::SUCCESS);
  std::string_view user, text;
  check(doc["user"].get_string().get(user) == simdjson::SUCCESS && user == in.user);
  check(doc["text"].get_string().get(text) == simdjson::SUCCESS && text == in.text);
}

void handle(sse::Request& req) {
  (void)sse::form::query_value(req.query, "lastEventId");
  (void)sse::form::percent_decode(req.path, false);
  if (req.method != sse::Method::Post) return;
  sse::PostResult r = sse::decode_post(req.content_type, req.body);
  if (auto* in = std::get_if<sse::ChatInput>(&r)) {
    check(!in->user.empty() && !in->text.empty());
    check(sse::utf8::count_code_points(in->user) <= sse::kMaxUserChars);
    check(sse::utf8::count_code_points(in->text) <= sse::kMaxTextChars);
    check_frame(*in);
  } else {
    auto& rej = std::get<sse::Rejection>(r);
    check((rej.status == 400 || rej.status == 415) && !rej.reason.empty());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t split = data[0] % size;
  std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  sse::HttpLimits limits;
  limits.max_body = 4096;
  sse::RequestParser parser(limits);
  for (std::string_view chunk :
       {std::string_view(input).substr(0, split), std::string_view(input).substr(split)}) {
    while (!chunk.empty()) {
      auto r = parser.feed(chunk.data(), chunk.size());
      chunk.remove_prefix(r.consumed);
      if (r.event == sse::RequestParser::Event::Error) {
        int s = parser.error_status();
        // 501: a coding not chunked, a method not known; 505: a version not 1.x
        check(s == 400 || s == 413 || s == 414 || s == 431 || s == 501 || s == 505);
        goto journal;
      }
      if (r.event == sse::RequestParser::Event::NeedMore) break;
      handle(parser.request());
      parser.next_request();
    }
  }
journal:
  // The same bytes as a journal file: decoding must never crash, and the messages it keeps are
  // ordered (floors carry the highest id issued when written, which may tie with a neighbour).
  std::vector<std::string> warnings;
  bool damaged = false;
  uint64_t last_message = 0;
  for (const sse::JournalRecord& r : sse::decode_records(input, warnings, damaged)) {
    if (r.floor) continue;
    check(r.id > last_message);
    last_message = r.id;
  }
  return 0;
}
