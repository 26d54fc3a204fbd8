#include "message.h"

#include <gtest/gtest.h>

using sse::ChatInput;
using sse::decode_post;
using sse::Rejection;

namespace {

struct Case {
  const char* name;
  const char* content_type;
  std::string body;
  int status;  // 0: accepted
  const char* user = nullptr;
  const char* text = nullptr;
};

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

}  // namespace

TEST(Validation, Table) {
  const char* json = "application/json";
  const char* form = "application/x-www-form-urlencoded";
  std::vector<Case> cases = {
      {"json ok", json, R"({"user":"alice","text":"hello"})", 0, "alice", "hello"},
      {"json with charset", "Application/JSON; charset=utf-8", R"({"user":"a","text":"b"})", 0, "a",
       "b"},
      {"form ok", form, "user=alice&text=hello+there", 0, "alice", "hello there"},
      {"trimmed", json, R"({"user":"  bob ","text":"\n hi \t"})", 0, "bob", "hi"},
      {"newline and tab kept inside", json, R"({"user":"a","text":"x\n\ty"})", 0, "a", "x\n\ty"},
      {"crlf normalised", form, "user=a&text=x%0D%0Ay", 0, "a", "x\ny"},
      {"unknown fields ignored", json, R"({"user":"a","text":"b","color":"red"})", 0, "a", "b"},
      {"user 32 code points", json, R"({"user":")" + repeat("日", 32) + R"(","text":"b"})", 0},
      {"text 2000 code points", json, R"({"user":"a","text":")" + repeat("😀", 2000) + R"("})", 0},
      {"user 33 code points", json, R"({"user":")" + repeat("x", 33) + R"(","text":"b"})", 400},
      {"text 2001 code points", json, R"({"user":"a","text":")" + repeat("x", 2001) + R"("})", 400},
      {"empty user", json, R"({"user":"","text":"b"})", 400},
      {"blank text", json, R"({"user":"a","text":"   "})", 400},
      {"missing text", json, R"({"user":"a"})", 400},
      {"missing user", form, "text=b", 400},
      {"user not a string", json, R"({"user":5,"text":"b"})", 400},
      {"text is null", json, R"({"user":"a","text":null})", 400},
      {"array body", json, R"(["a","b"])", 400},
      {"not json", json, "user=a", 400},
      {"byte order mark skipped", json, "\xEF\xBB\xBF{\"user\":\"a\",\"text\":\"b\"}", 0, "a", "b"},
      {"byte order mark alone", json, "\xEF\xBB\xBF", 400},
      {"two byte order marks", json, "\xEF\xBB\xBF\xEF\xBB\xBF{\"user\":\"a\",\"text\":\"b\"}",
       400},
      {"truncated json", json, R"({"user":"a","text":"b")", 400},
      {"duplicate key", json, R"({"user":"a","text":"b","text":"c"})", 400},
      {"duplicate form key", form, "user=a&text=b&user=c", 400},
      {"control char in user", json, R"({"user":"a\u0007","text":"b"})", 400},
      {"newline in user", json, R"({"user":"a\nb","text":"b"})", 400},
      {"NUL in text", json, R"({"user":"a","text":"x\u0000y"})", 400},
      {"C1 control in text", json, "{\"user\":\"a\",\"text\":\"x\xc2\x85y\"}", 400},
      {"invalid utf8 in json", json, "{\"user\":\"a\",\"text\":\"\xc0\xaf\"}", 400},
      {"surrogate escape", json, R"({"user":"a","text":"\ud800"})", 400},
      {"invalid utf8 in form", form, "user=a&text=%ED%A0%80", 400},
      {"truncated utf8 in form", form, "user=a&text=%E6%97", 400},
      {"bad percent escape", form, "user=a&text=%G1", 400},
      {"deep nesting", json,
       R"({"user":"a","text":"b","x":)" + repeat("[", 5000) + repeat("]", 5000) + "}", 400},
      {"nesting 32 deep", json,
       R"({"user":"a","text":"b","x":)" + repeat("[", 31) + repeat("]", 31) + "}", 0},
      {"nesting 33 deep", json,
       R"({"user":"a","text":"b","x":)" + repeat("[", 32) + repeat("]", 32) + "}", 400},
      {"long nonce", json, R"({"user":"a","text":"b","nonce":")" + repeat("n", 65) + R"("})", 400},
      {"numbers beyond 64 bits ignored", json,
       R"({"user":"a","n":[123456789012345678901234567890,-1e400,0.5E-999],"text":"1e400"})", 0,
       "a", "1e400"},
      {"number beyond 64 bits as user", json,
       R"({"user":123456789012345678901234567890,"text":"b"})", 400},
      {"malformed number beside a big one", json, R"({"user":"a","text":"b","n":[1e400,01]})", 400},
      {"minus minus one", json, R"({"user":"a","text":"b","n":--1})", 400},
      {"number glued to a value", json, R"({"user":"a","text":"b","n":[1e400 1]})", 400},
      {"digits run ending in a dot", json,
       R"({"user":"a","text":"b","n":)" + std::string(32000, '1') + ".}", 400},
      {"long number beside a big one", json,
       R"({"user":"a","text":"b","n":[1e400,)" + std::string(32000, '1') + "]}", 0},
      {"dangling exponent beside a big one", json, R"({"user":"a","text":"b","n":[1e400,1e]})",
       400},
      {"escaped quote then a big number", json,
       R"({"user":"a\"","text":"b\\","n":99999999999999999999999})", 0, "a\"", "b\\"},
      {"text/plain", "text/plain", "hello", 415},
      {"no content type", "", R"({"user":"a","text":"b"})", 415},
      {"multipart", "multipart/form-data; boundary=x", "--x--", 415},
      {"form with byte order mark", form, "\xEF\xBB\xBFuser=a&text=b", 0, "a", "b"},
      {"json in latin-1", "application/json; charset=ISO-8859-1",
       "{\"user\":\"Ren\xE9\",\"text\":\"b\"}", 0, "Ren\u00e9", "b"},
      {"form in latin-1 (Apache HttpClient 4)",
       "application/x-www-form-urlencoded; charset=ISO-8859-1", "user=Ren%E9&text=caf%E9+%FC%E9", 0,
       "Ren\u00e9", "caf\u00e9 \u00fc\u00e9"},
      {"latin-1 field name", "application/x-www-form-urlencoded; charset=latin1",
       "us%65r=a&text=%FF", 0, "a", "\u00ff"},
      {"latin-1 C1 control", "application/x-www-form-urlencoded; charset=iso-8859-1",
       "user=a&text=x%85y", 400},
      {"latin-1 byte order mark is not one", "application/x-www-form-urlencoded; charset=latin1",
       "\xEF\xBB\xBFuser=a&text=b", 400},
      {"form in utf-16", "application/x-www-form-urlencoded;charset=\"UTF-16\"", "user=a&text=b",
       415},
      {"charset after another parameter", "application/json; q=1; Charset=windows-1252",
       R"({"user":"a","text":"b"})", 415},
      {"quoted utf-8", "application/json; charset=\"utf-8\"", R"({"user":"a","text":"b"})", 0},
      {"utf8 spelled without a dash", "application/json;charset=UTF8", R"({"user":"a","text":"b"})",
       0},
      {"us-ascii", "application/x-www-form-urlencoded; charset=us-ascii", "user=a&text=b", 0},
      {"escape in a quoted charset", "application/json; charset=\"utf\\-8\"",
       R"({"user":"a","text":"b"})", 0},
      {"charset inside another parameter's quoted string",
       "application/json; foo=\"a;charset=utf-16\"; charset=utf-8", R"({"user":"a","text":"b"})",
       0},
      {"escaped quote inside a quoted string", "application/json; foo=\"a\\\";charset=utf-16\"",
       R"({"user":"a","text":"b"})", 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    sse::PostResult r = decode_post(c.content_type, c.body);
    if (c.status == 0) {
      ASSERT_TRUE(std::holds_alternative<ChatInput>(r)) << std::get<Rejection>(r).reason;
      if (c.user) {
        EXPECT_EQ(std::get<ChatInput>(r).user, c.user);
      }
      if (c.text) {
        EXPECT_EQ(std::get<ChatInput>(r).text, c.text);
      }
    } else {
      ASSERT_TRUE(std::holds_alternative<Rejection>(r));
      EXPECT_EQ(std::get<Rejection>(r).status, c.status);
      EXPECT_FALSE(std::get<Rejection>(r).reason.empty());
    }
  }
}

TEST(Validation, ReasonsArePlainEnglish) {
  auto r = decode_post("application/json", R"({"user":"a","text":""})");
  EXPECT_EQ(std::get<Rejection>(r).reason, "text must not be empty");
  r = decode_post("application/json", R"({"user":")" + std::string(40, 'x') + R"(","text":"b"})");
  EXPECT_EQ(std::get<Rejection>(r).reason, "user must be at most 32 characters");
}

TEST(Validation, NonceIsKept) {
  auto r = decode_post("application/json", R"({"user":"a","text":"b","nonce":"n-1"})");
  EXPECT_EQ(std::get<ChatInput>(r).nonce, "n-1");
}

TEST(Validation, TheQueryStringsRoomWhenTheBodyNamesNone) {
  auto room_of = [](const sse::PostResult& r) {
    return std::holds_alternative<ChatInput>(r) ? std::get<ChatInput>(r).room
                                                : "(" + std::get<Rejection>(r).reason + ")";
  };
  const char* json = "application/json";
  const char* form = "application/x-www-form-urlencoded";
  EXPECT_EQ(room_of(decode_post(json, R"({"user":"a","text":"b"})", std::nullopt, "ops")), "ops");
  EXPECT_EQ(room_of(decode_post(form, "user=a&text=b", std::nullopt, "ops")), "ops");
  EXPECT_EQ(
      room_of(decode_post(json, R"({"user":"a","text":"b","room":"ops"})", std::nullopt, "ops")),
      "ops");
  EXPECT_EQ(room_of(decode_post(json, R"({"user":"a","text":"b"})")), "general");
  auto other = decode_post(json, R"({"user":"a","text":"b","room":"dev"})", std::nullopt, "ops");
  ASSERT_TRUE(std::holds_alternative<Rejection>(other));
  EXPECT_EQ(std::get<Rejection>(other).status, 400);
  auto bad = decode_post(form, "user=a&text=b", std::nullopt, "Ops");
  ASSERT_TRUE(std::holds_alternative<Rejection>(bad));
  // A query room that is no room name is said so, never echoed (it may be any bytes).
  auto raw = decode_post(json, R"({"user":"a","text":"b","room":"dev"})", std::nullopt, "\xFF");
  ASSERT_TRUE(std::holds_alternative<Rejection>(raw));
  EXPECT_EQ(std::get<Rejection>(raw).reason.find('\xFF'), std::string::npos);
}
