#include "json.h"

#include <gtest/gtest.h>

#include "sse.h"

using sse::json::append_string;

static std::string enc(std::string_view s) {
  std::string out;
  append_string(out, s);
  return out;
}

TEST(Json, EscapesQuotesAndBackslashes) {
  EXPECT_EQ(enc("a\"b\\c"), R"("a\"b\\c")");
}

TEST(Json, EscapesEveryControlCharacter) {
  EXPECT_EQ(enc("\n\r\t\b\f"), R"("\n\r\t\b\f")");
  EXPECT_EQ(enc(std::string("\0\x01\x1f\x7f", 4)), R"("\u0000\u0001\u001f\u007f")");
  EXPECT_EQ(enc("\xc2\x80\xc2\x9f"), R"("\u0080\u009f")");  // C1 controls
}

TEST(Json, EscapesLineAndParagraphSeparators) {
  EXPECT_EQ(enc("a\xe2\x80\xa8z\xe2\x80\xa9"), R"("a\u2028z\u2029")");
}

TEST(Json, KeepsMultibyteUtf8AndEmoji) {
  EXPECT_EQ(enc("héllo 日本 😀"), "\"héllo 日本 😀\"");
  EXPECT_EQ(enc("\xe2\x80\xa7"), "\"\xe2\x80\xa7\"");  // U+2027 is not a separator
  EXPECT_EQ(enc("\xc2\xa0"), "\"\xc2\xa0\"");          // NBSP is not a control
}

TEST(Sse, MessageFrameIsOneEventWithIdAndJsonData) {
  std::string json = sse::message_json({42, "team-a", "alice", "hello\nworld", 1764072000123});
  EXPECT_EQ(json,
            R"({"id":42,"room":"team-a","user":"alice","text":"hello\nworld","ts":1764072000123})");
  sse::FrameRef frame = sse::message_frame(42, json);
  std::string event = "id: 42\ndata: " + json + "\n\n";
  EXPECT_EQ(sse::frame_event(*frame.get()), event);
  // One chunk of the chunked coding: its length in hex, the event, CRLF.
  EXPECT_EQ(frame.bytes(), "60\r\n" + event + "\r\n");
  EXPECT_EQ(event.size(), 0x60u);
  EXPECT_EQ(sse::frame_json(*frame.get()), json);
  EXPECT_EQ(sse::frame_id(*frame.get()), 42u);
}

TEST(Sse, ControlEvents) {
  EXPECT_EQ(sse::retry_line(2000), "retry: 2000\n");
  EXPECT_EQ(sse::reset_event("a", 5, 9),
            "event: reset\ndata: {\"room\":\"a\",\"oldest\":5,\"newest\":9}\n\n");
  EXPECT_EQ(sse::presence_event("general", 3, {"alice", "bob"}),
            "event: presence\ndata: "
            "{\"room\":\"general\",\"online\":3,\"users\":[\"alice\",\"bob\"]}\n\n");
  EXPECT_EQ(sse::presence_event("x", 1, {}),
            "event: presence\ndata: {\"room\":\"x\",\"online\":1,\"users\":[]}\n\n");
}

TEST(Sse, MessagesFromBeforeRoomsGainTheirRoom) {
  EXPECT_EQ(sse::json_with_room(R"({"id":7,"user":"a","text":"b","ts":1})", "general"),
            R"({"id":7,"room":"general","user":"a","text":"b","ts":1})");
}
