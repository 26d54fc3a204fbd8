#include "static_files.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "ascii.h"
#include "form.h"
#include "log.h"

namespace sse {
namespace {

// No "." or ".." segment, and no hidden names (".env", ".git/"): what a directory keeps beside
// its pages is not for the web.
// (/.well-known/ aside: RFC 8615's place for what a site says about itself, security.txt or an
// ACME challenge).
bool has_dot_segment(std::string_view path) {
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    bool well_known = start == 1 && path.substr(start, end - start) == ".well-known";
    if (end > start && path[start] == '.' && !well_known) return true;
    start = end + 1;
  }
  return false;
}

// Up to `size` bytes of the file (fewer when it was cut meanwhile).
std::string read_all(int fd, size_t size) {
  std::string body(size, '\0');
  size_t got = 0;
  while (got < size) {
    ssize_t n = read(fd, body.data() + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  body.resize(got);
  return body;
}

bool operator==(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

bool ends_with_icase(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() &&
         ascii::iequals(text.substr(text.size() - suffix.size()), suffix);
}

}  // namespace

StaticFiles::Version StaticFiles::version_of(const struct stat& st) {
  return {st.st_size, st.st_mtim, st.st_ctim};
}

// ctime too: a freed inode given to a new file of the same size and mtime (cp -p, rsync -a, a
// reproducible build) is another file, and its ctime says so.
bool StaticFiles::Version::operator==(const Version& o) const {
  return size == o.size && mtime == o.mtime && ctime == o.ctime;
}

std::string StaticFiles::entity_tag(ino_t ino, const Version& v) {
  char tag[128];
  std::snprintf(
      tag, sizeof tag, "\"%llx-%llx-%llx.%lx-%llx.%lx\"", static_cast<unsigned long long>(ino),
      static_cast<unsigned long long>(v.size), static_cast<unsigned long long>(v.mtime.tv_sec),
      static_cast<unsigned long>(v.mtime.tv_nsec), static_cast<unsigned long long>(v.ctime.tv_sec),
      static_cast<unsigned long>(v.ctime.tv_nsec));
  return tag;
}

namespace {

// An HTTP-date in any of its three forms (RFC 9110 5.6.7: a recipient reads all of them), the
// IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", the RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT" and
// asctime's "Sun Nov  6 08:49:37 1994"; nullopt for anything else, which RFC 9110 13.1.3 says
// to ignore.
std::optional<time_t> http_date(std::string_view text) {
  std::string copy(text);
  for (const char* form :
       {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"}) {
    struct tm utc {};
    const char* end = strptime(copy.c_str(), form, &utc);
    if (end && *end == '\0') return timegm(&utc);
  }
  return std::nullopt;
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
  // A date in the future is no valid one (RFC 9110 13.1.3).
  auto since = http_date(ascii::trim_ows(if_modified_since));
  return since && *since <= std::time(nullptr) && modified <= *since;
}

StaticFiles::StaticFiles(const std::string& root, size_t max_copy_bytes)
    : root_(root), max_copy_bytes_(max_copy_bytes) {
  if (root_.empty()) return;
  open_root();
  if (root_fd_ < 0) {
    log::warn("no static directory: pages are 404 until it exists", "dir", root_);
    return;
  }
  int probe = open_relative(".", O_PATH);
  if (probe < 0)
    log::error("static files cannot be served: openat2 failed", "dir", root_, "error",
               std::strerror(errno));
  else
    close(probe);
}

void StaticFiles::open_root() {
  int fd = open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  if (root_fd_ >= 0) close(root_fd_);
  root_fd_ = fd;
  fstat(root_fd_, &root_st_);
}

// A deploy that renames a new directory into place is followed, at most a second later.
void StaticFiles::follow_root() {
  time_t now = std::time(nullptr);
  if (root_.empty() || now == root_checked_) return;
  root_checked_ = now;
  struct stat st;
  if (stat(root_.c_str(), &st) == 0 &&
      (root_fd_ < 0 || st.st_dev != root_st_.st_dev || st.st_ino != root_st_.st_ino))
    open_root();
}

StaticFiles::~StaticFiles() {
  if (root_fd_ >= 0) close(root_fd_);
}

std::string_view StaticFiles::content_type_for(std::string_view path) {
  struct Entry {
    std::string_view ext, type;
  };
  static constexpr Entry kTypes[] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".map", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},
      {".gif", "image/gif"},
      {".webp", "image/webp"},
      {".avif", "image/avif"},
      {".ico", "image/x-icon"},
      {".txt", "text/plain; charset=utf-8"},
      {".xml", "application/xml"},
      {".pdf", "application/pdf"},
      {".wasm", "application/wasm"},
      {".webmanifest", "application/manifest+json"},
      {".woff2", "font/woff2"},
      {".woff", "font/woff"},
      {".ttf", "font/ttf"},
      {".otf", "font/otf"},
      {".mp3", "audio/mpeg"},
      {".ogg", "audio/ogg"},
      {".mp4", "video/mp4"},
      {".webm", "video/webm"},
  };
  for (const Entry& e : kTypes)
    if (ends_with_icase(path, e.ext)) return e.type;
  return "application/octet-stream";
}

// The kernel resolves the path beneath the root in one step: a symlink that leads out (absolute,
// or with enough ".."), or a directory swapped for one while the request is served, fails.
int StaticFiles::open_relative(const std::string& path, uint64_t flags) const {
  struct open_how how {};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(syscall(SYS_openat2, root_fd_, path.c_str(), &how, sizeof how));
}

std::variant<StaticFiles::Opened, StaticFiles::Miss> StaticFiles::open_beneath(
    std::string_view raw_path) {
  follow_root();
  if (root_fd_ < 0) return Miss::NotFound;
  auto decoded = form::percent_decode(raw_path, false);
  if (!decoded || decoded->empty() || decoded->front() != '/') return Miss::NotFound;
  if (decoded->find('\0') != std::string::npos || decoded->find('\\') != std::string::npos ||
      has_dot_segment(*decoded))
    return Miss::NotFound;
  Opened o;
  o.path = decoded->substr(1);  // relative to the root ("//etc" stays absolute, and fails)
  bool names_directory = o.path.empty() || o.path.back() == '/';
  if (names_directory) o.path += "index.html";
  // Non-blocking, so that a FIFO put there cannot hold the loop; no controlling terminal.
  o.fd = open_relative(o.path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
  if (o.fd < 0)
    return errno == EMFILE || errno == ENFILE || errno == ENOMEM ? Miss::Busy : Miss::NotFound;
  if (fstat(o.fd, &o.st) == 0 && S_ISREG(o.st.st_mode)) return o;
  bool directory = S_ISDIR(o.st.st_mode) && !names_directory;
  close(o.fd);
  return directory ? Miss::Directory : Miss::NotFound;
}

bool StaticFiles::exists(std::string_view raw_path) {
  auto opened = open_beneath(raw_path);
  if (auto* o = std::get_if<Opened>(&opened)) close(o->fd);
  return !std::holds_alternative<Miss>(opened) || std::get<Miss>(opened) != Miss::NotFound;
}

StaticFiles::Lookup StaticFiles::load(std::string_view raw_path) {
  auto opened = open_beneath(raw_path);
  if (auto* miss = std::get_if<Miss>(&opened)) return *miss;
  Opened& o = std::get<Opened>(opened);
  std::string_view type = content_type_for(o.path);
  FileId id{o.st.st_dev, o.st.st_ino};
  Version version = version_of(o.st);
  auto hit = cache_.find(id);
  if (hit != cache_.end() && hit->second.version == version) {
    close(o.fd);
    Cached& c = hit->second;
    c.last_used = ++uses_;
    return StaticFile{c.body, type, true, entity_tag(id.ino, version), version.mtime.tv_sec};
  }
  if (hit != cache_.end()) forget(hit);  // changed: answers under way keep the old copy
  uint64_t size = static_cast<uint64_t>(o.st.st_size);
  bool fits = size <= kMaxFileBytes && make_room(size);
  if (!fits && (size > kMaxFileBytes || size > max_copy_bytes_)) {
    close(o.fd);
    return size > kMaxFileBytes ? Miss::TooLarge : Miss::NoRoom;
  }
  FrameRef body(read_all(o.fd, size));
  close(o.fd);
  if (fits) {
    cache_[id] = {body, version, ++uses_};
    cached_bytes_ += body->size() + kEntryBytes;
  }
  return StaticFile{std::move(body), type, fits, entity_tag(id.ino, version), version.mtime.tv_sec};
}

void StaticFiles::forget(std::unordered_map<FileId, Cached, FileIdHash>::iterator it) {
  cached_bytes_ -= it->second.body->size() + kEntryBytes;
  cache_.erase(it);
}

// Room is made from copies no answer holds, least recently used first (files deleted or changed
// since are never used again, so they go first): a copy evicted while answers still hold it would
// be shared no more, and each new read one more copy.
bool StaticFiles::make_room(uint64_t bytes) {
  auto fits = [&] { return cached_bytes_ + bytes + kEntryBytes <= kMaxCachedBytes; };
  if (fits()) return true;
  std::vector<std::pair<uint64_t, FileId>> unused;
  uint64_t freeable = 0;
  for (const auto& [id, c] : cache_) {
    if (c.body->refs() != 1) continue;
    unused.emplace_back(c.last_used, id);
    freeable += c.body->size() + kEntryBytes;
  }
  // Nothing is let go unless that makes the room: else the copies stay, for the next requests.
  if (cached_bytes_ - freeable + bytes + kEntryBytes > kMaxCachedBytes) return false;
  std::sort(unused.begin(), unused.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [used, id] : unused) {
    if (fits()) break;
    forget(cache_.find(id));
  }
  return fits();
}

}  // namespace sse
