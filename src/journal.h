// The durable message log: an append-only file of checksummed records under --data-dir. Each
// message is written (to the kernel) before its 201 is sent; fsync runs on a background thread,
// as redis's background fsync does, so the event loop never waits for the disk.
//
//   record := magic u32 | body_len u32 | crc32(body) u32 | body
//   body   := id u64 | nonce_len u8 | nonce_key | json          (little endian)
//
// Start-up reads every record; a torn or corrupt tail is cut off, damage in the middle is skipped
// to the next valid record; either way the file is rewritten clean and a warning says what was
// lost. When the file outgrows --journal-max-bytes it is rewritten with the history window only.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "config.h"

namespace sse {

struct JournalRecord {
  uint64_t id;
  std::string nonce_key;
  std::string json;
};

struct JournalLoad {
  size_t records = 0;
  uint64_t last_id = 0;
  std::vector<std::string> warnings;  // what was damaged and lost, for the log
};

// Encodes one record (exposed for tests and the fuzzer).
std::string encode_record(const JournalRecord& r);
// Decodes every valid record of `bytes` in order; `warnings` says what was skipped or cut.
// Returns the byte length of the clean prefix that ends at the last valid record.
std::vector<JournalRecord> decode_records(std::string_view bytes,
                                          std::vector<std::string>& warnings, bool& damaged);

class Journal {
 public:
  ~Journal();

  // Opens (creating) DIR/journal, feeding each stored record to `on_record`. nullptr + `error`
  // when the directory cannot be used or another process holds it.
  static std::unique_ptr<Journal> open(const std::string& dir, FsyncPolicy policy,
                                       uint64_t max_bytes,
                                       const std::function<void(JournalRecord&&)>& on_record,
                                       JournalLoad& load, std::string& error);

  // Writes one record; false if the write failed (the message must then not be acknowledged).
  // Returns its sequence number in `seq` for durable_seq().
  bool append(const JournalRecord& r, uint64_t& seq);

  // Rewrites the file with `records` only (the history window), when it has grown past the limit.
  bool compact_if_needed(const std::function<std::vector<JournalRecord>()>& window);

  // --fsync always: readable when durable_seq() advanced. -1 otherwise.
  int durable_fd() const { return durable_fd_; }
  uint64_t durable_seq();
  uint64_t size_bytes() const { return size_; }
  FsyncPolicy policy() const { return policy_; }

 private:
  Journal(std::string dir, FsyncPolicy policy, uint64_t max_bytes);
  bool rewrite(const std::vector<JournalRecord>& records, bool sync_now, std::string& error);
  void sync_loop();

  std::string dir_;
  std::string path_;
  FsyncPolicy policy_;
  uint64_t max_bytes_;
  uint64_t compact_at_;
  int fd_ = -1;
  int lock_fd_ = -1;
  int durable_fd_ = -1;  // eventfd
  uint64_t size_ = 0;

  std::mutex mu_;  // guards fd_ swaps against the syncer, and the fields below
  std::condition_variable cv_;
  uint64_t appended_seq_ = 0;
  uint64_t requested_seq_ = 0;
  uint64_t synced_seq_ = 0;
  bool stopping_ = false;
  std::thread syncer_;
};

}  // namespace sse
