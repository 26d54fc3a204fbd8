// Serves files below one directory and nothing outside it: the decoded path may not contain "..",
// NUL or backslashes, and the resolved real path (symlinks followed) must stay inside the root.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sse {

struct StaticFile {
  std::string body;
  std::string_view content_type;
};

class StaticFiles {
 public:
  // `root` must exist; an empty root serves nothing.
  explicit StaticFiles(const std::string& root);
  const std::string& root() const { return root_; }

  // `raw_path` is the request path as sent ("/", "/app.js", "/%2e%2e/x").
  std::optional<StaticFile> load(std::string_view raw_path) const;
  // Whether load() would find a file, without reading it.
  bool exists(std::string_view raw_path) const;

  static std::string_view content_type_for(std::string_view path);

 private:
  std::optional<std::string> resolve_inside(const std::string& candidate) const;
  // The real path of the regular file `raw_path` names inside the root.
  std::optional<std::string> locate(std::string_view raw_path) const;
  std::string root_;  // real path, no trailing slash
};

}  // namespace sse
