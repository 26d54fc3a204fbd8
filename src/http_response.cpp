#include "http_response.h"

#include <ctime>

#include "json.h"

namespace sse::http {

std::string_view reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

std::string imf_fixdate(time_t t) {
  struct tm utc;
  gmtime_r(&t, &utc);
  char text[40];
  size_t length = std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &utc);
  return {text, length};
}

std::string_view date_header() {
  // Formatted once a second: RFC 9110 6.6.1 asks an origin server with a clock for Date on every
  // answer, and caches and clients use it to judge freshness.
  static thread_local time_t formatted_at = -1;
  static thread_local std::string line;
  time_t now = std::time(nullptr);
  if (now != formatted_at) {
    line = "Date: " + imf_fixdate(now) + "\r\n";
    formatted_at = now;
  }
  return line;
}

std::string serialize(const Response& r) {
  std::string out;
  out.reserve(160 + r.body.size());
  out += "HTTP/1.1 ";
  json::append_uint(out, static_cast<uint64_t>(r.status));
  out += ' ';
  out += reason_phrase(r.status);
  out += "\r\n";
  out += date_header();
  // RFC 9110 8.6, 15.3.5, 15.4.5: a 204 carries no Content-Length (and no content to type); a
  // 304's would have to be the unsent file's, which its validators already stand for.
  bool no_content = r.status == 204 || r.status == 304;
  if (!no_content) {
    out += "Content-Type: ";
    out += r.content_type;
    out += "\r\n";
  }
  if (!no_content && !r.unframed_body) {
    out += "Content-Length: ";
    json::append_uint(out, content_length(r));
    out += "\r\n";
  }
  for (const auto& [name, value] : r.headers) {
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  if (r.close) {
    out += "Connection: close\r\n";
  } else if (r.keep_alive) {
    out += "Connection: keep-alive\r\n";
  }
  out += "\r\n";
  if (!r.head_only) out += r.body;
  return out;
}

size_t content_length(const Response& r) {
  size_t n = r.body.size();
  for (const Response::Part& part : r.parts) n += part.end - part.begin;
  return n;
}

void cors_headers(Response& r, std::string_view allowed, bool from_allowed) {
  if (allowed.empty()) return;
  // The answer depends on Origin, also when the request sent none: a cache must not give that
  // copy to the allowed site's page.
  r.headers.emplace_back("Vary", "Origin");
  if (!from_allowed) return;
  r.headers.emplace_back("Access-Control-Allow-Origin", std::string(allowed));
  r.headers.emplace_back("Access-Control-Allow-Credentials", "true");
  r.headers.emplace_back("Access-Control-Expose-Headers", "Retry-After, WWW-Authenticate");
}

Response stream_head(bool http10) {
  Response r;
  r.content_type = "text/event-stream";
  r.unframed_body = true;
  r.headers.emplace_back("Cache-Control", "no-cache");
  r.headers.emplace_back("X-Accel-Buffering", "no");
  if (!http10) r.headers.emplace_back("Transfer-Encoding", "chunked");
  return r;
}

Response error(int status, std::string_view reason) {
  Response r;
  r.status = status;
  r.body = json::error_body(reason);
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  // What a POST may send instead (Accept-Post, as W3C LDP defines it).
  if (status == 415)
    r.headers.emplace_back("Accept-Post", "application/json, application/x-www-form-urlencoded");
  return r;
}

Response retry_later(int status, std::string_view reason, uint32_t retry_after_s) {
  Response r = error(status, reason);
  r.headers.emplace_back("Retry-After", std::to_string(retry_after_s));
  return r;
}

Response unauthorized(std::string_view reason, bool presented) {
  Response r = error(401, reason);
  r.headers.emplace_back("WWW-Authenticate",
                         presented ? R"(Bearer realm="sse-chat", error="invalid_token")"
                                   : R"(Bearer realm="sse-chat")");
  return r;
}

}  // namespace sse::http
