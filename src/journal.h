// The durable message log: an append-only file of checksummed records under --data-dir. Each
// message is written (to the kernel) before it is acknowledged; fsync runs on a background thread,
// as redis's background fsync does, so the event loop never waits for the disk.
//
//   record := magic u32 | body_len u32 | crc32(body) u32 | body
//   body   := id u64 | nonce_len u16 | nonce_key | room_len u8 | room | json   (magic "SSE3")
//   body   := id u64 | nonce_len u16 | nonce_key | json   (magic "SSE2", read, never written)
//   body   := id u64 | nonce_len u8  | nonce_key | json   (magic "SSEC", read, never written)
//   body   := high_water u64 | through u64 | room_len u8 | room          (magic "SSEF", a floor)
// (little endian). Records from before rooms belong to "general"; their JSON gains the room.
// A floor record says what the file no longer holds, where messages are dropped from it: no id
// up to `high_water` is ever issued again, and `room` lost its messages up to `through`
// (compaction writes one per room that dropped some before the messages; forgetting a room
// appends one), so a restart still sends `reset` to a stream that missed them. Without a room,
// `through` holds for every room the records do not say otherwise of (compaction's first record:
// the hub's floor for rooms it no longer knows).
//
// Start-up reads every record; a torn or corrupt tail is cut off, damage in the middle is skipped
// to the next valid record and leaves a floor without a room in its place (its messages' rooms
// are unknown); either way the file is rewritten clean and a warning says what was lost.
// A compaction replaces the file with a given window of records on a background thread while
// appends go on (start_compaction()); recovery after a failure is one too.
//
// Errors are reported, never swallowed: a failed write or a deleted file fails append(); a failed
// fdatasync stops the durable sequence from advancing and is kept in SyncState::error until
// recovered().
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "config.h"
#include "frame.h"

namespace sse {

struct JournalRecord {
  uint64_t id;            // a floor: its high water
  std::string nonce_key;  // at most kMaxNonceKeyBytes
  std::string room;       // a valid room name (at most 64 bytes); a floor: may be empty
  std::string json;
  bool floor = false;
  uint64_t through = 0;  // a floor: the room's (no room: every room's) messages up to it are gone
};

inline JournalRecord floor_record(uint64_t high_water, std::string room, uint64_t through) {
  return {high_water, {}, std::move(room), {}, true, through};
}

inline constexpr size_t kMaxNonceKeyBytes = 65535;

// What a compaction writes: the floors, then the messages, whose JSON stays in the frames they
// were sent as. The loop keeps the frames (their counts are not atomic); the compaction's thread
// only reads their bytes.
struct CompactionWindow {
  struct Message {
    uint64_t id;
    std::string nonce_key;
    std::string room;
    std::string_view json;  // in one of `frames`
  };
  std::vector<JournalRecord> floors;
  std::vector<Message> messages;
  std::vector<FrameRef> frames;
};

struct JournalLoad {
  size_t records = 0;
  uint64_t last_id = 0;
  std::vector<std::string> warnings;  // what was damaged and lost, for the log
};

// Encodes one record (exposed for tests and the fuzzer).
std::string encode_record(const JournalRecord& r);
std::string encode_message(uint64_t id, std::string_view nonce_key, std::string_view room,
                           std::string_view json);
// `records` one after the other; `starts`, when given, gets where each starts, counted from
// `offset`.
std::string encode_records(std::span<const JournalRecord> records, uint64_t offset,
                           std::vector<uint64_t>* starts);
// The older formats (before rooms; v1 with a one-byte nonce length), still read after an
// upgrade; for tests.
std::string encode_record_v1(const JournalRecord& r);
std::string encode_record_v2(const JournalRecord& r);
// Decodes every valid record of `bytes` in order; `warnings` says what was skipped or cut. Bytes
// skipped in the middle become a floor without a room through the newest id they can have held.
std::vector<JournalRecord> decode_records(std::string_view bytes,
                                          std::vector<std::string>& warnings, bool& damaged);
// The same, one record at a time: `visit` gets each record and the bytes it was read from (empty
// for a floor standing for damaged bytes).
using RecordVisitor = std::function<void(JournalRecord&&, std::string_view encoded)>;
void decode_records(std::string_view bytes, std::vector<std::string>& warnings, bool& damaged,
                    const RecordVisitor& visit);

// The system calls the journal makes, replaceable so tests can inject disk failures.
// datasync() runs on the syncer thread, and open(), write() and datasync() on a compaction's
// thread: an override must be thread-safe.
class JournalIo {
 public:
  virtual ~JournalIo() = default;
  virtual int open(const char* path, int flags, mode_t mode);
  virtual ssize_t write(int fd, const void* data, size_t len);
  virtual int datasync(int fd);
  virtual int sync_dir(const std::string& dir);
  virtual int rename(const char* from, const char* to);
  static JournalIo& system();
};

class Journal {
 public:
  struct Options {
    std::string dir;
    FsyncPolicy policy = FsyncPolicy::EverySec;
    JournalIo* io = nullptr;  // nullptr: the real system calls
  };

  ~Journal();

  // Opens (creating) DIR/journal, feeding each stored record to `on_record`. nullptr + `error`
  // when the directory cannot be used or another process holds it.
  static std::unique_ptr<Journal> open(const Options& options,
                                       const std::function<void(JournalRecord&&)>& on_record,
                                       JournalLoad& load, std::string& error);

  // Writes one record. False + `error` if it could not be written to a file that is still linked
  // into the data directory (the message must then not be acknowledged). `seq` numbers the write
  // for SyncState::durable_seq; the record starts at size_bytes() as it was before the call.
  bool append(const JournalRecord& r, uint64_t& seq, std::string& error);
  // The same for several records in one write (one loop iteration's messages): one `seq` for all;
  // `starts`, when given, gets where each record starts in the file.
  bool append(std::span<const JournalRecord> records, uint64_t& seq, std::string& error,
              std::vector<uint64_t>* starts = nullptr);

  // Compaction without stalling the loop: a background thread writes `window` to a new file
  // and syncs it, while appends go on to the journal and are kept aside as well. Once notified
  // (notify_fd) and compaction_written(), finish_compaction() on the loop adds what was appended
  // meanwhile (in more rounds on the thread while that is over kLoopTailBytes), syncs it and
  // renames the new file over the journal. One at a time; a failure, truncate_to() or
  // prepare_recovery() abandons it. `starts_kept`: how many of the last records' new offsets to
  // report.
  static constexpr size_t kLoopTailBytes = 1 << 20;
  bool start_compaction(CompactionWindow window, size_t starts_kept, std::string& error);
  bool compacting() const { return compaction_ != nullptr; }
  bool compaction_written() const;
  struct CompactionEnd {
    bool finished = false;  // false: another round runs on the thread
    bool swapped = false;   // the new file is in use (also when syncing its directory failed)
    std::string error;      // empty: compacted
    // Where records are in the new file once swapped: the last `starts_kept` messages given, and
    // what was appended since, which starts at `origin` of the old file and `appended_at` of
    // the new one.
    std::vector<uint64_t> starts;
    uint64_t origin = 0;
    uint64_t appended_at = 0;
  };
  CompactionEnd finish_compaction(bool sync_now);
  void abandon_compaction();

  // Recovery after a failure, in three steps: prepare_recovery() recreates the data directory if
  // it is gone and takes the lock again if its file was removed (when another sse-chat held the
  // directory meanwhile, every record of the journal it leaves goes to `written_by_another`: it
  // may have acknowledged messages there); a compaction of everything memory keeps, finished with
  // `sync_now`, replaces the journal; recovered() then clears the sync error.
  bool prepare_recovery(const std::function<void(JournalRecord&&)>& written_by_another,
                        std::string& error);
  // Whether records of writes that failed (never acknowledged) may still be in the file: a cut
  // after the failure failed too.
  bool refused_left() const { return refused_left_; }
  void recovered();

  // Readable (eventfd) when the durable sequence advanced under --fsync always, a sync failed, or
  // a compaction round ended.
  int notify_fd() const { return notify_fd_; }
  void drain_notifications();
  struct SyncState {
    uint64_t durable_seq;              // writes on disk (always), or written to the kernel
    std::optional<std::string> error;  // why the last background sync failed, until recovered()
  };
  SyncState sync_state();

  // Why the file can no longer be trusted (removed, moved or replaced), or nullopt.
  std::optional<std::string> check_file();
  // Takes the lock again if its file was removed (a "stale lock" cleared by hand); why it cannot
  // (another sse-chat took it meanwhile), or nullopt.
  std::optional<std::string> check_lock();
  // Whether something else cut the file in place (`: > journal`, logrotate's copytruncate): the
  // path and inode are the same, only the records are gone.
  std::optional<std::string> check_size();
  // Cuts the file back to `size` bytes (records that were refused after a failure).
  bool truncate_to(uint64_t size);

  uint64_t size_bytes() const { return size_; }
  FsyncPolicy policy() const { return policy_; }

 private:
  explicit Journal(const Options& options);
  bool take_lock(std::string& error);
  std::optional<std::string> check_linked(int fd);
  void remember_file();
  bool swap_in(const std::string& tmp, int fd, uint64_t size, std::string& error);
  struct Compaction;
  void run_compaction_round(Compaction& c);
  bool write_window(Compaction& c);
  bool launch_round(Compaction& c, std::string& error);
  bool install(const std::string& tmp, int fd, uint64_t size, bool sync_now, std::string& error);
  // Replaces the file with `parts`, one after the other (a damaged journal's good runs at start):
  // a new file, synced, renamed over the old one; `written` hears of each part once it is in the
  // new file.
  bool write_file(std::span<const std::string_view> parts, bool sync_now, std::string& error,
                  const std::function<void(std::string_view)>& written = nullptr);
  void notify();
  void sync_loop();

  std::string dir_;
  std::string path_;
  FsyncPolicy policy_;
  JournalIo& io_;
  int fd_ = -1;
  // fd_'s file (device and inode, 0 and 0: unknown): an open file keeps its inode, so one stat
  // of the path tells whether the path still leads to it.
  dev_t file_dev_ = 0;
  ino_t file_ino_ = 0;
  int lock_fd_ = -1;
  bool lock_lost_ = false;         // another process held the lock since we last read the file
  bool parent_sync_owed_ = false;  // the data directory was made again; its parent not synced yet
  bool refused_left_ = false;      // records refused after a failure may still be in the file
  int notify_fd_ = -1;             // eventfd
  uint64_t size_ = 0;

  std::mutex mu_;  // guards fd_ swaps against the syncer, and the fields below
  std::condition_variable cv_;
  uint64_t appended_seq_ = 0;
  uint64_t requested_seq_ = 0;
  uint64_t synced_seq_ = 0;
  uint64_t renames_ = 0;         // renames over the journal so far
  uint64_t renames_synced_ = 0;  // of those, made durable by a directory sync
  std::string sync_error_;       // empty while syncs succeed
  bool stopping_ = false;
  std::thread syncer_;
  std::unique_ptr<Compaction> compaction_;  // the one under way, owned by the loop
};

}  // namespace sse
