#include "journal.h"

#include <gtest/gtest.h>
#include <malloc.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <thread>

using sse::decode_records;
using sse::encode_record;
using sse::JournalRecord;

namespace {
std::string three_records() {
  return encode_record({1, "", "general", R"({"id":1})"}) +
         encode_record({2, "a\x1fn", "team-a", R"({"id":2})"}) +
         encode_record({3, "", "general", R"({"id":3})"});
}
// The messages' ids, floors left out.
std::vector<uint64_t> message_ids(const std::vector<JournalRecord>& rs) {
  std::vector<uint64_t> out;
  for (auto& r : rs)
    if (!r.floor) out.push_back(r.id);
  return out;
}
std::vector<uint64_t> ids(const std::vector<JournalRecord>& rs) {
  std::vector<uint64_t> out;
  for (auto& r : rs) out.push_back(r.id);
  return out;
}
}  // namespace

TEST(JournalCodec, RoundTrip) {
  std::vector<std::string> warnings;
  bool damaged;
  auto rs = decode_records(three_records(), warnings, damaged);
  EXPECT_FALSE(damaged);
  EXPECT_TRUE(warnings.empty());
  ASSERT_EQ(ids(rs), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(rs[1].nonce_key, "a\x1fn");
  EXPECT_EQ(rs[1].room, "team-a");
  EXPECT_EQ(rs[2].room, "general");
  EXPECT_EQ(rs[2].json, R"({"id":3})");
}

TEST(JournalCodec, RecordsFromBeforeRoomsBelongToGeneral) {
  std::string old_json = R"({"id":1,"user":"a","text":"b","ts":5})";
  std::string bytes =
      sse::encode_record_v1({1, "k", "", old_json}) +
      sse::encode_record_v2({2, "a\x1fn", "", R"({"id":2,"user":"c","text":"d","ts":6})"}) +
      encode_record({3, "", "team-a", R"({"id":3,"room":"team-a"})"});
  std::vector<std::string> warnings;
  bool damaged;
  auto rs = decode_records(bytes, warnings, damaged);
  EXPECT_FALSE(damaged);
  ASSERT_EQ(ids(rs), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(rs[0].room, "general");
  EXPECT_EQ(rs[0].nonce_key, "k");
  EXPECT_EQ(rs[0].json, R"({"id":1,"room":"general","user":"a","text":"b","ts":5})");
  EXPECT_EQ(rs[1].room, "general");
  EXPECT_EQ(rs[1].json, R"({"id":2,"room":"general","user":"c","text":"d","ts":6})");
  EXPECT_EQ(rs[2].room, "team-a");
}

// The oldest writer kept only a key's first 255 bytes: two nonces that differ after them would
// look alike, so a full-length key from it names no nonce (a retry gets a new id, never another's).
TEST(JournalCodec, AnOldKeyThatMayHaveBeenCutIsNotRemembered) {
  std::string json = R"({"id":1,"user":"a","text":"b","ts":5})";
  std::string cut(300, 'n'), whole(254, 'n');
  std::vector<std::string> warnings;
  bool damaged;
  auto rs = decode_records(
      sse::encode_record_v1({1, cut, "", json}) + sse::encode_record_v1({2, whole, "", json}),
      warnings, damaged);
  ASSERT_EQ(ids(rs), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(rs[0].nonce_key, "");
  EXPECT_EQ(rs[1].nonce_key, whole);
}

TEST(JournalCodec, ARecordWhoseRoomIsNotARoomNameIsDamage) {
  std::string bad = encode_record({2, "", "general", R"({"id":2})"});
  size_t room_at = 12 + 8 + 2 + 1;  // header, id, nonce length (0), room length
  bad[room_at] = 'G';               // not lowercase: the checksum must be fixed to get this far
  std::string body = bad.substr(12);
  uint32_t crc = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size())));
  for (int i = 0; i < 4; ++i) bad[8 + i] = static_cast<char>(crc >> (8 * i));
  std::vector<std::string> warnings;
  bool damaged;
  auto rs = decode_records(encode_record({1, "", "general", "{}"}) + bad, warnings, damaged);
  EXPECT_TRUE(damaged);
  EXPECT_EQ(message_ids(rs), (std::vector<uint64_t>{1}));
  EXPECT_TRUE(rs.back().floor && rs.back().through >= 2);  // id 2 is not given again
}

TEST(JournalCodec, EveryTruncationKeepsTheWholeRecordsBeforeIt) {
  std::string all = three_records();
  size_t first = encode_record({1, "", "general", R"({"id":1})"}).size();
  for (size_t cut = 0; cut < all.size(); ++cut) {
    std::vector<std::string> warnings;
    bool damaged;
    auto rs = decode_records(std::string_view(all).substr(0, cut), warnings, damaged);
    EXPECT_EQ(damaged, !warnings.empty());
    if (cut >= first) {
      EXPECT_GE(rs.size(), 1u) << cut;
    }
    std::vector<uint64_t> kept = message_ids(rs);
    for (size_t i = 0; i < kept.size(); ++i) EXPECT_EQ(kept[i], i + 1);
    if (damaged) {  // whatever was cut: its ids are floored
      ASSERT_TRUE(rs.back().floor) << cut;
      EXPECT_GT(rs.back().through, kept.size()) << cut;
    }
  }
}

TEST(JournalCodec, GarbageTailIsCut) {
  std::vector<std::string> warnings;
  bool damaged;
  auto rs = decode_records(three_records() + "\x01garbage\xff\xfe", warnings, damaged);
  EXPECT_TRUE(damaged);
  EXPECT_EQ(message_ids(rs), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(rs.back().through, 4u);  // 10 bytes hold no record, but may have begun id 4
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("cut"), std::string::npos);
}

TEST(JournalCodec, FlippedByteInTheMiddleLosesOnlyThatRecord) {
  std::string all = three_records();
  size_t first = encode_record({1, "", "general", R"({"id":1})"}).size();
  all[first + 15] ^= 0x20;  // inside record 2's body: its checksum no longer holds
  std::vector<std::string> warnings;
  bool damaged;
  auto rs = decode_records(all, warnings, damaged);
  EXPECT_TRUE(damaged);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("1 message(s) lost"), std::string::npos) << warnings[0];
  // Which room record 2 was in is unknown: a floor for every room takes its place, so a stream
  // resuming from before it hears `reset` instead of missing it silently.
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(rs[0].id, 1u);
  EXPECT_TRUE(rs[1].floor);
  EXPECT_EQ(rs[1].room, "");
  EXPECT_EQ(rs[1].through, 2u);
  EXPECT_EQ(rs[2].id, 3u);
  EXPECT_FALSE(rs[2].floor);
}

// A damaged record followed by a floor: what it held may be any id up to that floor's high water
// (the highest id issued when the floor was written).
TEST(JournalCodec, DamageBeforeAFloorFloorsEveryRoomThroughItsHighWater) {
  std::string damaged_record = encode_record({2, "", "team-a", R"({"id":2})"});
  damaged_record[15] ^= 0x20;
  std::string bytes = encode_record({1, "", "general", R"({"id":1})"}) + damaged_record +
                      encode_record(sse::floor_record(7, "gone", 5)) +
                      encode_record({8, "", "general", R"({"id":8})"});
  std::vector<std::string> warnings;
  bool damaged;
  auto rs = decode_records(bytes, warnings, damaged);
  EXPECT_TRUE(damaged);
  ASSERT_EQ(rs.size(), 4u);
  EXPECT_TRUE(rs[1].floor);
  EXPECT_EQ(rs[1].room, "");
  EXPECT_EQ(rs[1].through, 7u);
  EXPECT_EQ(rs[2].room, "gone");
  EXPECT_EQ(rs[3].id, 8u);
}

// A cut tail may be a crash's torn write or acknowledged records damaged: which cannot be told, so
// the ids the cut bytes could have held (each record takes at least 20 bytes) are floored, never
// given again, and a stream resuming from before them is reset rather than silently short.
TEST(JournalCodec, ACutTailFloorsTheIdsItCouldHaveHeld) {
  std::string all = three_records();
  size_t second = encode_record({2, "a\x1fn", "team-a", R"({"id":2})"}).size();
  size_t third = encode_record({3, "", "general", R"({"id":3})"}).size();
  struct Case {
    std::string bytes;
    uint64_t through;  // the last intact id, plus what the cut bytes could hold, plus one
  } cases[] = {
      {all.substr(0, all.size() - 3), 2 + (third - 3) / 20 + 1},  // torn
      {all.substr(0, all.size() - third) + std::string(third, '\0'), 2 + third / 20 + 1},
      {all.substr(0, all.size() - third - 1), 1 + (second - 1) / 20 + 1},  // and more
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.through);
    std::vector<std::string> warnings;
    bool damaged;
    auto rs = decode_records(c.bytes, warnings, damaged);
    EXPECT_TRUE(damaged);
    ASSERT_FALSE(rs.empty());
    EXPECT_TRUE(rs.back().floor);
    EXPECT_EQ(rs.back().room, "");
    EXPECT_EQ(rs.back().through, c.through);
    EXPECT_EQ(rs.back().id, c.through);
    EXPECT_GE(c.through, 3u);  // the lost id 3 is never issued again
  }
}

namespace {

// A line of /proc/self/status ("VmHWM", "VmRSS") in KiB.
long status_kib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  return -1;
}

}  // namespace

// Start-up hands each record on as it reads it: the process holds the records, not the file's
// bytes beside them (it held both, so its peak was twice the journal).
TEST(JournalFile, LoadingHoldsTheRecordsNotTheFileBesideThem) {
  char tmpl[] = "/tmp/sse-journal-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  constexpr uint64_t kRecords = 48000;
  std::string json = R"({"text":")" + std::string(1000, 'x') + "\"}";
  size_t file_bytes = 0;
  {
    std::ofstream out(dir + "/journal", std::ios::binary);
    for (uint64_t id = 1; id <= kRecords; ++id) {
      std::string record = encode_record({id, "", "general", json});
      file_bytes += record.size();
      out << record;
    }
  }
  // The peak growth of the process while `fill` runs, in bytes.
  auto peak_growth = [](auto&& fill) {
    malloc_trim(0);
    std::ofstream("/proc/self/clear_refs") << "5";  // VmHWM starts again from VmRSS
    long before_kib = status_kib("VmRSS");
    fill();
    return (status_kib("VmHWM") - before_kib) * 1024;
  };
  std::vector<JournalRecord> kept;
  kept.reserve(kRecords);
  long records_alone = peak_growth([&] {
    for (uint64_t id = 1; id <= kRecords; ++id) kept.push_back({id, "", "general", json});
  });
  kept.clear();
  std::unique_ptr<sse::Journal> journal;
  long loading = peak_growth([&] {
    sse::JournalLoad load;
    std::string error;
    journal = sse::Journal::open(
        {dir, sse::FsyncPolicy::Never, nullptr},
        [&](JournalRecord&& r) { kept.push_back(std::move(r)); }, load, error);
    ASSERT_TRUE(journal) << error;
  });
  EXPECT_EQ(kept.size(), kRecords);
  EXPECT_GT(records_alone, static_cast<long>(file_bytes) * 9 / 10);
  EXPECT_LT(loading, records_alone + static_cast<long>(file_bytes) / 2)
      << "records alone " << records_alone << ", file " << file_bytes;
  journal.reset();
  std::filesystem::remove_all(dir);
}

namespace {

std::string journal_dir() {
  char tmpl[] = "/tmp/sse-journal-XXXXXX";
  return mkdtemp(tmpl);
}

std::unique_ptr<sse::Journal> open_journal(const std::string& dir,
                                           std::vector<JournalRecord>* read = nullptr) {
  sse::JournalLoad load;
  std::string error;
  auto journal = sse::Journal::open(
      {dir, sse::FsyncPolicy::EverySec, nullptr},
      [&](JournalRecord&& r) {
        if (read) read->push_back(std::move(r));
      },
      load, error);
  EXPECT_TRUE(journal) << error;
  return journal;
}

JournalRecord message(uint64_t id) {
  return {id, "", "general", R"({"id":)" + std::to_string(id) + "}"};
}

}  // namespace

// A rewrite a crash interrupted leaves its new file beside the journal: removed at the next start.
TEST(JournalFile, ANewFileLeftByACrashIsRemovedAtStart) {
  std::string dir = journal_dir();
  for (const char* name : {"/journal.tmp", "/journal.compact"})
    std::ofstream(dir + name) << std::string(4096, 'x');
  auto journal = open_journal(dir);
  EXPECT_FALSE(std::filesystem::exists(dir + "/journal.tmp"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/journal.compact"));
  journal.reset();
  std::filesystem::remove_all(dir);
}

// A journal that is a symlink (to keep it elsewhere) would be replaced by the first rewrite, its
// target left stale: refused at start, saying what to do instead.
TEST(JournalFile, AJournalThatIsASymlinkIsRefusedAtStart) {
  std::string dir = journal_dir(), elsewhere = journal_dir();
  { auto journal = open_journal(elsewhere); }
  std::filesystem::create_symlink(elsewhere + "/journal", dir + "/journal");
  sse::JournalLoad load;
  std::string error;
  auto journal = sse::Journal::open(
      {dir, sse::FsyncPolicy::EverySec, nullptr}, [](JournalRecord&&) {}, load, error);
  EXPECT_FALSE(journal);
  EXPECT_NE(error.find("is a symbolic link"), std::string::npos) << error;
  EXPECT_NE(error.find("--data-dir"), std::string::npos) << error;
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(elsewhere);
}

// A compaction writes the given records on its thread while appends go on; the new file holds them
// followed by everything appended meanwhile, at the offsets finish_compaction() reports.
TEST(JournalFile, ACompactionKeepsWhatWasAppendedMeanwhileAtTheOffsetsItReports) {
  std::string dir = journal_dir();
  auto journal = open_journal(dir);
  uint64_t seq = 0;
  std::string error;
  for (uint64_t id = 1; id <= 100; ++id) ASSERT_TRUE(journal->append(message(id), seq, error));
  sse::CompactionWindow window;
  window.floors.push_back(sse::floor_record(100, "", 90));
  for (uint64_t id = 91; id <= 100; ++id) {  // the JSON stays in the frames
    window.frames.emplace_back(message(id).json);
    window.messages.push_back({id, "", "general", window.frames.back().get()->bytes()});
  }
  ASSERT_TRUE(journal->start_compaction(std::move(window), 2, error)) << error;
  uint64_t origin = journal->size_bytes();
  std::vector<uint64_t> appended_at;
  for (uint64_t id = 101; id <= 110; ++id) {
    appended_at.push_back(journal->size_bytes());
    ASSERT_TRUE(journal->append(message(id), seq, error));
  }
  while (!journal->compaction_written()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  sse::Journal::CompactionEnd end = journal->finish_compaction(false);
  ASSERT_TRUE(end.finished);
  ASSERT_TRUE(end.swapped);
  EXPECT_EQ(end.error, "");
  EXPECT_FALSE(journal->compacting());
  EXPECT_EQ(end.origin, origin);
  EXPECT_FALSE(std::filesystem::exists(dir + "/journal.compact"));
  ASSERT_TRUE(journal->append(message(111), seq, error));  // into the new file
  journal.reset();

  std::ifstream in(dir + "/journal", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  auto record_at = [&](uint64_t offset) {
    std::vector<std::string> warnings;
    bool damaged = false;
    auto rs = decode_records(std::string_view(bytes).substr(offset), warnings, damaged);
    return rs.empty() ? 0 : rs.front().id;
  };
  ASSERT_EQ(end.starts.size(), 2u);
  EXPECT_EQ(record_at(end.starts[0]), 99u);
  EXPECT_EQ(record_at(end.starts[1]), 100u);
  for (size_t i = 0; i < appended_at.size(); ++i)
    EXPECT_EQ(record_at(end.appended_at + (appended_at[i] - end.origin)), 101 + i);
  std::vector<JournalRecord> read;
  auto reopened = open_journal(dir, &read);
  std::vector<uint64_t> expected;
  for (uint64_t id = 91; id <= 111; ++id) expected.push_back(id);
  EXPECT_EQ(message_ids(read), expected);
  ASSERT_FALSE(read.empty());
  EXPECT_TRUE(read.front().floor);
  EXPECT_EQ(read.front().through, 90u);
  EXPECT_EQ(read.back().json, message(111).json);
  reopened.reset();
  std::filesystem::remove_all(dir);
}
