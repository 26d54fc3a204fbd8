#include "message.h"

#include <simdjson.h>

#include <algorithm>
#include <cstdlib>

#include "ascii.h"
#include "form.h"
#include "json_numbers.h"
#include "room_name.h"
#include "utf8.h"

namespace sse {
namespace {

enum class MediaType { Json, Form, Other };

MediaType classify(std::string_view content_type) {
  std::string_view essence = ascii::trim_ows(content_type.substr(0, content_type.find(';')));
  if (ascii::iequals(essence, "application/json")) return MediaType::Json;
  if (ascii::iequals(essence, "application/x-www-form-urlencoded")) return MediaType::Form;
  return MediaType::Other;
}

// The charset parameter's value, unquoted; empty when there is none.
std::string charset_of(std::string_view content_type) {
  ascii::take_element(content_type, ';', true);  // the media type itself
  while (!content_type.empty()) {
    std::string_view param = ascii::take_element(content_type, ';', true);
    size_t eq = param.find('=');
    if (eq != std::string_view::npos &&
        ascii::iequals(ascii::trim_ows(param.substr(0, eq)), "charset"))
      return ascii::unquote_escaped(ascii::trim_ows(param.substr(eq + 1)));
  }
  return {};
}

enum class Charset { Utf8, Latin1, Other };

// Bodies are read as UTF-8 (ASCII is a subset). ISO-8859-1 is read too, since Java's Apache
// HttpClient 4 declares it on every form it sends (UrlEncodedFormEntity's default); any other
// charset would be misread, so it is refused rather than turned into a 400 about invalid UTF-8.
Charset charset_kind(std::string_view content_type) {
  std::string charset = charset_of(content_type);
  if (charset.empty()) return Charset::Utf8;
  for (std::string_view name : {"utf-8", "utf8", "us-ascii"})
    if (ascii::iequals(charset, name)) return Charset::Utf8;
  for (std::string_view name : {"iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1"})
    if (ascii::iequals(charset, name)) return Charset::Latin1;
  return Charset::Other;
}

bool has_control(std::string_view s, bool allow_newline_and_tab) {
  size_t i = 0;
  while (i < s.size()) {
    char32_t c = utf8::decode(s, i);
    if (allow_newline_and_tab && (c == '\n' || c == '\t')) continue;
    if (c < 0x20 || (c >= 0x7F && c <= 0x9F)) return true;
  }
  return false;
}

std::string normalize_newlines(std::string s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') continue;  // CRLF -> LF
    out.push_back(s[i]);
  }
  return out;
}

Rejection bad(std::string reason) {
  return Rejection{400, std::move(reason)};
}

// Checks one field; empty string means it is fine.
std::string check_field(std::string_view name, std::string_view value, size_t max_chars,
                        bool multiline) {
  if (!utf8::is_valid(value)) return std::string(name) + " is not valid UTF-8";
  std::string_view trimmed = utf8::trim(value);
  if (trimmed.empty()) return std::string(name) + " must not be empty";
  if (utf8::count_code_points(trimmed) > max_chars)
    return std::string(name) + " must be at most " + std::to_string(max_chars) + " characters";
  if (has_control(trimmed, multiline))
    return std::string(name) +
           (multiline ? " must not contain control characters other than newline and tab"
                      : " must not contain control characters");
  return {};
}

// Collects the known fields of a body once each; unknown fields are ignored, as most JSON APIs do.
class Fields {
 public:
  static constexpr int kUnknown = -1;
  // With an author (a token's name) the body's "user" is not read at all, like unknown fields.
  Fields(std::optional<std::string_view> author, std::optional<std::string_view> query_room)
      : author_(author), query_room_(query_room) {}
  int slot(std::string_view key) const {
    for (int i = author_ ? 1 : 0; i < kCount; ++i)
      if (key == kNames[i]) return i;
    return kUnknown;
  }
  // Empty on success, else the reason.
  std::string set(int slot, std::string value) {
    if (seen_[slot]) return "duplicate field \"" + std::string(kNames[slot]) + "\"";
    seen_[slot] = true;
    values_[slot] = std::move(value);
    return {};
  }
  PostResult finish() {
    const std::optional<std::string_view>& author = author_;
    if (!seen_[0] && !author) return bad("missing \"user\"");
    if (!seen_[1]) return bad("missing \"text\"");
    if (query_room_)
      if (auto err = room_name_error(*query_room_)) return bad(*err);
    if (query_room_ && seen_[3] && values_[3] != *query_room_)
      return bad("the query string names room \"" + std::string(*query_room_) +
                 "\" and the body another");
    std::string room = seen_[3]      ? std::move(values_[3])
                       : query_room_ ? std::string(*query_room_)
                                     : std::string(kDefaultRoom);
    if (auto err = room_name_error(room)) return bad(*err);
    // An author's name was checked with its token (it may be longer than a "user"): only the
    // text and nonce are checked here, under a stand-in name.
    std::string user = author ? std::string("-") : std::move(values_[0]);
    PostResult result = validate(std::move(user), std::move(values_[1]), std::move(values_[2]));
    if (auto* input = std::get_if<ChatInput>(&result)) {
      input->room = std::move(room);
      if (author) input->user = std::string(*author);
    }
    return result;
  }

 private:
  static constexpr int kCount = 4;
  static constexpr std::string_view kNames[kCount] = {"user", "text", "nonce", "room"};
  std::optional<std::string_view> author_;
  std::optional<std::string_view> query_room_;
  std::string values_[kCount];
  bool seen_[kCount] = {};
};

// RFC 8259 8.1 lets a parser ignore a byte order mark; some Windows tools still send one, also
// before a form body.
void skip_byte_order_mark(std::string_view& body) {
  if (body.starts_with("\xEF\xBB\xBF")) body.remove_prefix(3);
}

// Arrays and objects inside one another, the body's own object counting as one.
constexpr size_t kMaxJsonDepth = 32;

PostResult decode_json(std::string_view body, std::optional<std::string_view> author,
                       std::optional<std::string_view> query_room) {
  // One parser for the process: the loop is single-threaded, and reusing it avoids an allocation
  // per request. Depth is capped so hostile nesting is rejected cheaply.
  static simdjson::dom::parser parser = [] {
    simdjson::dom::parser p;
    if (p.allocate(64 * 1024, kMaxJsonDepth) != simdjson::SUCCESS)
      std::abort();  // out of memory at start-up
    return p;
  }();
  skip_byte_order_mark(body);
  simdjson::dom::element doc;
  simdjson::error_code error = parser.parse(body.data(), body.size(), true).get(doc);
  std::string zeroed;
  // NUMBER_ERROR here (BIGINT_ERROR in later simdjson): any error but depth is tried again. No
  // field read here is a number, so what such a number was does not matter.
  if (error != simdjson::SUCCESS && error != simdjson::DEPTH_ERROR) {
    zeroed = json::tame_unreadable_numbers(body);
    error = parser.parse(zeroed.data(), zeroed.size(), true).get(doc);
  }
  if (error == simdjson::DEPTH_ERROR)
    return bad("body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  if (error != simdjson::SUCCESS) return bad("body is not valid JSON");
  simdjson::dom::object object;
  if (doc.get_object().get(object) != simdjson::SUCCESS)
    return bad("body must be a JSON object with \"user\" and \"text\"");
  Fields fields(author, query_room);
  for (auto field : object) {
    int slot = fields.slot(field.key);
    if (slot == Fields::kUnknown) continue;
    std::string_view value;
    if (field.value.get_string().get(value) != simdjson::SUCCESS)
      return bad("\"" + std::string(field.key) + "\" must be a string");
    if (auto err = fields.set(slot, std::string(value)); !err.empty()) return bad(err);
  }
  return fields.finish();
}

PostResult decode_form(std::string_view body, Charset charset,
                       std::optional<std::string_view> author,
                       std::optional<std::string_view> query_room) {
  if (charset == Charset::Utf8) skip_byte_order_mark(body);
  auto pairs = form::parse(body);
  if (!pairs) return bad("malformed form encoding");
  Fields fields(author, query_room);
  for (auto& [key, value] : *pairs) {
    // The escapes (%E9) are bytes of the declared charset: only decoded they can be converted.
    if (charset == Charset::Latin1) key = utf8::from_latin1(key);
    int slot = fields.slot(key);
    if (slot == Fields::kUnknown) continue;
    if (charset == Charset::Latin1) value = utf8::from_latin1(value);
    if (auto err = fields.set(slot, std::move(value)); !err.empty()) return bad(err);
  }
  return fields.finish();
}

}  // namespace

std::optional<std::string> check_user(std::string& user, size_t max_chars) {
  if (auto err = check_field("user", user, max_chars, false); !err.empty()) return err;
  user = std::string(utf8::trim(user));
  return std::nullopt;
}

PostResult validate(std::string user, std::string text, std::string nonce) {
  text = normalize_newlines(std::move(text));
  if (auto err = check_field("user", user, kMaxUserChars, false); !err.empty()) return bad(err);
  if (auto err = check_field("text", text, kMaxTextChars, true); !err.empty()) return bad(err);
  if (!utf8::is_valid(nonce) || has_control(nonce, false) ||
      utf8::count_code_points(nonce) > kMaxNonceChars)
    return bad("nonce must be at most 64 characters without control characters");
  ChatInput input;
  input.user = std::string(utf8::trim(user));
  input.text = std::string(utf8::trim(text));
  input.nonce = std::move(nonce);
  input.room = std::string(kDefaultRoom);
  return input;
}

std::optional<Rejection> unsupported_media_type(std::string_view content_type) {
  if (classify(content_type) == MediaType::Other)
    return Rejection{415,
                     "Content-Type must be application/json or application/x-www-form-urlencoded"};
  if (charset_kind(content_type) == Charset::Other)
    return Rejection{415, "charset must be UTF-8, US-ASCII or ISO-8859-1"};
  return std::nullopt;
}

PostResult decode_post(std::string_view content_type, std::string_view body,
                       std::optional<std::string_view> author,
                       std::optional<std::string_view> query_room) {
  if (auto unsupported = unsupported_media_type(content_type)) return *unsupported;
  Charset charset = charset_kind(content_type);
  if (classify(content_type) == MediaType::Form)
    return decode_form(body, charset, author, query_room);
  if (charset == Charset::Utf8) return decode_json(body, author, query_room);
  std::string converted = utf8::from_latin1(body);
  return decode_json(converted, author, query_room);
}

}  // namespace sse
