#include "form.h"

#include <gtest/gtest.h>

using namespace sse::form;

TEST(Form, DecodesPairs) {
  auto pairs = parse("user=alice&text=hello+world%21&empty=&flag");
  ASSERT_TRUE(pairs);
  ASSERT_EQ(pairs->size(), 4u);
  EXPECT_EQ((*pairs)[0], (std::pair<std::string, std::string>{"user", "alice"}));
  EXPECT_EQ((*pairs)[1].second, "hello world!");
  EXPECT_EQ((*pairs)[2].second, "");
  EXPECT_EQ((*pairs)[3].first, "flag");
}

TEST(Form, DecodesUtf8Escapes) {
  auto pairs = parse("text=%E6%97%A5%F0%9F%98%80");
  ASSERT_TRUE(pairs);
  EXPECT_EQ((*pairs)[0].second, "日😀");
}

TEST(Form, RejectsMalformedEscapes) {
  EXPECT_FALSE(parse("text=%"));
  EXPECT_FALSE(parse("text=%4"));
  EXPECT_FALSE(parse("text=%zz"));
}

TEST(Form, PercentDecodeKeepsPlusInPaths) {
  EXPECT_EQ(percent_decode("/a+b%2e%2E", false), "/a+b..");
}

TEST(Form, QueryValue) {
  EXPECT_EQ(query_value("a=1&lastEventId=41", "lastEventId"), "41");
  EXPECT_FALSE(query_value("a=1", "lastEventId"));
}
