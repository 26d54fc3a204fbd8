#include "journal.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>

namespace sse {
namespace {

constexpr uint32_t kMagic = 0x43455353;  // "SSEC"
constexpr size_t kHeader = 12;
constexpr size_t kMaxBody = 1 << 20;
constexpr size_t kMinBody = 9;  // id + nonce length

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

// The record at `pos`, if one starts there, is whole, and its checksum holds.
bool record_at(std::string_view bytes, size_t pos, uint64_t min_id, JournalRecord& out,
               size_t& length) {
  if (bytes.size() - pos < kHeader || get_le(bytes.data() + pos, 4) != kMagic) return false;
  size_t body_len = get_le(bytes.data() + pos + 4, 4);
  if (body_len < kMinBody || body_len > kMaxBody || bytes.size() - pos - kHeader < body_len)
    return false;
  std::string_view body = bytes.substr(pos + kHeader, body_len);
  if (checksum(body) != get_le(bytes.data() + pos + 8, 4)) return false;
  uint64_t id = get_le(body.data(), 8);
  size_t nonce_len = static_cast<unsigned char>(body[8]);
  if (id < min_id || kMinBody + nonce_len > body_len) return false;
  out.id = id;
  out.nonce_key.assign(body.substr(kMinBody, nonce_len));
  out.json.assign(body.substr(kMinBody + nonce_len));
  length = kHeader + body_len;
  return true;
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool mkdir_p(const std::string& dir) {
  std::string partial;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || (dir[i] == '/' && i > 0)) {
      partial = dir.substr(0, i);
      if (mkdir(partial.c_str(), 0750) != 0 && errno != EEXIST) return false;
    }
  }
  return true;
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    ::close(fd);
  }
}

}  // namespace

std::string encode_record(const JournalRecord& r) {
  std::string body;
  size_t nonce_len = std::min<size_t>(r.nonce_key.size(), 255);
  body.reserve(kMinBody + nonce_len + r.json.size());
  put_u64(body, r.id);
  body.push_back(static_cast<char>(nonce_len));
  body.append(r.nonce_key, 0, nonce_len);
  body += r.json;
  std::string out;
  out.reserve(kHeader + body.size());
  put_u32(out, kMagic);
  put_u32(out, static_cast<uint32_t>(body.size()));
  put_u32(out, checksum(body));
  out += body;
  return out;
}

std::vector<JournalRecord> decode_records(std::string_view bytes,
                                          std::vector<std::string>& warnings, bool& damaged) {
  std::vector<JournalRecord> records;
  damaged = false;
  size_t pos = 0;
  while (pos < bytes.size()) {
    uint64_t min_id = records.empty() ? 1 : records.back().id + 1;
    JournalRecord r;
    size_t len = 0;
    if (record_at(bytes, pos, min_id, r, len)) {
      records.push_back(std::move(r));
      pos += len;
      continue;
    }
    damaged = true;
    size_t next = pos + 1;
    while (next < bytes.size() && !record_at(bytes, next, min_id, r, len)) ++next;
    std::string after = records.empty() ? "the start" : "id " + std::to_string(records.back().id);
    if (next >= bytes.size()) {
      warnings.push_back("journal tail torn or corrupt: cut " + std::to_string(bytes.size() - pos) +
                         " bytes after " + after);
      break;
    }
    uint64_t lost = r.id - min_id;
    warnings.push_back("journal damaged: skipped " + std::to_string(next - pos) + " bytes after " +
                       after + "; " + std::to_string(lost) + " message(s) lost before id " +
                       std::to_string(r.id));
    pos = next;
  }
  return records;
}

Journal::Journal(std::string dir, FsyncPolicy policy, uint64_t max_bytes)
    : dir_(std::move(dir)),
      path_(dir_ + "/journal"),
      policy_(policy),
      max_bytes_(max_bytes),
      compact_at_(max_bytes) {}

Journal::~Journal() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (syncer_.joinable()) syncer_.join();
  if (fd_ >= 0) ::close(fd_);
  if (durable_fd_ >= 0) ::close(durable_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::unique_ptr<Journal> Journal::open(const std::string& dir, FsyncPolicy policy,
                                       uint64_t max_bytes,
                                       const std::function<void(JournalRecord&&)>& on_record,
                                       JournalLoad& load, std::string& error) {
  std::unique_ptr<Journal> j(new Journal(dir, policy, max_bytes));
  if (!mkdir_p(dir)) {
    error = "cannot create data dir " + dir + ": " + strerror(errno);
    return nullptr;
  }
  j->lock_fd_ = ::open((dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (j->lock_fd_ < 0 || flock(j->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    error = "data dir " + dir + " is in use by another sse-chat (or not writable)";
    return nullptr;
  }
  std::string bytes;
  if (int fd = ::open(j->path_.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    char buf[1 << 16];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) bytes.append(buf, static_cast<size_t>(n));
    ::close(fd);
  }
  bool damaged = false;
  std::vector<JournalRecord> records = decode_records(bytes, load.warnings, damaged);
  load.records = records.size();
  load.last_id = records.empty() ? 0 : records.back().id;
  if (damaged && !j->rewrite(records, true, error)) return nullptr;
  for (JournalRecord& r : records) on_record(std::move(r));
  if (j->fd_ < 0) {
    j->fd_ = ::open(j->path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (j->fd_ < 0) {
      error = "cannot open journal " + j->path_ + ": " + strerror(errno);
      return nullptr;
    }
    struct stat st;
    j->size_ = fstat(j->fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  }
  j->compact_at_ = std::max(max_bytes, j->size_ * 2);
  if (policy == FsyncPolicy::Always) j->durable_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (policy != FsyncPolicy::Never) j->syncer_ = std::thread([raw = j.get()] { raw->sync_loop(); });
  return j;
}

bool Journal::append(const JournalRecord& r, uint64_t& seq) {
  std::string bytes = encode_record(r);
  if (!write_all(fd_, bytes)) {
    // Never leave half a record behind for the next start to trip on.
    if (ftruncate(fd_, static_cast<off_t>(size_)) != 0) { /* the loader cuts a torn tail anyway */
    }
    return false;
  }
  size_ += bytes.size();
  std::lock_guard<std::mutex> lock(mu_);
  seq = ++appended_seq_;
  if (policy_ == FsyncPolicy::Always) {
    requested_seq_ = seq;
    cv_.notify_one();
  }
  return true;
}

uint64_t Journal::durable_seq() {
  if (durable_fd_ >= 0) {
    uint64_t ignored;
    while (::read(durable_fd_, &ignored, sizeof ignored) > 0) {
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  return policy_ == FsyncPolicy::Always ? synced_seq_ : appended_seq_;
}

void Journal::sync_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (policy_ == FsyncPolicy::Always) {
      cv_.wait(lock, [this] { return stopping_ || requested_seq_ > synced_seq_; });
    } else {
      cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; });
    }
    uint64_t target = appended_seq_;
    bool stop = stopping_;
    if (target > synced_seq_) {
      // A duplicate keeps the file open even if rewrite() swaps fd_ meanwhile; the lock is not
      // held during the sync, so an append never waits for the disk.
      int fd = dup(fd_);
      lock.unlock();
      if (fd >= 0) {
        fdatasync(fd);
        ::close(fd);
      }
      lock.lock();
      synced_seq_ = std::max(synced_seq_, target);
      if (durable_fd_ >= 0) {
        uint64_t one = 1;
        ssize_t ignored = ::write(durable_fd_, &one, sizeof one);
        (void)ignored;
      }
    }
    if (stop) return;
  }
}

// Writes `records` to a new file and renames it over the journal. With `sync_now` the new file and
// the directory are synced here (start-up repair, or --fsync always); otherwise the syncer thread
// syncs the new file with its next round, so compaction never makes the loop wait for the disk.
bool Journal::rewrite(const std::vector<JournalRecord>& records, bool sync_now,
                      std::string& error) {
  std::string tmp = path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) {
    error = "cannot write " + tmp + ": " + strerror(errno);
    return false;
  }
  std::string bytes;
  for (const JournalRecord& r : records) bytes += encode_record(r);
  bool ok = write_all(fd, bytes) && (!sync_now || fdatasync(fd) == 0);
  ::close(fd);
  if (!ok || rename(tmp.c_str(), path_.c_str()) != 0) {
    error = "cannot replace journal " + path_ + ": " + strerror(errno);
    unlink(tmp.c_str());
    return false;
  }
  if (sync_now) fsync_dir(dir_);
  int fresh = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fresh < 0) {
    error = "cannot reopen journal: " + std::string(strerror(errno));
    return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = fresh;
  size_ = bytes.size();
  if (sync_now) {
    synced_seq_ = appended_seq_;  // the new file is on disk in full
    if (durable_fd_ >= 0) {
      uint64_t one = 1;
      ssize_t ignored = ::write(durable_fd_, &one, sizeof one);
      (void)ignored;
    }
  } else {
    ++appended_seq_;  // counts as a write the syncer has yet to sync
  }
  return true;
}

bool Journal::compact_if_needed(const std::function<std::vector<JournalRecord>()>& window) {
  if (size_ <= compact_at_) return true;
  std::string error;
  if (!rewrite(window(), policy_ == FsyncPolicy::Always, error)) return false;
  compact_at_ = std::max(max_bytes_, size_ * 2);
  return true;
}

}  // namespace sse
