// Serves files below one directory and nothing outside it: the decoded path may not contain "..",
// NUL, backslashes or a segment starting with '.', and the kernel opens it beneath the root
// (openat2 RESOLVE_BENEATH), so no symlink, however it is swapped in meanwhile, leads out.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>

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
  // Why there is no file to send.
  enum class Miss {
    NotFound,
    Directory,  // a directory named without its trailing slash: redirect there
    TooLarge,   // over kMaxFileBytes
    NoRoom,     // the cache is full of files still in use and a copy would be over max_copy_bytes
    Busy,       // out of file descriptors or memory for now
  };
  using Lookup = std::variant<StaticFile, Miss>;

  // `root` must exist; an empty root serves nothing. A file the cache cannot keep is a copy per
  // answer, which the connection counts against `max_copy_bytes` (--max-queued-bytes).
  StaticFiles(const std::string& root, size_t max_copy_bytes);
  ~StaticFiles();
  StaticFiles(const StaticFiles&) = delete;
  StaticFiles& operator=(const StaticFiles&) = delete;

  // `raw_path` is the request path as sent ("/", "/app.js", "/%2e%2e/x"). A file is read once and
  // kept while it stays the same (inode, size, mtime), so answers share one copy however many
  // clients fetch it at once, whatever path names it; files are kept while they fit in
  // kMaxCachedBytes, room being made from copies no answer holds, least recently used first.
  Lookup load(std::string_view raw_path);
  // Read on the loop, so bounded: a larger file is refused rather than stalling every client.
  static constexpr uint64_t kMaxFileBytes = 64ull << 20;
  static constexpr uint64_t kMaxCachedBytes = kMaxFileBytes + 128;  // the largest, with its entry
  // Whether load() would find something there, without reading it.
  bool exists(std::string_view raw_path);

  static std::string_view content_type_for(std::string_view path);

 private:
  struct Opened {
    int fd = -1;
    std::string path;  // relative to the root, as opened
    struct stat st {};
  };
  struct FileId {
    dev_t dev;
    ino_t ino;
    bool operator==(const FileId&) const = default;
  };
  struct FileIdHash {
    size_t operator()(const FileId& f) const {
      return std::hash<uint64_t>()(f.ino ^ (f.dev << 32));
    }
  };
  struct Version {
    off_t size;
    struct timespec mtime, ctime;
    bool operator==(const Version& o) const;
  };
  static Version version_of(const struct stat& st);
  static std::string entity_tag(ino_t ino, const Version& v);
  struct Cached {
    FrameRef body;
    Version version;
    uint64_t last_used;
  };
  static constexpr uint64_t kEntryBytes = kMaxCachedBytes - kMaxFileBytes;  // besides its copy

  void open_root();
  void follow_root();
  // Opens the regular file (or a directory's index.html) `raw_path` names beneath the root.
  std::variant<Opened, Miss> open_beneath(std::string_view raw_path);
  int open_relative(const std::string& path, uint64_t flags) const;
  void forget(std::unordered_map<FileId, Cached, FileIdHash>::iterator it);
  // True when `bytes` more fit in the cache, once copies no answer holds made room if need be.
  bool make_room(uint64_t bytes);

  std::string root_;
  int root_fd_ = -1;
  struct stat root_st_ {};
  time_t root_checked_ = 0;
  size_t max_copy_bytes_;
  std::unordered_map<FileId, Cached, FileIdHash> cache_;  // by the file itself
  uint64_t cached_bytes_ = 0;
  uint64_t uses_ = 0;
};

}  // namespace sse
