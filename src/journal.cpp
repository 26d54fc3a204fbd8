#include "journal.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "room_name.h"
#include "sse.h"

namespace sse {
namespace {

constexpr uint32_t kMagicV1 = 0x43455353;     // "SSEC": one-byte nonce length
constexpr uint32_t kMagicV2 = 0x32455353;     // "SSE2": two-byte nonce length
constexpr uint32_t kMagic = 0x33455353;       // "SSE3": two-byte nonce length, room
constexpr uint32_t kMagicFloor = 0x46455353;  // "SSEF": what the file no longer holds
constexpr size_t kHeader = 12;
constexpr size_t kMinRecordBytes = kHeader + 8;  // every record has its header and an id
constexpr size_t kMaxBody = 1 << 20;

void put_u16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v & 0xFF));
  out.push_back(static_cast<char>(v >> 8));
}
void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint32_t checksum(std::string_view body) {
  return static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size())));
}

std::string frame_record(uint32_t magic, const std::string& body) {
  std::string out;
  out.reserve(kHeader + body.size());
  put_u32(out, magic);
  put_u32(out, static_cast<uint32_t>(body.size()));
  put_u32(out, checksum(body));
  out += body;
  return out;
}

// Reads the room and JSON of an "SSE3" body from `pos`; records without a room are "general".
bool read_room_and_json(uint32_t magic, std::string_view body, size_t pos, JournalRecord& out) {
  if (magic != kMagic) {
    out.room = kDefaultRoom;
    out.json = json_with_room(body.substr(pos), kDefaultRoom);
    return true;
  }
  if (pos >= body.size()) return false;
  size_t room_len = static_cast<unsigned char>(body[pos]);
  if (pos + 1 + room_len > body.size() || room_name_error(body.substr(pos + 1, room_len)))
    return false;
  out.room.assign(body.substr(pos + 1, room_len));
  out.json.assign(body.substr(pos + 1 + room_len));
  return true;
}

bool read_floor(std::string_view body, JournalRecord& out) {
  if (body.size() < 17) return false;
  size_t room_len = static_cast<unsigned char>(body[16]);
  std::string_view room = body.substr(17);
  if (room.size() != room_len || (!room.empty() && room_name_error(room))) return false;
  out = floor_record(get_le(body.data(), 8), std::string(room), get_le(body.data() + 8, 8));
  return true;
}

// The record at `pos`, if one starts there, is whole, and its checksum holds.
bool record_at(std::string_view bytes, size_t pos, uint64_t min_id, JournalRecord& out,
               size_t& length) {
  if (bytes.size() - pos < kHeader) return false;
  uint32_t magic = static_cast<uint32_t>(get_le(bytes.data() + pos, 4));
  if (magic == kMagicFloor) {
    size_t body_len = get_le(bytes.data() + pos + 4, 4);
    if (body_len > kMaxBody || bytes.size() - pos - kHeader < body_len) return false;
    std::string_view body = bytes.substr(pos + kHeader, body_len);
    if (checksum(body) != get_le(bytes.data() + pos + 8, 4) || !read_floor(body, out)) return false;
    length = kHeader + body_len;
    return true;
  }
  if (magic != kMagic && magic != kMagicV2 && magic != kMagicV1) return false;
  size_t len_bytes = magic == kMagicV1 ? 1 : 2;
  size_t min_body = 8 + len_bytes;
  size_t body_len = get_le(bytes.data() + pos + 4, 4);
  if (body_len < min_body || body_len > kMaxBody || bytes.size() - pos - kHeader < body_len)
    return false;
  std::string_view body = bytes.substr(pos + kHeader, body_len);
  if (checksum(body) != get_le(bytes.data() + pos + 8, 4)) return false;
  uint64_t id = get_le(body.data(), 8);
  size_t nonce_len = get_le(body.data() + 8, static_cast<int>(len_bytes));
  if (id < min_id || min_body + nonce_len > body_len) return false;
  out.id = id;
  out.nonce_key.assign(body.substr(min_body, nonce_len));
  // "SSEC" writers cut longer keys to 255 bytes: such a key may stand for many nonces, and a
  // new message taken for a retry of another would be lost, so it is not remembered.
  if (magic == kMagicV1 && nonce_len == 255) out.nonce_key.clear();
  if (!read_room_and_json(magic, body, min_body + nonce_len, out)) return false;
  length = kHeader + body_len;
  return true;
}

// Skipped bytes followed by the record `next`: the newest id they can have held. Below the next
// message's id; a floor's high water was the highest id issued when it was written, so nothing
// before it was newer. Which rooms they held is unknown, so this is a floor for every room: a
// stream resuming from before it hears `reset` instead of missing them silently.
uint64_t hole_floor(const JournalRecord& next) {
  return next.floor ? next.id : next.id - 1;
}

bool write_all(JournalIo& io, int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = io.write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Creates `dir` and its missing parents; `created` tells whether `dir` itself is new.
bool mkdir_p(const std::string& dir, bool& created) {
  std::string partial;
  created = false;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || (dir[i] == '/' && i > 0)) {
      partial = dir.substr(0, i);
      if (mkdir(partial.c_str(), 0750) == 0) {
        created = i == dir.size();
      } else if (errno != EEXIST) {
        return false;
      }
    }
  }
  return true;
}

// Whether `path` leads to the file `ino` on device `dev`.
bool path_leads_to(const std::string& path, dev_t dev, ino_t ino) {
  struct stat at_path;
  return stat(path.c_str(), &at_path) == 0 && at_path.st_ino == ino && at_path.st_dev == dev;
}

// Whether `path` still names the open file `file` (not removed, moved or replaced).
bool path_names(const std::string& path, const struct stat& file) {
  return file.st_nlink > 0 && path_leads_to(path, file.st_dev, file.st_ino);
}

constexpr const char* kJournalMovedAway =
    "the journal file was removed or moved from the data directory";

// Why the journal's path no longer names the file in use, from the errno of the failed lookup
// (0 when the lookup found another file or none).
std::string not_named_reason(int lookup_errno) {
  if (lookup_errno == 0 || lookup_errno == ENOENT || lookup_errno == ENOTDIR)
    return kJournalMovedAway;
  return "cannot look up the journal file in the data directory: " +
         std::system_category().message(lookup_errno);
}

std::string parent_of(const std::string& dir) {
  size_t slash = dir.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : dir.substr(0, slash);
}

// errno as text, safe from any thread (the syncer reports errors too). Runtime reasons name no
// paths: they reach clients in 503 answers; the log line carries the data directory.
std::string errno_text(const std::string& what) {
  return what + ": " + std::system_category().message(errno);
}

// The journal read-only in memory, its pages let go behind the reader: start-up holds a megabyte
// of the file at a time, not the whole file beside the messages made of it.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno != ENOENT) error_ = errno_text("cannot open journal " + path);
      return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
      error_ = errno_text("cannot stat journal " + path);
    } else if (st.st_size > 0) {
      size_ = static_cast<size_t>(st.st_size);
      void* p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p != MAP_FAILED) {
        base_ = static_cast<const char*>(p);
        mapped_ = true;
        madvise(p, size_, MADV_SEQUENTIAL);
      } else {
        read_whole(fd, path);  // e.g. an address-space limit: all of it in memory, as before
      }
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (mapped_) munmap(const_cast<char*>(base_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Why the file could not be read ("" when it could, or does not exist).
  const std::string& error() const { return error_; }
  std::string_view bytes() const { return {base_, size_}; }
  // Pages wholly before `p` leave the process (read again from the page cache if touched), a
  // megabyte at a time.
  void release_before(const char* p) {
    size_t upto = static_cast<size_t>(p - base_) / kReleaseStep * kReleaseStep;
    if (upto <= released_) return;
    release({base_ + released_, upto - released_});
    released_ = upto;
  }
  // The pages wholly inside `range`, a part of bytes() (nothing for a copy in memory: that would
  // zero it).
  void release(std::string_view range) {
    if (!mapped_) return;
    uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    uintptr_t begin = (reinterpret_cast<uintptr_t>(range.data()) + page - 1) / page * page;
    uintptr_t end = (reinterpret_cast<uintptr_t>(range.data()) + range.size()) / page * page;
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }

 private:
  void read_whole(int fd, const std::string& path) {
    copy_.resize(size_);
    size_t got = 0;
    ssize_t n = 0;
    while (got < size_ && (n = ::read(fd, copy_.data() + got, size_ - got)) > 0)
      got += static_cast<size_t>(n);
    if (n < 0) error_ = errno_text("cannot read journal " + path);
    size_ = got;
    copy_.resize(got);
    base_ = copy_.data();
  }

  static constexpr size_t kReleaseStep = 1 << 20;
  const char* base_ = nullptr;
  size_t size_ = 0;
  size_t released_ = 0;
  bool mapped_ = false;
  std::string copy_;  // the file, when it could not be mapped
  std::string error_;
};

// What a damaged journal is rewritten as: the file's runs of good records, copied as they are,
// and the floors that stand for what was skipped, in file order.
class Salvage {
 public:
  void add(std::string_view file, const JournalRecord& r, std::string_view encoded) {
    if (encoded.empty()) {
      pieces_.push_back({0, 0, encode_record(r)});
      return;
    }
    size_t begin = static_cast<size_t>(encoded.data() - file.data());
    if (!pieces_.empty() && pieces_.back().floor.empty() && pieces_.back().end == begin)
      pieces_.back().end += encoded.size();
    else
      pieces_.push_back({begin, begin + encoded.size(), {}});
  }
  // The new file's bytes, in parts of at most a megabyte (views of `file`, or of the floors).
  std::vector<std::string_view> parts(std::string_view file) const {
    std::vector<std::string_view> out;
    for (const Piece& p : pieces_) {
      if (!p.floor.empty()) out.emplace_back(p.floor);
      for (size_t at = p.begin; at < p.end; at += kPart)
        out.push_back(file.substr(at, std::min(kPart, p.end - at)));
    }
    return out;
  }

 private:
  static constexpr size_t kPart = 1 << 20;
  struct Piece {
    size_t begin, end;  // of a run of good records
    std::string floor;  // or an encoded floor
  };
  std::vector<Piece> pieces_;
};

}  // namespace

int JournalIo::open(const char* path, int flags, mode_t mode) {
  return ::open(path, flags, mode);
}
ssize_t JournalIo::write(int fd, const void* data, size_t len) {
  return ::write(fd, data, len);
}
int JournalIo::datasync(int fd) {
  return ::fdatasync(fd);
}
int JournalIo::sync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = ::fsync(fd);
  int saved = errno;
  ::close(fd);
  errno = saved;
  return rc;
}
int JournalIo::rename(const char* from, const char* to) {
  return ::rename(from, to);
}
JournalIo& JournalIo::system() {
  static JournalIo io;
  return io;
}

std::string encode_record(const JournalRecord& r) {
  if (r.floor) {
    std::string body;
    put_u64(body, r.id);
    put_u64(body, r.through);
    body.push_back(static_cast<char>(r.room.size()));
    body += r.room;
    return frame_record(kMagicFloor, body);
  }
  return encode_message(r.id, r.nonce_key, r.room, r.json);
}

std::string encode_message(uint64_t id, std::string_view nonce_key, std::string_view room,
                           std::string_view json) {
  // The broker refuses longer keys; cutting one would make it match another message's.
  assert(nonce_key.size() <= kMaxNonceKeyBytes);
  assert(!room_name_error(room));
  std::string body;
  body.reserve(11 + nonce_key.size() + room.size() + json.size());
  put_u64(body, id);
  put_u16(body, static_cast<uint16_t>(nonce_key.size()));
  body += nonce_key;
  body.push_back(static_cast<char>(room.size()));
  body += room;
  body += json;
  return frame_record(kMagic, body);
}

std::string encode_records(std::span<const JournalRecord> records, uint64_t offset,
                           std::vector<uint64_t>* starts) {
  std::string bytes;
  if (starts) starts->clear();
  for (const JournalRecord& r : records) {
    if (starts) starts->push_back(offset + bytes.size());
    bytes += encode_record(r);
  }
  return bytes;
}

std::string encode_record_v2(const JournalRecord& r) {
  std::string body;
  put_u64(body, r.id);
  put_u16(body, static_cast<uint16_t>(r.nonce_key.size()));
  body += r.nonce_key;
  body += r.json;
  return frame_record(kMagicV2, body);
}

std::string encode_record_v1(const JournalRecord& r) {
  std::string body;
  put_u64(body, r.id);
  size_t nonce_len = std::min<size_t>(r.nonce_key.size(), 255);
  body.push_back(static_cast<char>(nonce_len));
  body.append(r.nonce_key, 0, nonce_len);
  body += r.json;
  return frame_record(kMagicV1, body);
}

std::vector<JournalRecord> decode_records(std::string_view bytes,
                                          std::vector<std::string>& warnings, bool& damaged) {
  std::vector<JournalRecord> records;
  decode_records(bytes, warnings, damaged,
                 [&](JournalRecord&& r, std::string_view) { records.push_back(std::move(r)); });
  return records;
}

void decode_records(std::string_view bytes, std::vector<std::string>& warnings, bool& damaged,
                    const RecordVisitor& visit) {
  damaged = false;
  size_t pos = 0;
  uint64_t last_id = 0;     // of the last message (floors are not in id order)
  uint64_t high_water = 0;  // the highest id any record says was issued
  while (pos < bytes.size()) {
    uint64_t min_id = last_id + 1;
    JournalRecord r;
    size_t len = 0;
    if (record_at(bytes, pos, min_id, r, len)) {
      if (!r.floor) last_id = r.id;
      high_water = std::max(high_water, r.id);
      visit(std::move(r), bytes.substr(pos, len));
      pos += len;
      continue;
    }
    damaged = true;
    size_t next = pos + 1;
    while (next < bytes.size() && !record_at(bytes, next, min_id, r, len)) ++next;
    std::string after = last_id == 0 ? "the start" : "id " + std::to_string(last_id);
    if (next >= bytes.size()) {
      // Whether a crash tore an unacknowledged write or something damaged acknowledged records
      // cannot be told apart, so the ids the cut bytes could have held (each record takes at
      // least kMinRecordBytes) are never given again, and every room resets a stream that
      // resumes from before them.
      uint64_t through = high_water + (bytes.size() - pos) / kMinRecordBytes + 1;
      warnings.push_back("journal tail torn or corrupt: cut " + std::to_string(bytes.size() - pos) +
                         " bytes after " + after + "; ids up to " + std::to_string(through) +
                         " are not given again");
      visit(floor_record(through, "", through), {});
      break;
    }
    uint64_t lost = r.floor ? 0 : r.id - min_id;
    warnings.push_back("journal damaged: skipped " + std::to_string(next - pos) + " bytes after " +
                       after + "; " + std::to_string(lost) + " message(s) lost before id " +
                       std::to_string(r.id));
    if (uint64_t through = hole_floor(r); through > 0)
      visit(floor_record(through, "", through), {});
    pos = next;
  }
}

// A compaction under way. While `state` is Running the thread reads `window` (whose frames only
// the loop retains and releases) and owns `round` and the file's writing; the loop owns the rest,
// and all of it once the thread is joined.
struct Journal::Compaction {
  enum State { Running, Written, Failed };
  std::string tmp;
  int fd = -1;
  CompactionWindow window;  // the first round's
  std::string round;        // a later round's: what was appended meanwhile
  size_t starts_kept = 0;
  std::vector<uint64_t> starts;  // of the last `starts_kept` records
  uint64_t size = 0;             // written to the new file
  uint64_t origin = 0;           // the journal's size when the compaction started
  uint64_t appended_at = 0;      // where that offset is in the new file
  std::string appended;          // appended to the journal, not handed to a round yet
  int rounds = 0;
  std::string error;
  std::atomic<int> state{Running};
  std::atomic<bool> cancel{false};
  std::thread thread;
};

Journal::Journal(const Options& options)
    : dir_(options.dir),
      path_(dir_ + "/journal"),
      policy_(options.policy),
      io_(options.io ? *options.io : JournalIo::system()) {}

Journal::~Journal() {
  abandon_compaction();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (syncer_.joinable()) syncer_.join();
  if (fd_ >= 0) ::close(fd_);
  if (notify_fd_ >= 0) ::close(notify_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

// One sse-chat per data directory: an flock on DIR/lock, taken again if that file was removed.
bool Journal::take_lock(std::string& error) {
  std::string path = dir_ + "/lock";
  struct stat held;
  if (lock_fd_ >= 0 && fstat(lock_fd_, &held) == 0 && path_names(path, held)) return true;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  // The lock we held was removed: another sse-chat may have held the directory since, even if it
  // has gone again, so what the journal holds now must be read before ours is written over it.
  if (lock_fd_ >= 0) lock_lost_ = true;
  if (fd < 0) {
    error = errno_text("cannot open the lock file in data dir " + dir_);
    return false;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    error = "data dir " + dir_ + " is in use by another sse-chat";
    return false;
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);
  lock_fd_ = fd;
  return true;
}

std::unique_ptr<Journal> Journal::open(const Options& options,
                                       const std::function<void(JournalRecord&&)>& on_record,
                                       JournalLoad& load, std::string& error) {
  std::unique_ptr<Journal> j(new Journal(options));
  bool created = false;
  if (!mkdir_p(j->dir_, created)) {
    error = errno_text("cannot create data dir " + j->dir_);
    return nullptr;
  }
  if (created) j->io_.sync_dir(parent_of(j->dir_));
  if (!j->take_lock(error)) return nullptr;
  // Compaction and recovery rename a new file over the journal's name: a symlink there would be
  // replaced by the first of them, its target left behind unchanged, for good.
  struct stat link;
  if (lstat(j->path_.c_str(), &link) == 0 && S_ISLNK(link.st_mode)) {
    error = "the journal " + j->path_ +
            " is a symbolic link, which its first rewrite would replace: point --data-dir at the "
            "directory it leads to instead";
    return nullptr;
  }
  // A rewrite a crash interrupted left its new file: a copy of the window, taking disk space.
  for (const char* leftover : {".tmp", ".compact"}) unlink((j->path_ + leftover).c_str());
  // Each record is handed on as it is read; a damaged file is rewritten afterwards from its good
  // bytes (before anything is served: a failure stops the start).
  MappedFile file(j->path_);
  if (!file.error().empty()) {  // never start from nothing over a journal that exists
    error = file.error();
    return nullptr;
  }
  Salvage salvage;
  bool damaged = false;
  decode_records(file.bytes(), load.warnings, damaged,
                 [&](JournalRecord&& r, std::string_view encoded) {
                   ++load.records;
                   load.last_id = std::max(load.last_id, r.id);
                   salvage.add(file.bytes(), r, encoded);
                   on_record(std::move(r));
                   if (!encoded.empty()) file.release_before(encoded.data());
                 });
  if (damaged && !j->write_file(salvage.parts(file.bytes()), true, error,
                                [&](std::string_view part) { file.release(part); }))
    return nullptr;
  if (j->fd_ < 0) {
    // A new file's name must reach the disk too before anything in it counts as durable.
    if (access(j->path_.c_str(), F_OK) != 0) ++j->renames_;
    j->fd_ = j->io_.open(j->path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (j->fd_ < 0) {
      error = errno_text("cannot open journal " + j->path_);
      return nullptr;
    }
    struct stat st;
    j->size_ = fstat(j->fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
    j->remember_file();
  }
  j->notify_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (j->notify_fd_ < 0) {
    error = errno_text("cannot create the journal's eventfd");
    return nullptr;
  }
  if (j->policy_ != FsyncPolicy::Never) {
    try {
      j->syncer_ = std::thread([raw = j.get()] { raw->sync_loop(); });
    } catch (const std::system_error& e) {
      error = std::string("cannot start the journal's syncer: ") + e.what();
      return nullptr;
    }
  }
  return j;
}

bool Journal::append(const JournalRecord& r, uint64_t& seq, std::string& error) {
  return append(std::span<const JournalRecord>(&r, 1), seq, error);
}

bool Journal::append(std::span<const JournalRecord> records, uint64_t& seq, std::string& error,
                     std::vector<uint64_t>* starts) {
  std::string bytes = encode_records(records, size_, starts);
  if (!write_all(io_, fd_, bytes)) {
    error = errno_text("journal write failed");
    // Never leave half a record behind for the next start to trip on (the loader would cut a
    // torn tail anyway, but whole refused records would stay).
    if (ftruncate(fd_, static_cast<off_t>(size_)) != 0) refused_left_ = true;
    return false;
  }
  uint64_t start = size_;
  size_ += bytes.size();
  if (auto removed = check_file()) {
    error = *removed;
    // Refused, so cut: a recovery that finds the path leading to this file again would take
    // records past the last acknowledged id for another server's, and keep them.
    truncate_to(start);
    return false;
  }
  if (compaction_) compaction_->appended += bytes;
  std::lock_guard<std::mutex> lock(mu_);
  seq = ++appended_seq_;
  if (policy_ == FsyncPolicy::Always) {
    requested_seq_ = seq;
    cv_.notify_one();
  }
  return true;
}

// A journal unlinked under us (the data directory removed) accepts writes that no restart will
// ever read: that is a storage failure, found by append(), the syncer and the tick.
// The same goes for a journal (or data directory) moved away: the path no longer leads to it.
std::optional<std::string> Journal::check_linked(int fd) {
  struct stat open_file;
  if (fstat(fd, &open_file) != 0) return errno_text("cannot stat the journal");
  errno = 0;
  if (!path_names(path_, open_file)) return not_named_reason(errno);
  return std::nullopt;
}

// check_linked(fd_) with one system call instead of two: the path against the file kept open.
std::optional<std::string> Journal::check_file() {
  if (file_ino_ == 0 && file_dev_ == 0) return check_linked(fd_);
  errno = 0;
  if (path_leads_to(path_, file_dev_, file_ino_)) return std::nullopt;
  return not_named_reason(errno);
}

std::optional<std::string> Journal::check_lock() {
  std::string error;
  if (!take_lock(error)) return error;
  if (lock_lost_)
    return "the data directory's lock was removed: another sse-chat may have written here";
  return std::nullopt;
}

std::optional<std::string> Journal::check_size() {
  struct stat st;
  if (fd_ < 0 || fstat(fd_, &st) != 0 || static_cast<uint64_t>(st.st_size) >= size_)
    return std::nullopt;
  return "journal file was cut to " + std::to_string(st.st_size) + " bytes by another process";
}

void Journal::remember_file() {
  struct stat st;
  bool known = fd_ >= 0 && fstat(fd_, &st) == 0;
  file_dev_ = known ? st.st_dev : 0;
  file_ino_ = known ? st.st_ino : 0;
}

bool Journal::truncate_to(uint64_t size) {
  abandon_compaction();  // what it kept aside of the file no longer holds
  // Only while the file ends where this server's last write did: another process's records
  // after it (the lock removed by hand) are not ours to cut.
  struct stat st;
  if (size > size_ || fstat(fd_, &st) != 0 || static_cast<uint64_t>(st.st_size) != size_ ||
      ftruncate(fd_, static_cast<off_t>(size)) != 0) {
    refused_left_ = true;
    return false;
  }
  size_ = size;
  return true;
}

void Journal::notify() {
  if (notify_fd_ < 0) return;
  uint64_t one = 1;
  ssize_t ignored = ::write(notify_fd_, &one, sizeof one);
  (void)ignored;
}

void Journal::drain_notifications() {
  uint64_t ignored;
  if (notify_fd_ >= 0)
    while (::read(notify_fd_, &ignored, sizeof ignored) > 0) {
    }
}

Journal::SyncState Journal::sync_state() {
  std::lock_guard<std::mutex> lock(mu_);
  SyncState state{policy_ == FsyncPolicy::Always ? synced_seq_ : appended_seq_, std::nullopt};
  if (!sync_error_.empty()) state.error = sync_error_;
  return state;
}

void Journal::sync_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  std::chrono::steady_clock::time_point out_of_fds_since{};
  for (;;) {
    if (policy_ == FsyncPolicy::Always) {
      cv_.wait(lock, [this] {
        return stopping_ || (sync_error_.empty() &&
                             (requested_seq_ > synced_seq_ || renames_ > renames_synced_));
      });
    } else {
      cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; });
    }
    bool stop = stopping_;
    uint64_t target = appended_seq_;
    uint64_t renames = renames_;
    bool sync_dir = renames > renames_synced_;
    // After a failure nothing is synced until a recovery rewrites the file: Linux may have dropped
    // the pages that failed, so a later fdatasync that succeeds would prove nothing (fsyncgate).
    if (sync_error_.empty() && (target > synced_seq_ || sync_dir)) {
      // A duplicate keeps the file open even if a compaction swaps fd_ meanwhile; the lock is not
      // held during the sync, so an append never waits for the disk.
      int fd = dup(fd_);
      int dup_errno = errno;
      auto now = std::chrono::steady_clock::now();
      bool out_of_fds = fd < 0 && (dup_errno == EMFILE || dup_errno == ENFILE);
      if (!out_of_fds) out_of_fds_since = {};
      if (out_of_fds && out_of_fds_since == std::chrono::steady_clock::time_point{})
        out_of_fds_since = now;
      if (out_of_fds && now - out_of_fds_since < std::chrono::seconds(5) && !stop) {
        // Out of descriptors for a moment (a flood of connections): no disk failed, so it is no
        // storage failure yet; try again shortly (POSTs waiting for the disk wait 5 s at most).
        cv_.wait_for(lock, std::chrono::milliseconds(10), [this] { return stopping_; });
        continue;
      }
      lock.unlock();
      std::string failure;
      if (fd < 0)
        failure = (errno = dup_errno, errno_text("no descriptor to sync the journal with"));
      else if (io_.datasync(fd) != 0)
        failure = errno_text("fdatasync of the journal failed");
      if (failure.empty())
        if (auto removed = check_linked(fd)) failure = *removed;
      if (fd >= 0) ::close(fd);
      std::string dir_failure;
      if (sync_dir && io_.sync_dir(dir_) != 0)
        dir_failure = errno_text("fsync of the data directory failed");
      lock.lock();
      // A rewrite meanwhile replaced (and synced) the file this round synced: its being unlinked,
      // or failing now, says nothing about the journal in use.
      if (renames_ != renames) failure.clear();
      if (failure.empty()) failure = dir_failure;
      if (failure.empty()) {
        synced_seq_ = std::max(synced_seq_, target);
        renames_synced_ = std::max(renames_synced_, renames);
        if (policy_ == FsyncPolicy::Always) notify();
      } else {
        sync_error_ = failure;
        notify();
      }
    }
    if (stop) return;
  }
}

// Writes `parts` to a new file and renames it over the journal; the new file's descriptor is the
// one appends use from then on, so there is no reopen that could fail after the rename.
bool Journal::write_file(std::span<const std::string_view> parts, bool sync_now, std::string& error,
                         const std::function<void(std::string_view)>& written) {
  std::string tmp = path_ + ".tmp";
  int fd = io_.open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    error = errno_text("cannot create the new journal file");
    return false;
  }
  bool ok = true;
  uint64_t size = 0;
  for (std::string_view part : parts) {
    ok = write_all(io_, fd, part);
    if (!ok) break;
    size += part.size();
    if (written) written(part);
  }
  if (!ok) {
    error = errno_text("cannot write the new journal file");
    ::close(fd);
    unlink(tmp.c_str());
    return false;
  }
  return install(tmp, fd, size, sync_now, error);
}

// Syncs the new file `tmp` (open as `fd`, `size` bytes written) and makes it the journal; then
// the directory is synced here with `sync_now`, else by the syncer in its next round.
bool Journal::install(const std::string& tmp, int fd, uint64_t size, bool sync_now,
                      std::string& error) {
  // The new file is synced before it replaces a journal that may already be on disk: otherwise a
  // crash right after the rename could leave an empty file where every message was.
  bool ok = io_.datasync(fd) == 0;
  if (!ok) error = errno_text("cannot sync the new journal file");
  if (ok) ok = swap_in(tmp, fd, size, error);
  if (!ok) {
    ::close(fd);
    unlink(tmp.c_str());
    return false;
  }
  bool dir_synced = sync_now && io_.sync_dir(dir_) == 0;
  if (sync_now && !dir_synced) error = errno_text("cannot sync the data directory");
  std::lock_guard<std::mutex> lock(mu_);
  if (sync_now && dir_synced) {
    synced_seq_ = appended_seq_;  // the new file and its name are on disk in full
    renames_synced_ = renames_;
    notify();
  } else {  // the syncer syncs the file, then the directory
    requested_seq_ = appended_seq_;
    cv_.notify_one();
  }
  return !sync_now || dir_synced;
}

namespace {

// Encodes and writes the window a megabyte at a time, so the thread holds one encoded megabyte and
// a cancel is heard within one write.
class ChunkWriter {
 public:
  ChunkWriter(JournalIo& io, int fd, uint64_t& size, const std::atomic<bool>& cancel)
      : io_(io), fd_(fd), size_(size), cancel_(cancel) {}
  uint64_t offset() const { return size_ + chunk_.size(); }
  bool add(std::string encoded) {
    chunk_ += encoded;
    return chunk_.size() < kChunk || flush();
  }
  bool flush() {
    if (cancel_ || !write_all(io_, fd_, chunk_)) return false;
    size_ += chunk_.size();
    chunk_.clear();
    return true;
  }

 private:
  static constexpr size_t kChunk = 1 << 20;
  JournalIo& io_;
  int fd_;
  uint64_t& size_;
  const std::atomic<bool>& cancel_;
  std::string chunk_;
};

}  // namespace

bool Journal::write_window(Compaction& c) {
  ChunkWriter out(io_, c.fd, c.size, c.cancel);
  for (const JournalRecord& floor : c.window.floors)
    if (!out.add(encode_record(floor))) return false;
  const auto& messages = c.window.messages;
  size_t first_kept = messages.size() - std::min(c.starts_kept, messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i >= first_kept) c.starts.push_back(out.offset());
    const CompactionWindow::Message& m = messages[i];
    if (!out.add(encode_message(m.id, m.nonce_key, m.room, m.json))) return false;
  }
  return out.flush();
}

void Journal::run_compaction_round(Compaction& c) {
  bool ok;
  if (c.rounds == 0) {
    ok = write_window(c);
  } else {
    ok = !c.cancel && write_all(io_, c.fd, c.round);
    if (ok) c.size += c.round.size();
    std::string().swap(c.round);
  }
  if (!ok) c.error = errno_text("cannot write the new journal file");
  // Each round ends on disk, so the loop syncs no more than the last round's appends.
  if (ok && io_.datasync(c.fd) != 0) {
    ok = false;
    c.error = errno_text("cannot sync the new journal file");
  }
  c.state.store(ok ? Compaction::Written : Compaction::Failed, std::memory_order_release);
  notify();
}

bool Journal::launch_round(Compaction& c, std::string& error) {
  try {
    c.thread = std::thread([this, raw = &c] { run_compaction_round(*raw); });
    return true;
  } catch (const std::system_error& e) {
    error = std::string("cannot start the compaction's thread: ") + e.what();
    return false;
  }
}

bool Journal::start_compaction(CompactionWindow window, size_t starts_kept, std::string& error) {
  assert(!compaction_);
  auto c = std::make_unique<Compaction>();
  c->tmp = path_ + ".compact";
  c->fd = io_.open(c->tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0640);
  if (c->fd < 0) {
    error = errno_text("cannot create the new journal file");
    return false;
  }
  c->window = std::move(window);
  c->starts_kept = starts_kept;
  c->origin = size_;
  if (!launch_round(*c, error)) {
    ::close(c->fd);
    unlink(c->tmp.c_str());
    return false;
  }
  compaction_ = std::move(c);
  return true;
}

bool Journal::compaction_written() const {
  return compaction_ && compaction_->state.load(std::memory_order_acquire) != Compaction::Running;
}

Journal::CompactionEnd Journal::finish_compaction(bool sync_now) {
  assert(compaction_written());
  Compaction& c = *compaction_;
  c.thread.join();
  CompactionEnd end;
  if (c.rounds == 0) {
    c.appended_at = c.size;
    c.window = {};  // the frames' counts are the loop's to change
  }
  if (c.state == Compaction::Failed) {
    end.finished = true;
    end.error = c.error;
    abandon_compaction();
    return end;
  }
  // Much appended meanwhile: the thread writes it too, and the loop only what comes during that.
  if (c.appended.size() > kLoopTailBytes && c.rounds < 4) {
    c.round = std::move(c.appended);
    c.appended.clear();
    ++c.rounds;
    c.state = Compaction::Running;
    if (launch_round(c, end.error)) return end;
    end.finished = true;
    abandon_compaction();
    return end;
  }
  end.finished = true;
  end.starts = std::move(c.starts);
  end.origin = c.origin;
  end.appended_at = c.appended_at;
  std::unique_ptr<Compaction> done = std::move(compaction_);
  uint64_t renames_before = renames_;  // changed only on this thread
  if (!write_all(io_, c.fd, c.appended)) {
    end.error = errno_text("cannot write the new journal file");
    ::close(c.fd);
    unlink(c.tmp.c_str());
    return end;
  }
  install(c.tmp, c.fd, c.size + c.appended.size(), sync_now, end.error);
  end.swapped = renames_ != renames_before;
  return end;
}

void Journal::abandon_compaction() {
  if (!compaction_) return;
  compaction_->cancel = true;
  if (compaction_->thread.joinable()) compaction_->thread.join();
  ::close(compaction_->fd);
  unlink(compaction_->tmp.c_str());
  compaction_.reset();
}

// Renames the synced `tmp` (open as `fd`) over the journal and makes it the file in use, all under
// the lock: a syncer round that started on the old file then sees `renames_` move and knows the
// old file's being unlinked is no storage failure.
bool Journal::swap_in(const std::string& tmp, int fd, uint64_t size, std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  if (io_.rename(tmp.c_str(), path_.c_str()) != 0) {
    error = errno_text("cannot rename the new journal file over the old one");
    return false;
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  remember_file();
  size_ = size;
  refused_left_ = false;
  ++appended_seq_;  // the new file counts as one write
  ++renames_;
  return true;
}

bool Journal::prepare_recovery(const std::function<void(JournalRecord&&)>& written_by_another,
                               std::string& error) {
  abandon_compaction();
  bool created = false;
  if (!mkdir_p(dir_, created)) {
    error = errno_text("cannot create the data directory");
    return false;
  }
  // Owed until it succeeds: the next attempt finds the directory there, not created.
  parent_sync_owed_ = parent_sync_owed_ || created;
  if (parent_sync_owed_ && io_.sync_dir(parent_of(dir_)) != 0) {
    error = errno_text("cannot sync the data directory's parent");
    return false;
  }
  parent_sync_owed_ = false;
  if (!take_lock(error)) return false;
  if (lock_lost_) {
    MappedFile file(path_);
    if (!file.error().empty()) {
      error = file.error();
      return false;
    }
    std::vector<std::string> warnings;
    bool damaged = false;
    decode_records(file.bytes(), warnings, damaged,
                   [&](JournalRecord&& r, std::string_view) { written_by_another(std::move(r)); });
    lock_lost_ = false;
  }
  return true;
}

void Journal::recovered() {
  std::lock_guard<std::mutex> lock(mu_);
  sync_error_.clear();
  cv_.notify_one();
}

}  // namespace sse
