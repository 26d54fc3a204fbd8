#include "static_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>

#include "ascii.h"
#include "form.h"

namespace sse {
namespace {

bool has_dot_dot_segment(std::string_view path) {
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    if (path.substr(start, end - start) == "..") return true;
    start = end + 1;
  }
  return false;
}

// The file's bytes, and its stat as read (the version the bytes are).
std::optional<std::string> read_regular_file(const std::string& path, struct stat& st) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return std::nullopt;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return std::nullopt;
  }
  std::string body(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < body.size()) {
    ssize_t n = read(fd, body.data() + got, body.size() - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fd);
  body.resize(got);
  return body;
}

std::string entity_tag(ino_t ino, off_t size, const struct timespec& mtime) {
  char tag[96];
  std::snprintf(tag, sizeof tag, "\"%llx-%llx-%llx.%lx\"", static_cast<unsigned long long>(ino),
                static_cast<unsigned long long>(size),
                static_cast<unsigned long long>(mtime.tv_sec),
                static_cast<unsigned long>(mtime.tv_nsec));
  return tag;
}

// An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"); nullopt for anything else, which RFC 9110
// 13.1.3 says to ignore.
std::optional<time_t> http_date(std::string_view text) {
  std::string copy(text);
  struct tm utc {};
  const char* end = strptime(copy.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &utc);
  if (!end || *end != '\0') return std::nullopt;
  return timegm(&utc);
}

}  // namespace

bool StaticFile::not_modified(std::string_view if_none_match,
                              std::string_view if_modified_since) const {
  if (!if_none_match.empty()) {
    // A list of entity tags, or "*"; compared weakly (a W/ prefix does not matter).
    size_t start = 0;
    while (start < if_none_match.size()) {
      size_t end = if_none_match.find(',', start);
      if (end == std::string_view::npos) end = if_none_match.size();
      std::string_view tag = ascii::trim_ows(if_none_match.substr(start, end - start));
      if (tag.starts_with("W/")) tag.remove_prefix(2);
      if (tag == "*" || tag == etag) return true;
      start = end + 1;
    }
    return false;
  }
  auto since = http_date(ascii::trim_ows(if_modified_since));
  return since && modified <= *since;
}

StaticFiles::StaticFiles(const std::string& root) {
  char resolved[PATH_MAX];
  if (!root.empty() && realpath(root.c_str(), resolved)) root_ = resolved;
}

std::string_view StaticFiles::content_type_for(std::string_view path) {
  struct Entry {
    std::string_view ext, type;
  };
  static constexpr Entry kTypes[] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".jpg", "image/jpeg"},
      {".ico", "image/x-icon"},
      {".txt", "text/plain; charset=utf-8"},
      {".webmanifest", "application/manifest+json"},
      {".woff2", "font/woff2"},
  };
  for (const Entry& e : kTypes)
    if (path.ends_with(e.ext)) return e.type;
  return "application/octet-stream";
}

// The real path of `candidate` (symlinks followed), if it lies inside the root.
std::optional<std::string> StaticFiles::resolve_inside(const std::string& candidate) const {
  char resolved[PATH_MAX];
  if (!realpath(candidate.c_str(), resolved)) return std::nullopt;
  std::string real = resolved;
  if (real.size() <= root_.size() || real.compare(0, root_.size(), root_) != 0 ||
      real[root_.size()] != '/')
    return std::nullopt;
  return real;
}

std::optional<std::string> StaticFiles::locate(std::string_view raw_path,
                                               struct stat* found) const {
  if (root_.empty()) return std::nullopt;
  auto decoded = form::percent_decode(raw_path, false);
  if (!decoded || decoded->empty() || decoded->front() != '/') return std::nullopt;
  const std::string& path = *decoded;
  if (path.find('\0') != std::string::npos || path.find('\\') != std::string::npos ||
      has_dot_dot_segment(path))
    return std::nullopt;
  std::string candidate = root_ + path;
  if (candidate.back() == '/') candidate += "index.html";
  auto real = resolve_inside(candidate);
  struct stat st;
  if (real && stat(real->c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    real = resolve_inside(*real + "/index.html");
  if (!real || stat(real->c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  if (found) *found = st;
  return real;
}

bool StaticFiles::exists(std::string_view raw_path) const {
  return locate(raw_path).has_value();
}

std::optional<StaticFile> StaticFiles::load(std::string_view raw_path) {
  struct stat now;
  auto real = locate(raw_path, &now);
  if (!real) return std::nullopt;
  std::string_view type = content_type_for(*real);
  auto hit = cache_.find(*real);
  if (hit != cache_.end()) {
    const Cached& c = hit->second;
    if (c.dev == now.st_dev && c.ino == now.st_ino && c.size == now.st_size &&
        c.mtime.tv_sec == now.st_mtim.tv_sec && c.mtime.tv_nsec == now.st_mtim.tv_nsec)
      return StaticFile{c.body, type, true, entity_tag(c.ino, c.size, c.mtime), c.mtime.tv_sec};
  }
  if (hit != cache_.end()) {  // changed: answers under way keep the old copy until they are sent
    cached_bytes_ -= hit->second.body->size();
    cache_.erase(hit);
  }
  struct stat st;
  auto bytes = read_regular_file(*real, st);
  if (!bytes) return std::nullopt;
  FrameRef body(*bytes);
  // Never evicted for another file: a copy evicted while answers still hold it would be shared
  // no more, and each new read one more copy.
  bool fits = cached_bytes_ + bytes->size() <= kMaxCachedBytes;
  if (fits) {
    cache_[*real] = {body, st.st_dev, st.st_ino, st.st_size, st.st_mtim};
    cached_bytes_ += bytes->size();
  }
  return StaticFile{std::move(body), type, fits, entity_tag(st.st_ino, st.st_size, st.st_mtim),
                    st.st_mtim.tv_sec};
}

}  // namespace sse
