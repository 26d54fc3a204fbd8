// Serves files below one directory and nothing outside it: the decoded path may not contain "..",
// NUL or backslashes, and the resolved real path (symlinks followed) must stay inside the root.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "frame.h"

namespace sse {

struct StaticFile {
  FrameRef body;
  std::string_view content_type;
  bool shared;       // kept in the cache: every answer sends this one copy
  std::string etag;  // "inode-size-mtime", quoted: changes whenever the file may have
  time_t modified;   // its mtime, for Last-Modified

  // RFC 9110 13.1.2, 13.1.3: whether a GET with these validators may be answered 304. A client's
  // If-None-Match decides when it sends one; If-Modified-Since counts only without it.
  bool not_modified(std::string_view if_none_match, std::string_view if_modified_since) const;
};

class StaticFiles {
 public:
  // `root` must exist; an empty root serves nothing.
  explicit StaticFiles(const std::string& root);
  const std::string& root() const { return root_; }

  // `raw_path` is the request path as sent ("/", "/app.js", "/%2e%2e/x"). A file is read once and
  // kept while it stays the same (inode, size, mtime), so answers share one copy however many
  // clients fetch it at once; files are kept while they fit in kMaxCachedBytes (the rest are read
  // for each request, a copy each).
  std::optional<StaticFile> load(std::string_view raw_path);
  static constexpr uint64_t kMaxCachedBytes = 64ull << 20;
  // Whether load() would find a file, without reading it.
  bool exists(std::string_view raw_path) const;

  static std::string_view content_type_for(std::string_view path);

 private:
  std::optional<std::string> resolve_inside(const std::string& candidate) const;
  // The real path of the regular file `raw_path` names inside the root; `found`, when given, gets
  // its stat.
  std::optional<std::string> locate(std::string_view raw_path, struct stat* found = nullptr) const;
  std::string root_;  // real path, no trailing slash
  struct Cached {
    FrameRef body;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
  };
  std::unordered_map<std::string, Cached> cache_;  // by real path
  uint64_t cached_bytes_ = 0;
};

}  // namespace sse
