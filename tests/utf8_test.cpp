#include "utf8.h"

#include <gtest/gtest.h>

using namespace sse::utf8;

TEST(Utf8, AcceptsValid) {
  EXPECT_TRUE(is_valid("plain"));
  EXPECT_TRUE(is_valid("é日😀"));
  EXPECT_TRUE(is_valid("\xf4\x8f\xbf\xbf"));  // U+10FFFF
  EXPECT_TRUE(is_valid(""));
}

TEST(Utf8, RejectsInvalid) {
  EXPECT_FALSE(is_valid("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(is_valid("\xe0\x80\xaf"));      // overlong 3-byte
  EXPECT_FALSE(is_valid("\xf0\x80\x80\xaf"));  // overlong 4-byte
  EXPECT_FALSE(is_valid("\xed\xa0\x80"));      // surrogate U+D800
  EXPECT_FALSE(is_valid("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(is_valid("\xe6\x97"));          // truncated
  EXPECT_FALSE(is_valid("\x80"));              // lone continuation
  EXPECT_FALSE(is_valid("\xff"));
}

TEST(Utf8, CountsCodePoints) {
  EXPECT_EQ(count_code_points("abc"), 3u);
  EXPECT_EQ(count_code_points("日本😀"), 3u);
}

TEST(Utf8, TrimsAsciiAndUnicodeSpaces) {
  EXPECT_EQ(trim("  a b \n\t"), "a b");
  EXPECT_EQ(trim("\xc2\xa0x\xe3\x80\x80"), "x");  // NBSP, ideographic space
  EXPECT_EQ(trim("   "), "");
  EXPECT_EQ(trim("é"), "é");
}
