// HTTP/1.1 response serialisation: status line, the headers every answer carries, the body.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "frame.h"

namespace sse::http {

std::string_view reason_phrase(int status);

struct Response {
  int status = 200;
  std::string_view content_type = "application/json";
  std::string body;
  // Sent after `body` without copying: byte ranges of shared frames (a history page is slices of
  // the frames its messages were streamed as).
  struct Part {
    FrameRef frame;
    size_t begin;
    size_t end;
    // One copy for every answer that sends it (a static file): the connection holds a reference,
    // not the bytes, so --max-queued-bytes does not count it.
    bool shared = false;
  };
  std::vector<Part> parts;
  std::vector<std::pair<std::string_view, std::string>> headers;
  bool head_only = false;      // HEAD: same headers, no body
  bool close = false;          // adds "Connection: close"
  bool keep_alive = false;     // adds "Connection: keep-alive" (HTTP/1.0 clients need it said)
  bool unframed_body = false;  // no Content-Length: a stream's head, whose body ends with the
                               // connection
};

// "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 5.6.7).
std::string imf_fixdate(time_t t);

// "Date: <IMF-fixdate>\r\n" for the current second.
std::string_view date_header();

// The status line, headers and `body` (not `parts`, which the connection queues as slices).
std::string serialize(const Response& r);
size_t content_length(const Response& r);

// {"error":"<reason>"} with the given status.
Response error(int status, std::string_view reason);
// error(), and when to ask again (429, 503).
Response retry_later(int status, std::string_view reason, uint32_t retry_after_s);

// 401: a token is needed here and none (`presented` false) or no valid one was presented
// (RFC 6750 3.1: only then error="invalid_token").
Response unauthorized(std::string_view reason, bool presented);

// With CORS on (`allowed` is the --cors-origin): Vary: Origin, and for a request from `allowed`
// the headers that let its page read this answer, the ones a client acts on (Retry-After,
// WWW-Authenticate) included.
void cors_headers(Response& r, std::string_view allowed, bool from_allowed);

// Sent before the body of a request with "Expect: 100-continue".
inline constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

// The head of every event stream, for GET and HEAD alike: chunked on HTTP/1.1; HTTP/1.0 has no
// chunks, so there the body ends only with the connection. X-Accel-Buffering stops nginx from
// buffering the stream.
Response stream_head(bool http10);

}  // namespace sse::http
