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
  std::string json = sse::message_json({42, "alice", "hello\nworld", 1764072000123});
  EXPECT_EQ(json, R"({"id":42,"user":"alice","text":"hello\nworld","ts":1764072000123})");
  sse::FrameRef frame = sse::message_frame(42, json);
  EXPECT_EQ(frame.bytes(), "id: 42\ndata: " + json + "\n\n");
  EXPECT_EQ(sse::frame_json(*frame.get()), json);
  EXPECT_EQ(sse::frame_id(*frame.get()), 42u);
}

TEST(Sse, ControlEvents) {
  EXPECT_EQ(sse::retry_event(2000), "retry: 2000\n\n");
  EXPECT_EQ(sse::reset_event(5, 9), "event: reset\ndata: {\"oldest\":5,\"newest\":9}\n\n");
  EXPECT_EQ(sse::presence_event(3), "event: presence\ndata: {\"online\":3}\n\n");
}
