// llhttp glue: turns a byte stream into complete Requests, one at a time, so pipelined requests are
// answered in order. Holds only what a route needs (a few headers, the body), within limits.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace sse {

enum class Method { Get, Head, Post, Other };

struct Request {
  Method method = Method::Other;
  std::string method_name;
  std::string path;   // raw, still percent-encoded
  std::string query;  // after '?', raw
  std::string content_type;
  std::string last_event_id;
  std::string accept;
  std::string origin;
  std::string host;
  std::string authorization;
  std::string cookie;
  std::string forwarded_for;      // X-Forwarded-For
  std::string forwarded;          // Forwarded (RFC 7239)
  std::string forwarded_host;     // X-Forwarded-Host (the nearest proxy's: the last entry)
  std::string if_none_match;      // every If-None-Match header's list, joined
  std::string if_modified_since;  // the last one
  std::string body;
  bool has_last_event_id = false;
  bool keep_alive = true;
  bool http10 = false;  // HTTP/1.0: keep-alive only when asked, and said in the answer
};

struct HttpLimits {
  size_t max_url = 8 * 1024;
  size_t max_headers = 8 * 1024;  // bytes of all header lines, counting ": " and CRLF
  size_t max_header_lines = 100;
  size_t max_body = 16 * 1024;
};

class RequestParser {
 public:
  enum class Event { NeedMore, RequestReady, Error };
  struct Result {
    Event event;
    size_t consumed;  // bytes of the input used; the rest must be fed again after RequestReady
  };

  explicit RequestParser(const HttpLimits& limits);
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Parses until one request is complete (RequestReady: take it with request()), the input runs
  // out (NeedMore) or the input is invalid (Error: error_status() says which answer to give).
  Result feed(const char* data, size_t len);

  Request& request() { return request_; }
  // Call after handling a RequestReady, before feeding the next bytes.
  void next_request();

  int error_status() const { return error_status_; }
  std::string_view error_reason() const { return error_reason_; }

  // True once headers of a request carrying "Expect: 100-continue" are in but the body is not.
  bool wants_continue() const { return expect_continue_ && !continue_sent_ && in_body_; }
  void mark_continue_sent() { continue_sent_ = true; }

  // True between the first byte of a request and its end: a timeout applies.
  bool mid_request() const { return started_; }

 private:
  static int on_message_begin(llhttp_t* p);
  static int on_url(llhttp_t* p, const char* at, size_t len);
  static int on_header_field(llhttp_t* p, const char* at, size_t len);
  static int on_header_value(llhttp_t* p, const char* at, size_t len);
  static int on_header_value_complete(llhttp_t* p);
  static int on_headers_complete(llhttp_t* p);
  static int on_chunk_header(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, size_t len);
  static int on_message_complete(llhttp_t* p);
  static RequestParser& self(llhttp_t* p) { return *static_cast<RequestParser*>(p->data); }

  int fail(int status, const char* reason);
  bool within_empty_line_limit(const char* data, size_t len);
  bool within_raw_limits(size_t fed);
  bool count_header_bytes(size_t len);
  void keep_line_head(const char* data, size_t len);
  Result method_error(size_t fed);
  void refuse_as_llhttp_did(llhttp_errno_t err);
  const char* store_header();  // nullptr, or why the header makes the request malformed

  llhttp_t parser_;
  HttpLimits limits_;
  Request request_;
  std::string url_;
  std::string field_;
  std::string value_;
  size_t header_bytes_ = 0;
  size_t header_lines_ = 0;
  int host_headers_ = 0;
  int authorization_headers_ = 0;
  int origin_headers_ = 0;
  int content_type_headers_ = 0;
  std::string transfer_encoding_;       // every Transfer-Encoding line, joined with ','
  bool has_transfer_encoding_ = false;  // even an empty one
  bool headers_done_ = false;           // what follows are chunked trailers, never taken as headers
  bool keep_alive_ = true;              // as the headers said (a trailer cannot change it)
  size_t raw_bytes_ = 0;         // bytes fed since this request began (whitespace and framing too)
  size_t empty_line_bytes_ = 0;  // fed before it began: empty lines, which llhttp skips
  bool expect_continue_ = false;
  bool continue_sent_ = false;
  bool in_body_ = false;
  bool started_ = false;
  int error_status_ = 400;
  std::string error_reason_;
  // The first bytes of the request, for the one error llhttp cannot describe: it stops at the
  // first character no method it knows has, so "FOO / HTTP/1.1" (501) and garbage (400) look alike.
  std::string line_head_;
  bool method_pending_ = false;  // llhttp refused the method; waiting to see what it was
};

}  // namespace sse
