#include "http_parser.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "ascii.h"

namespace sse {
namespace {

const llhttp_settings_t& settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    return st;
  }();
  return s;
}

// A header value as RFC 9112 5 and 5.2 define it: whitespace at either end is not part of it,
// and an obs-fold becomes spaces (llhttp hands over a continuation line without its CRLF but with
// its leading whitespace, so tabs become spaces: "Bearer\r\n\ttoken" is "Bearer token").
std::string unfolded(std::string_view raw) {
  std::string out(ascii::trim_ows(raw));
  std::replace_if(
      out.begin(), out.end(), [](char c) { return c == '\t' || c == '\r' || c == '\n'; }, ' ');
  return out;
}

// RFC 9112 3.2 / RFC 3986 3.2.2: a host (reg-name, IPv4 or [IP-literal]) and an optional port.
bool valid_host(std::string_view host) {
  static constexpr std::string_view kAllowed =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:[]";
  return host.find_first_not_of(kAllowed) == std::string_view::npos;
}

bool is_hex(char c) {
  return std::isxdigit(static_cast<unsigned char>(c)) != 0;
}

int hex_value(char c) {
  return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

bool is_unreserved(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
         c == '~';
}

// RFC 3986 6.2.2.2: "/%65vents" is "/events", as any proxy or cache may rewrite it; what else is
// escaped stays escaped ("%2F" is no path separator). Nullopt for a '%' that starts no escape.
std::optional<std::string> normalized_path(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '%') {
      out += raw[i];
      continue;
    }
    if (i + 2 >= raw.size() || !is_hex(raw[i + 1]) || !is_hex(raw[i + 2])) return std::nullopt;
    char c = static_cast<char>(hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2]));
    if (is_unreserved(c)) {
      out += c;
    } else {
      out.append(raw.substr(i, 3));
    }
    i += 2;
  }
  return out;
}

// The absolute-form's "http://host:port" off the front of `url`, its authority into `host`: RFC
// 9112 3.2.2 has it stand for the Host header. Userinfo is refused (RFC 9110 4.2.4).
bool take_authority(std::string_view& url, std::string& host) {
  size_t sep = url.find("://");
  if (sep == std::string_view::npos) return false;
  std::string_view scheme = url.substr(0, sep);
  if (!ascii::iequals(scheme, "http") && !ascii::iequals(scheme, "https")) return false;
  url.remove_prefix(sep + 3);
  size_t end = url.find_first_of("/?#");
  std::string_view authority = url.substr(0, end);
  if (authority.empty() || authority.front() == ':' ||
      authority.find('@') != std::string_view::npos || !valid_host(authority))
    return false;
  host.assign(authority);
  url = end == std::string_view::npos ? std::string_view() : url.substr(end);
  return true;
}

// Origin-form ("/path?q") or absolute-form ("http://host/path?q") into path and query, the path
// normalized; the fragment, which no client should send, is dropped.
bool split_target(std::string_view url, Request& r) {
  if (!url.starts_with('/') && !take_authority(url, r.host)) return false;
  url = url.substr(0, url.find('#'));
  size_t q = url.find('?');
  std::string_view raw_path = url.substr(0, q);
  auto path = normalized_path(raw_path.empty() ? std::string_view("/") : raw_path);
  if (!path) return false;
  r.path = std::move(*path);
  r.query.assign(q == std::string_view::npos ? std::string_view{} : url.substr(q + 1));
  return true;
}

constexpr size_t kLongestMethod = 32;             // longer than any method worth naming
constexpr size_t kLineHead = kLongestMethod + 9;  // and " https://"

enum class MethodVerdict { Unknown, NotYetKnown, NotAMethod };

// How a request target starts (RFC 9112 3.2): origin-form "/", asterisk-form, or an absolute
// http(s) URI; nullopt while `target` is still too short to tell.
std::optional<bool> starts_a_target(std::string_view target) {
  if (target.empty()) return std::nullopt;
  if (target[0] == '/' || target[0] == '*') return true;
  for (std::string_view scheme : {"http://", "https://"}) {
    size_t n = std::min(target.size(), scheme.size());
    if (!ascii::iequals(target.substr(0, n), scheme.substr(0, n))) continue;
    if (n < scheme.size()) return std::nullopt;
    return true;
  }
  return false;
}

// RFC 9110 9.1: a request line that starts with a well-formed method the server does not know,
// followed by a request target, asks for something not implemented (501); anything else llhttp
// calls a bad method is not HTTP at all (400).
// `head` starts after the empty lines a request may follow (keep_line_head drops them).
MethodVerdict judge_method(std::string_view head) {
  size_t end = head.find_first_not_of(
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~");
  if (end == std::string_view::npos) {
    return head.size() < kLongestMethod ? MethodVerdict::NotYetKnown : MethodVerdict::NotAMethod;
  }
  if (end == 0 || end >= kLongestMethod || head[end] != ' ') return MethodVerdict::NotAMethod;
  std::optional<bool> target = starts_a_target(head.substr(end + 1));
  if (!target) {
    return head.size() < kLineHead ? MethodVerdict::NotYetKnown : MethodVerdict::NotAMethod;
  }
  return *target ? MethodVerdict::Unknown : MethodVerdict::NotAMethod;
}

}  // namespace

RequestParser::RequestParser(const HttpLimits& limits) : limits_(limits) {
  static const llhttp_settings_t callbacks = [] {
    llhttp_settings_t st = settings();
    st.on_message_begin = on_message_begin;
    st.on_url = on_url;
    st.on_header_field = on_header_field;
    st.on_header_value = on_header_value;
    st.on_header_value_complete = on_header_value_complete;
    st.on_headers_complete = on_headers_complete;
    st.on_chunk_header = on_chunk_header;
    st.on_body = on_body;
    st.on_message_complete = on_message_complete;
    return st;
  }();
  llhttp_init(&parser_, HTTP_REQUEST, &callbacks);
  // The one lenient flag: llhttp would refuse whatever follows a message whose trailers say
  // "Connection: close"; the connection itself closes when the headers asked for it.
  llhttp_set_lenient_keep_alive(&parser_, 1);
  parser_.data = this;
}

RequestParser::Result RequestParser::feed(const char* data, size_t len) {
  keep_line_head(data, len);
  if (method_pending_) return method_error(len);
  if (!started_ && !within_empty_line_limit(data, len)) return {Event::Error, len};
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (err == HPE_OK && !within_raw_limits(len)) return {Event::Error, len};
  if (err == HPE_OK) return {Event::NeedMore, len};
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    size_t consumed = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data);
    return {Event::RequestReady, consumed};
  }
  if (error_reason_.empty() && err == HPE_INVALID_METHOD) {
    method_pending_ = true;
    return method_error(len);
  }
  if (error_reason_.empty()) refuse_as_llhttp_did(err);
  return {Event::Error, len};
}

// A version that is well-formed but not 1.x (HTTP/3.0, or HTTP/2's preface, PRI * HTTP/2.0, from
// a client that assumed this server speaks it) is 505 (RFC 9110 15.6.6); anything else 400.
void RequestParser::refuse_as_llhttp_did(llhttp_errno_t err) {
  std::string_view why = llhttp_get_error_reason(&parser_);
  if (err == HPE_PAUSED_H2_UPGRADE) {
    fail(505, "HTTP/2 is not spoken here without TLS: use HTTP/1.1");
  } else if (err == HPE_INVALID_VERSION && why == "Invalid HTTP version") {
    fail(505, "HTTP version not supported: use HTTP/1.1");
  } else {
    error_status_ = 400;
    error_reason_ = "malformed HTTP request: " + std::string(why);
  }
}

// The callbacks see names, values and data, not the bytes around them (leading whitespace,
// obs-fold line breaks, chunk sizes and extensions): the raw bytes of a request are bounded too.
// A call may also carry the end of the previous request, so the bounds allow one read's worth more.
// RFC 9112 2.2 lets a server skip empty lines before a request: a few, not gigabytes of them,
// however they are split into reads (and also when the request's first bytes come with them).
bool RequestParser::within_empty_line_limit(const char* data, size_t len) {
  constexpr size_t kMaxEmptyLineBytes = 1024;
  size_t blank = 0;
  while (blank < len && (data[blank] == '\r' || data[blank] == '\n')) ++blank;
  empty_line_bytes_ += blank;
  if (empty_line_bytes_ <= kMaxEmptyLineBytes) return true;
  fail(400, "too many empty lines before the request");
  return false;
}

bool RequestParser::within_raw_limits(size_t fed) {
  if (!started_) return true;  // empty lines alone, counted by within_empty_line_limit
  constexpr size_t kSlack = 32 * 1024;
  raw_bytes_ += fed;
  size_t head_limit = limits_.max_url + limits_.max_headers + kSlack;
  if (!headers_done_ && raw_bytes_ > head_limit) {
    fail(431, "request headers too large");
    return false;
  }
  // Chunked framing may cost a few bytes per body byte; eight times the body is plenty.
  if (raw_bytes_ > head_limit + 8 * limits_.max_body) {
    fail(413, "request body too large");
    return false;
  }
  return true;
}

// llhttp stops at the first character no method it knows has: what follows tells a method it does
// not know from garbage, so the error waits for it.
RequestParser::Result RequestParser::method_error(size_t fed) {
  switch (judge_method(line_head_)) {
    case MethodVerdict::NotYetKnown:
      return {Event::NeedMore, fed};
    case MethodVerdict::Unknown:
      fail(501, "request method not implemented");
      break;
    case MethodVerdict::NotAMethod:
      fail(400, "malformed HTTP request: invalid method");
      break;
  }
  return {Event::Error, fed};
}

void RequestParser::keep_line_head(const char* data, size_t len) {
  while (line_head_.empty() && len > 0 && (*data == '\r' || *data == '\n')) {
    ++data;  // empty lines before a request: not part of what is kept
    --len;
  }
  if (line_head_.size() < kLineHead) {
    line_head_.append(data, std::min(len, kLineHead - line_head_.size()));
  }
}

void RequestParser::next_request() {
  line_head_.clear();
  if (llhttp_get_errno(&parser_) == HPE_PAUSED_UPGRADE) {
    llhttp_resume_after_upgrade(&parser_);
  } else {
    llhttp_resume(&parser_);
  }
  request_ = Request{};
}

int RequestParser::fail(int status, const char* reason) {
  error_status_ = status;
  error_reason_ = reason;
  return HPE_USER;
}

bool RequestParser::count_header_bytes(size_t len) {
  header_bytes_ += len;
  return header_bytes_ <= limits_.max_headers;
}

int RequestParser::on_message_begin(llhttp_t* p) {
  RequestParser& s = self(p);
  s.url_.clear();
  s.field_.clear();
  s.value_.clear();
  s.header_bytes_ = 0;
  s.header_lines_ = 0;
  s.host_headers_ = 0;
  s.authorization_headers_ = 0;
  s.origin_headers_ = 0;
  s.content_type_headers_ = 0;
  s.headers_done_ = false;
  s.raw_bytes_ = s.empty_line_bytes_ = 0;
  s.expect_continue_ = s.continue_sent_ = s.in_body_ = false;
  s.transfer_encoding_.clear();
  s.has_transfer_encoding_ = false;
  s.started_ = true;
  return 0;
}

int RequestParser::on_url(llhttp_t* p, const char* at, size_t len) {
  RequestParser& s = self(p);
  if (s.url_.size() + len > s.limits_.max_url) return s.fail(414, "request target too long");
  s.url_.append(at, len);
  return 0;
}

int RequestParser::on_header_field(llhttp_t* p, const char* at, size_t len) {
  RequestParser& s = self(p);
  if (!s.count_header_bytes(len)) return s.fail(431, "request headers too large");
  s.field_.append(at, len);
  return 0;
}

int RequestParser::on_header_value(llhttp_t* p, const char* at, size_t len) {
  RequestParser& s = self(p);
  if (!s.count_header_bytes(len)) return s.fail(431, "request headers too large");
  s.value_.append(at, len);
  return 0;
}

int RequestParser::on_header_value_complete(llhttp_t* p) {
  RequestParser& s = self(p);
  // Each line costs its ": " and CRLF too, so thousands of empty lines cannot slip under the limit.
  if (++s.header_lines_ > s.limits_.max_header_lines || !s.count_header_bytes(4))
    return s.fail(431, "request headers too large");
  if (s.field_.empty()) return s.fail(400, "malformed HTTP request: empty header name");
  if (!s.headers_done_) {
    s.value_ = unfolded(s.value_);
    if (const char* bad = s.store_header()) return s.fail(400, bad);
  }
  s.field_.clear();
  s.value_.clear();
  return 0;
}

const char* RequestParser::store_header() {
  Request& r = request_;
  if (ascii::iequals(field_, "content-type")) {
    if (++content_type_headers_ > 1) return "more than one Content-Type header";
    r.content_type = value_;
  } else if (ascii::iequals(field_, "last-event-id")) {
    // Which of two ids to resume from is anybody's guess; an empty one is no id (as the query's).
    if (value_.empty()) return nullptr;
    if (r.has_last_event_id) return "more than one Last-Event-ID header";
    r.last_event_id = value_;
    r.has_last_event_id = true;
  } else if (ascii::iequals(field_, "host")) {
    if (!valid_host(value_)) return "malformed Host header";
    r.host = value_;
    ++host_headers_;
  } else if (ascii::iequals(field_, "transfer-encoding")) {
    if (has_transfer_encoding_) transfer_encoding_ += ',';
    transfer_encoding_ += value_;
    has_transfer_encoding_ = true;
  } else if (ascii::iequals(field_, "accept")) {
    if (!r.accept.empty()) r.accept += ", ";
    r.accept += value_;
  } else if (ascii::iequals(field_, "origin")) {
    // A proxy that appended one would have the check read the other.
    if (++origin_headers_ > 1) return "more than one Origin header";
    r.origin = value_;
  } else if (ascii::iequals(field_, "authorization")) {
    r.authorization = value_;
    ++authorization_headers_;
  } else if (ascii::iequals(field_, "cookie")) {
    if (!r.cookie.empty())
      r.cookie += "; ";  // RFC 6265 §5.4: one header, but HTTP/2 gateways split
    r.cookie += value_;
  } else if (ascii::iequals(field_, "x-forwarded-for")) {
    if (!r.forwarded_for.empty()) r.forwarded_for += ", ";
    r.forwarded_for += value_;
  } else if (ascii::iequals(field_, "x-forwarded-host")) {
    // The nearest proxy's (the last entry): one that appends keeps what the client sent first.
    size_t comma = value_.rfind(',');
    r.forwarded_host =
        ascii::trim_ows(comma == std::string::npos ? value_ : value_.substr(comma + 1));
  } else if (ascii::iequals(field_, "forwarded")) {
    if (!r.forwarded.empty()) r.forwarded += ", ";
    r.forwarded += value_;
  } else if (ascii::iequals(field_, "if-none-match")) {
    if (!r.if_none_match.empty()) r.if_none_match += ", ";
    r.if_none_match += value_;
  } else if (ascii::iequals(field_, "if-modified-since")) {
    r.if_modified_since = value_;
  } else if (ascii::iequals(field_, "expect")) {
    expect_continue_ = expect_continue_ || ascii::iequals(value_, "100-continue");
  }
  return nullptr;
}

int RequestParser::on_headers_complete(llhttp_t* p) {
  RequestParser& s = self(p);
  Request& r = s.request_;
  switch (llhttp_get_method(p)) {
    case HTTP_GET:
      r.method = Method::Get;
      break;
    case HTTP_HEAD:
      r.method = Method::Head;
      break;
    case HTTP_POST:
      r.method = Method::Post;
      break;
    default:
      r.method = Method::Other;
      break;
  }
  r.method_name = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_get_method(p)));
  s.headers_done_ = true;
  // RFC 9112 9.3: "close" wins over "keep-alive", which llhttp forgets for HTTP/1.0.
  s.keep_alive_ = llhttp_should_keep_alive(p) && !(p->flags & F_CONNECTION_CLOSE);
  // This server never switches protocols: Upgrade (an h2c offer, a WebSocket) is ignored and the
  // request answered as HTTP/1.1, and the connection goes on parsing HTTP/1.1 after it.
  p->upgrade = 0;
  if (llhttp_get_http_major(p) == 0) return s.fail(400, "malformed HTTP request: no HTTP version");
  if (llhttp_get_http_major(p) != 1)
    return s.fail(505, "HTTP version not supported: use HTTP/1.1");  // HTTP/2.0
  r.http10 = llhttp_get_http_minor(p) == 0;
  if (r.http10) {
    // RFC 9110 10.1.1: a 1.0 client's Expect is ignored (it could not read a 100 Continue), and
    // RFC 9112 6.1: a 1.0 message with Transfer-Encoding is read, then the connection closed.
    s.expect_continue_ = false;
    if (s.has_transfer_encoding_) s.keep_alive_ = false;
  }
  // llhttp decodes chunked only: a body in any other coding would be taken as plain bytes. An
  // empty coding is no coding at all (RFC 9112 6.3: chunked must be the final one): framing the
  // body by Content-Length then would read it otherwise than a proxy that refuses it.
  if (s.has_transfer_encoding_ && ascii::trim_ows(s.transfer_encoding_).empty())
    return s.fail(400, "malformed Transfer-Encoding");
  if (s.has_transfer_encoding_ && !ascii::iequals(s.transfer_encoding_, "chunked"))
    return s.fail(501, "transfer coding not implemented (only chunked)");
  // RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one in HTTP/1.0.
  if (s.host_headers_ > 1 || (!r.http10 && s.host_headers_ == 0))
    return s.fail(400, "exactly one Host header is required");
  // Two credentials: which one speaks is anybody's guess (a proxy may have added one).
  if (s.authorization_headers_ > 1) return s.fail(400, "more than one Authorization header");
  // RFC 9112 3.2.4: the asterisk-form asks about the server as a whole, and only OPTIONS may.
  bool asterisk = s.url_ == "*" && r.method_name == "OPTIONS";
  if (asterisk) r.path = "*";
  if (!asterisk && !split_target(s.url_, r)) return s.fail(400, "malformed request target");
  // Refuse an oversized body from its declared length, before reading any of it.
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > s.limits_.max_body)
    return s.fail(413, "request body too large");
  // The declared length at once (grown by doubling, a body of 32 KiB took 64), up to what a
  // message takes: a large --max-body is not reserved for a client that has sent no byte of it.
  constexpr uint64_t kMaxReserve = 64 * 1024;
  if (p->flags & F_CONTENT_LENGTH)
    s.request_.body.reserve(std::min<uint64_t>(p->content_length, kMaxReserve));
  s.in_body_ = (p->flags & (F_CONTENT_LENGTH | F_CHUNKED)) &&
               !(p->flags & F_CONTENT_LENGTH && p->content_length == 0);
  return 0;
}

// A chunk that would take the body past the limit is refused from its size line, before its data.
int RequestParser::on_chunk_header(llhttp_t* p) {
  RequestParser& s = self(p);
  if (p->content_length > s.limits_.max_body - s.request_.body.size())
    return s.fail(413, "request body too large");
  return 0;
}

int RequestParser::on_body(llhttp_t* p, const char* at, size_t len) {
  RequestParser& s = self(p);
  if (s.request_.body.size() + len > s.limits_.max_body)
    return s.fail(413, "request body too large");
  s.request_.body.append(at, len);
  return 0;
}

int RequestParser::on_message_complete(llhttp_t* p) {
  RequestParser& s = self(p);
  s.request_.keep_alive = s.keep_alive_;
  s.in_body_ = false;
  s.started_ = false;
  return HPE_PAUSED;  // hand the request over before parsing any pipelined successor
}

}  // namespace sse
