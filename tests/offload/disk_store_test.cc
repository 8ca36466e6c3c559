#include "offload/disk_store.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "offload/crc32c.h"

namespace tierserve {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kPage = 4096;

// Page-aligned heap memory.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(uint64_t bytes)
      : bytes_(bytes), data_(static_cast<uint8_t*>(std::aligned_alloc(kPage, bytes))) {}
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  uint8_t* data() const { return data_; }
  uint64_t bytes() const { return bytes_; }
  iovec iov() const { return iovec{data_, bytes_}; }

 private:
  uint64_t bytes_;
  uint8_t* data_;
};

void fill_random(uint8_t* p, uint64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  for (uint64_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(rng());
}

// Waits for everything in flight; completions by ticket.
std::map<uint64_t, DiskCompletion> drain(DiskStore& store) {
  std::map<uint64_t, DiskCompletion> out;
  while (store.in_flight() > 0) {
    for (DiskCompletion& c : store.wait()) {
      EXPECT_EQ(out.count(c.ticket), 0u) << "ticket " << c.ticket << " completed twice";
      out[c.ticket] = std::move(c);
    }
  }
  return out;
}

// A scratch directory under the test temporary directory (TEST_TMPDIR or TMPDIR), removed after
// each test.
class DiskStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = ::testing::TempDir() + "disk_store_test_XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr) << std::strerror(errno);
    dir_ = templ;
  }
  void TearDown() override {
    std::filesystem::permissions(dir_, std::filesystem::perms::owner_all);
    std::filesystem::remove_all(dir_);
  }
  DiskStoreOptions options(uint64_t extent_bytes, int64_t num_extents, int32_t queue_depth) {
    DiskStoreOptions o;
    o.dir = dir_;
    o.extent_bytes = extent_bytes;
    o.capacity_bytes = extent_bytes * static_cast<uint64_t>(num_extents);
    o.queue_depth = queue_depth;
    return o;
  }
  std::unique_ptr<DiskStore> make(const DiskStoreOptions& o) {
    auto store = DiskStore::create(o);
    EXPECT_TRUE(store.is_ok()) << store.status().to_string();
    return store.is_ok() ? std::move(store).value() : nullptr;
  }
  int num_entries() const {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) {
      (void)e;
      ++n;
    }
    return n;
  }
  std::filesystem::path dir_;
};

TEST_F(DiskStoreTest, ValidateNamesTheBadField) {
  struct Case {
    DiskStoreOptions o;
    const char* field;
  };
  std::vector<Case> cases;
  DiskStoreOptions good = options(8192, 4, 8);
  ASSERT_TRUE(good.validate().is_ok());
  Case c{good, "dir"};
  c.o.dir.clear();
  cases.push_back(c);
  c = {good, "extent_bytes"};
  c.o.extent_bytes = 0;
  cases.push_back(c);
  c = {good, "extent_bytes"};
  c.o.extent_bytes = 5000;
  cases.push_back(c);
  c = {good, "extent_bytes"};
  c.o.extent_bytes = uint64_t{2} << 30;
  c.o.capacity_bytes = uint64_t{4} << 30;
  cases.push_back(c);
  c = {good, "capacity_bytes"};
  c.o.capacity_bytes = 0;
  cases.push_back(c);
  c = {good, "capacity_bytes"};
  c.o.capacity_bytes = 4096;
  cases.push_back(c);
  c = {good, "queue_depth"};
  c.o.queue_depth = 0;
  cases.push_back(c);
  c = {good, "queue_depth"};
  c.o.queue_depth = 4097;
  cases.push_back(c);
  for (const Case& k : cases) {
    const Status s = k.o.validate();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << k.field;
    EXPECT_THAT(s.message(), HasSubstr(k.field));
    auto store = DiskStore::create(k.o);
    ASSERT_FALSE(store.is_ok());
    EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(num_entries(), 0);
}

TEST_F(DiskStoreTest, CreateFailsClearlyOnABadDirectory) {
  DiskStoreOptions o = options(8192, 4, 8);
  o.dir = dir_ / "missing";
  auto missing = DiskStore::create(o);
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr((dir_ / "missing").string()));
  EXPECT_THAT(missing.status().message(), HasSubstr("does not exist"));

  o.dir = dir_ / "a_file";
  std::ofstream(o.dir) << "x";
  auto file = DiskStore::create(o);
  ASSERT_FALSE(file.is_ok());
  EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr("is not a directory"));
  EXPECT_THAT(file.status().message(), HasSubstr(o.dir.string()));
}

TEST_F(DiskStoreTest, CreateFailsOnAnUnwritableDirectory) {
  if (geteuid() == 0) {
    GTEST_SKIP() << "running as root, which ignores directory permissions: a 0500 directory "
                    "is writable";
  }
  std::filesystem::path ro = dir_ / "read_only";
  std::filesystem::create_directory(ro);
  std::filesystem::permissions(
      ro, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
  DiskStoreOptions o = options(8192, 4, 8);
  o.dir = ro;
  auto store = DiskStore::create(o);
  std::filesystem::permissions(ro, std::filesystem::perms::owner_all);
  ASSERT_FALSE(store.is_ok());
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(store.status().message(), HasSubstr("not writable"));
  EXPECT_THAT(store.status().message(), HasSubstr(ro.string()));
  EXPECT_TRUE(std::filesystem::is_empty(ro));
}

TEST_F(DiskStoreTest, CapacityBeyondTheFileSystemIsResourceExhausted) {
  DiskStoreOptions o = options(uint64_t{1} << 20, 1, 8);
  o.capacity_bytes = uint64_t{1} << 50;  // 1 PiB
  auto store = DiskStore::create(o);
  ASSERT_FALSE(store.is_ok());
  EXPECT_EQ(store.status().code(), StatusCode::kResourceExhausted) << store.status().to_string();
  EXPECT_THAT(store.status().message(), HasSubstr(dir_.string()));
  EXPECT_THAT(store.status().message(), HasSubstr("cannot preallocate"));
  EXPECT_EQ(num_entries(), 0) << "the private directory must not be left behind";
}

// A process killed before its destructors ran leaves its private directory; the next store in
// the same directory removes it (its process is gone), and leaves a live process's alone.
TEST_F(DiskStoreTest, DirectoryOfAKilledProcessIsReclaimed) {
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto store = DiskStore::create(options(64 * 1024, 16, 4));
    char ok = store.is_ok() ? 1 : 0;
    (void)!write(ready[1], &ok, 1);
    pause();  // killed here, with the store open
    _exit(0);
  }
  char ok = 0;
  ASSERT_EQ(read(ready[0], &ok, 1), 1);
  ASSERT_EQ(ok, 1);
  EXPECT_EQ(num_entries(), 1);
  auto live = make(options(64 * 1024, 16, 4));  // the child still runs: its directory stays
  ASSERT_NE(live, nullptr);
  EXPECT_EQ(num_entries(), 2);
  kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  close(ready[0]);
  close(ready[1]);
  EXPECT_EQ(num_entries(), 2) << "left behind by the killed process";
  auto next = make(options(64 * 1024, 16, 4));
  ASSERT_NE(next, nullptr);
  EXPECT_EQ(num_entries(), 2) << "the dead process's directory is gone; two live stores remain";
  EXPECT_TRUE(std::filesystem::exists(live->directory()));
}

TEST_F(DiskStoreTest, PrivateDirectoryIsPreallocatedAndRemoved) {
  const uint64_t extent = 64 * 1024;
  DiskStoreOptions o = options(extent, 40, 8);
  o.capacity_bytes += 1000;  // not a multiple: rounded down to 40 extents
  std::filesystem::path private_dir, file;
  {
    auto store = make(o);
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->num_extents(), 40);
    EXPECT_EQ(store->num_free_extents(), 40);
    EXPECT_EQ(store->extent_bytes(), extent);
    private_dir = store->directory();
    file = store->extent_file_path();
    EXPECT_EQ(private_dir.parent_path(), dir_);
    EXPECT_EQ(file.parent_path(), private_dir);
    struct stat st {};
    ASSERT_EQ(stat(private_dir.c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    ASSERT_EQ(stat(file.c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), 40 * extent);
    EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, 40 * extent);
    EXPECT_EQ(num_entries(), 1);

    // Two stores in one directory get distinct private directories.
    auto other = make(o);
    ASSERT_NE(other, nullptr);
    EXPECT_NE(other->directory(), private_dir);
    EXPECT_EQ(num_entries(), 2);
  }
  EXPECT_FALSE(std::filesystem::exists(private_dir));
  EXPECT_EQ(num_entries(), 0);
}

TEST_F(DiskStoreTest, AllocatesEveryExtentThenReportsFull) {
  auto store = make(options(8192, 5, 4));
  ASSERT_NE(store, nullptr);
  std::vector<int64_t> got;
  for (int i = 0; i < 5; ++i) {
    auto e = store->allocate_extent();
    ASSERT_TRUE(e.is_ok());
    got.push_back(e.value());
  }
  EXPECT_EQ(got, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(store->num_free_extents(), 0);
  auto full = store->allocate_extent();
  ASSERT_FALSE(full.is_ok());
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(full.status().message(), HasSubstr("disk tier full"));
  store->free_extent(3);
  EXPECT_EQ(store->num_free_extents(), 1);
  auto again = store->allocate_extent();
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ(again.value(), 3);
}

// (registered buffers, O_DIRECT)
class DiskStoreRoundTripTest : public DiskStoreTest,
                               public ::testing::WithParamInterface<std::tuple<bool, bool>> {};

TEST_P(DiskStoreRoundTripTest, RandomExtentsRoundTripWithMoreOpsThanQueueDepth) {
  const auto [registered, direct] = GetParam();
  const uint64_t extent = 32 * 1024;
  const int64_t n = 48;
  const int32_t depth = 4;
  DiskStoreOptions o = options(extent, n, depth);
  o.direct_io = direct;
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->direct_io(), direct);
  AlignedBuffer src(extent * n), dst(extent * n);
  if (registered) {
    const iovec iov[2] = {src.iov(), dst.iov()};
    ASSERT_TRUE(store->register_buffers(iov).is_ok());
  }
  std::mt19937 rng(7);
  std::vector<int64_t> ids;
  std::vector<uint64_t> lengths(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids.push_back(store->allocate_extent().value());
  std::shuffle(ids.begin(), ids.end(), rng);

  // Every write at once: 48 operations against 4 queue entries.
  auto write_all = [&](uint32_t seed) {
    std::map<uint64_t, int64_t> ticket_extent;
    for (int64_t e : ids) {
      uint8_t* p = src.data() + static_cast<uint64_t>(e) * extent;
      const uint64_t len = kPage * (1 + rng() % (extent / kPage));
      lengths[static_cast<size_t>(e)] = len;
      fill_random(p, len, seed + static_cast<uint32_t>(e));
      ticket_extent[store->submit_write(e, p, len)] = e;
    }
    EXPECT_EQ(store->in_flight(), n);
    auto done = drain(*store);
    ASSERT_EQ(done.size(), ids.size());
    for (const auto& [ticket, c] : done) {
      EXPECT_TRUE(c.status.is_ok()) << c.status.to_string();
      EXPECT_EQ(c.op, DiskOp::kWrite);
      EXPECT_TRUE(store->has_data(ticket_extent.at(ticket)));
    }
  };
  auto read_all_and_compare = [&] {
    std::memset(dst.data(), 0, dst.bytes());
    for (int64_t e : ids) {
      const uint64_t off = static_cast<uint64_t>(e) * extent;
      store->submit_read(e, dst.data() + off, lengths[static_cast<size_t>(e)]);
    }
    for (const auto& [ticket, c] : drain(*store)) {
      EXPECT_TRUE(c.status.is_ok()) << c.status.to_string();
      EXPECT_EQ(c.op, DiskOp::kRead);
    }
    for (int64_t e : ids) {
      const uint64_t off = static_cast<uint64_t>(e) * extent;
      ASSERT_EQ(std::memcmp(src.data() + off, dst.data() + off, lengths[static_cast<size_t>(e)]), 0)
          << "extent " << e;
    }
  };
  write_all(100);
  read_all_and_compare();

  // Free half, reallocate (the store hands the freed ids back), write new data, read all.
  std::vector<int64_t> freed(ids.begin(), ids.begin() + n / 2);
  for (int64_t e : freed) {
    store->free_extent(e);
    EXPECT_FALSE(store->has_data(e));
  }
  std::vector<int64_t> reused;
  for (size_t i = 0; i < freed.size(); ++i) reused.push_back(store->allocate_extent().value());
  std::sort(freed.begin(), freed.end());
  std::sort(reused.begin(), reused.end());
  EXPECT_EQ(reused, freed);
  write_all(200);
  read_all_and_compare();
}

INSTANTIATE_TEST_SUITE_P(Modes, DiskStoreRoundTripTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "Registered" : "Plain") +
                                  (std::get<1>(info.param) ? "Direct" : "Buffered");
                         });

TEST_F(DiskStoreTest, PollReturnsWithoutBlockingAndEventuallyEverything) {
  const uint64_t extent = 16 * 1024;
  auto store = make(options(extent, 16, 2));
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->poll().empty());
  EXPECT_TRUE(store->wait().empty());  // nothing in flight: returns at once
  AlignedBuffer buf(extent * 16);
  fill_random(buf.data(), buf.bytes(), 3);
  std::vector<uint64_t> tickets;
  for (int i = 0; i < 16; ++i) {
    const int64_t e = store->allocate_extent().value();
    tickets.push_back(store->submit_write(e, buf.data() + e * extent, extent));
  }
  for (size_t i = 1; i < tickets.size(); ++i) EXPECT_EQ(tickets[i], tickets[i - 1] + 1);
  std::vector<uint64_t> seen;
  for (int spins = 0; store->in_flight() > 0 && spins < 10000000; ++spins) {
    for (const DiskCompletion& c : store->poll()) {
      EXPECT_TRUE(c.status.is_ok()) << c.status.to_string();
      seen.push_back(c.ticket);
    }
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, tickets);
  EXPECT_EQ(store->in_flight(), 0);
}

// Writes extents 0..n-1 (allocated in order) with random data from `src`; all must succeed.
void write_extents(DiskStore& store, const AlignedBuffer& src, int64_t n, uint64_t extent) {
  fill_random(src.data(), src.bytes(), 11);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = store.allocate_extent().value();
    ASSERT_EQ(e, i);
    store.submit_write(e, src.data() + static_cast<uint64_t>(e) * extent, extent);
  }
  for (const auto& [ticket, c] : drain(store)) ASSERT_TRUE(c.status.is_ok()) << c.status.message();
}

struct FaultCase {
  const char* name;
  DiskOp op;
  DiskFault fault;
  StatusCode code;
  const char* message;
};

void PrintTo(const FaultCase& c, std::ostream* os) { *os << c.name; }

class DiskStoreFaultTest : public DiskStoreTest, public ::testing::WithParamInterface<FaultCase> {};

// The fault hits one operation among many in flight; its completion carries the error and every
// other operation completes with correct data.
TEST_P(DiskStoreFaultTest, InjectedFaultIsReportedAndOthersSucceed) {
  const FaultCase& fc = GetParam();
  const uint64_t extent = 16 * 1024;
  const int64_t n = 12;
  std::filesystem::path private_dir;
  {
    auto store = make(options(extent, n, 4));
    ASSERT_NE(store, nullptr);
    private_dir = store->directory();
    AlignedBuffer src(extent * n), dst(extent * n);
    const int64_t victim = 5;
    uint64_t victim_ticket = 0;
    std::vector<std::tuple<DiskOp, int64_t, uint64_t>> calls;
    store->set_fault_hook_for_testing([&](DiskOp op, int64_t target, uint64_t ticket) {
      calls.emplace_back(op, target, ticket);
      return ticket == victim_ticket ? fc.fault : DiskFault::kNone;
    });
    std::map<uint64_t, int64_t> ticket_extent;
    if (fc.op == DiskOp::kWrite) {
      fill_random(src.data(), src.bytes(), 5);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t e = store->allocate_extent().value();
        const uint64_t t = store->submit_write(e, src.data() + e * extent, extent);
        if (e == victim) victim_ticket = t;
        ticket_extent[t] = e;
      }
    } else {
      write_extents(*store, src, n, extent);
      calls.clear();
      for (int64_t e = 0; e < n; ++e) {
        const uint64_t t = store->submit_read(e, dst.data() + e * extent, extent);
        if (e == victim) victim_ticket = t;
        ticket_extent[t] = e;
      }
    }
    auto done = drain(*store);
    ASSERT_EQ(done.size(), static_cast<size_t>(n));
    ASSERT_EQ(calls.size(), static_cast<size_t>(n));  // the hook sees every completion once
    for (const auto& [op, target, ticket] : calls) {
      EXPECT_EQ(op, fc.op);
      EXPECT_EQ(target, ticket_extent.at(ticket));
    }
    for (const auto& [ticket, c] : done) {
      const int64_t e = ticket_extent.at(ticket);
      EXPECT_EQ(c.op, fc.op);
      if (ticket == victim_ticket) {
        EXPECT_EQ(c.status.code(), fc.code) << c.status.to_string();
        if (fc.code != StatusCode::kOk) {
          EXPECT_THAT(c.status.message(), HasSubstr(fc.message));
          EXPECT_THAT(c.status.message(), HasSubstr("extent " + std::to_string(victim) + " "));
        }
      } else {
        EXPECT_TRUE(c.status.is_ok()) << c.status.to_string();
      }
      if (fc.op == DiskOp::kRead && ticket != victim_ticket) {
        EXPECT_EQ(std::memcmp(src.data() + e * extent, dst.data() + e * extent, extent), 0);
      }
    }
    store->set_fault_hook_for_testing(nullptr);
    if (fc.op == DiskOp::kWrite) {
      // A failed write leaves the extent without data (reading it would be a bug); a corrupt
      // write leaves a checksum that the next read rejects. Every other extent reads back.
      const bool corrupt = fc.fault == DiskFault::kCorrupt;
      EXPECT_EQ(store->has_data(victim), corrupt);
      uint64_t victim_read = 0;
      for (int64_t e = 0; e < n; ++e) {
        if (e == victim && !corrupt) continue;
        const uint64_t t = store->submit_read(e, dst.data() + e * extent, extent);
        if (e == victim) victim_read = t;
      }
      for (const auto& [ticket, c] : drain(*store)) {
        if (ticket == victim_read) {
          EXPECT_EQ(c.status.code(), StatusCode::kDataLoss);
          EXPECT_THAT(c.status.message(), HasSubstr("checksum mismatch"));
          EXPECT_THAT(c.status.message(), HasSubstr("extent 5 "));
        } else {
          EXPECT_TRUE(c.status.is_ok()) << c.status.to_string();
        }
      }
      for (int64_t e = 0; e < n; ++e) {
        if (e == victim) continue;
        EXPECT_EQ(std::memcmp(src.data() + e * extent, dst.data() + e * extent, extent), 0) << e;
      }
      // The failed extent can be written again and then read.
      store->submit_write(victim, src.data() + victim * extent, extent);
      for (const auto& [t, c] : drain(*store)) ASSERT_TRUE(c.status.is_ok());
    }
    // After a read fault the data on disk is intact: a retry succeeds.
    std::memset(dst.data() + victim * extent, 0, extent);
    store->submit_read(victim, dst.data() + victim * extent, extent);
    for (const auto& [t, c] : drain(*store)) ASSERT_TRUE(c.status.is_ok()) << c.status.message();
    EXPECT_EQ(std::memcmp(src.data() + victim * extent, dst.data() + victim * extent, extent), 0);
  }
  EXPECT_FALSE(std::filesystem::exists(private_dir)) << "removed after I/O errors too";
}

INSTANTIATE_TEST_SUITE_P(
    Faults, DiskStoreFaultTest,
    ::testing::Values(FaultCase{"WriteEnospc", DiskOp::kWrite, DiskFault::kEnospc,
                                StatusCode::kResourceExhausted, "No space left on device"},
                      FaultCase{"WriteEio", DiskOp::kWrite, DiskFault::kEio, StatusCode::kIoError,
                                "Input/output error"},
                      FaultCase{"WriteShort", DiskOp::kWrite, DiskFault::kShortRead,
                                StatusCode::kIoError, "short write, 12288 of 16384 bytes"},
                      FaultCase{"WriteCorrupt", DiskOp::kWrite, DiskFault::kCorrupt,
                                StatusCode::kOk, ""},
                      FaultCase{"ReadEio", DiskOp::kRead, DiskFault::kEio, StatusCode::kIoError,
                                "Input/output error"},
                      FaultCase{"ReadEnospc", DiskOp::kRead, DiskFault::kEnospc,
                                StatusCode::kResourceExhausted, "No space left"},
                      FaultCase{"ReadShort", DiskOp::kRead, DiskFault::kShortRead,
                                StatusCode::kDataLoss, "short read, 12288 of 16384 bytes"},
                      FaultCase{"ReadCorrupt", DiskOp::kRead, DiskFault::kCorrupt,
                                StatusCode::kDataLoss, "checksum mismatch"}),
    [](const auto& info) { return std::string(info.param.name); });

// Corruption behind the store's back: a byte of the extents file changed through another fd.
TEST_F(DiskStoreTest, RealCorruptionOnDiskIsDataLoss) {
  const uint64_t extent = 16 * 1024;
  const int64_t n = 4;
  auto store = make(options(extent, n, 4));
  ASSERT_NE(store, nullptr);
  AlignedBuffer src(extent * n), dst(extent * n);
  write_extents(*store, src, n, extent);
  const int fd = open(store->extent_file_path().c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  const off_t where = static_cast<off_t>(2 * extent + 1234);
  uint8_t byte = 0;
  ASSERT_EQ(pread(fd, &byte, 1, where), 1);
  EXPECT_EQ(byte, src.data()[2 * extent + 1234]);
  byte ^= 0x01;
  ASSERT_EQ(pwrite(fd, &byte, 1, where), 1);
  ASSERT_EQ(fsync(fd), 0);
  close(fd);
  std::map<uint64_t, int64_t> ticket_extent;
  for (int64_t e = 0; e < n; ++e)
    ticket_extent[store->submit_read(e, dst.data() + e * extent, extent)] = e;
  for (const auto& [ticket, c] : drain(*store)) {
    const int64_t e = ticket_extent.at(ticket);
    if (e == 2) {
      EXPECT_EQ(c.status.code(), StatusCode::kDataLoss);
      EXPECT_THAT(c.status.message(), HasSubstr("checksum mismatch"));
      EXPECT_THAT(c.status.message(), HasSubstr("read of extent 2 (16384 bytes at offset 32768"));
    } else {
      EXPECT_TRUE(c.status.is_ok()) << c.status.to_string();
      EXPECT_EQ(std::memcmp(src.data() + e * extent, dst.data() + e * extent, extent), 0);
    }
  }
}

// A 3-page + 100-byte file with known bytes, read through open_file, with O_DIRECT or buffered
// (where the kernel leaves the buffer past the end of the file untouched).
class DiskStoreFileTest : public DiskStoreTest, public ::testing::WithParamInterface<bool> {};

TEST_P(DiskStoreFileTest, FileReadsAtAlignedOffsetsWithChecksums) {
  DiskStoreOptions o = options(8192, 2, 4);
  o.direct_io = GetParam();
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  const uint64_t size = 3 * kPage + 100;
  std::vector<uint8_t> content(size);
  fill_random(content.data(), size, 9);
  const std::filesystem::path path = dir_ / "model.safetensors";
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(content.data()), static_cast<std::streamsize>(size));
  auto file = store->open_file(path);
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  AlignedBuffer dst(3 * kPage);
  const iovec iov = dst.iov();
  ASSERT_TRUE(store->register_buffers({&iov, 1}).is_ok());

  // Inside the file, the right CRC: ok and the exact bytes.
  const uint32_t good = crc32c(content.data() + kPage, 2 * kPage);
  store->submit_file_read(file.value(), kPage, dst.data(), 2 * kPage, good);
  for (const auto& [t, c] : drain(*store)) {
    EXPECT_TRUE(c.status.is_ok()) << c.status.to_string();
    EXPECT_EQ(c.op, DiskOp::kFileRead);
  }
  EXPECT_EQ(std::memcmp(dst.data(), content.data() + kPage, 2 * kPage), 0);

  // A wrong CRC, and no CRC at all.
  store->submit_file_read(file.value(), kPage, dst.data(), 2 * kPage, good ^ 1);
  for (const auto& [t, c] : drain(*store)) {
    EXPECT_EQ(c.status.code(), StatusCode::kDataLoss);
    EXPECT_THAT(c.status.message(), HasSubstr("checksum mismatch"));
    EXPECT_THAT(c.status.message(), HasSubstr(path.string()));
  }
  store->submit_file_read(file.value(), 0, dst.data(), kPage);
  for (const auto& [t, c] : drain(*store)) EXPECT_TRUE(c.status.is_ok());
  EXPECT_EQ(std::memcmp(dst.data(), content.data(), kPage), 0);

  // Running past the end: the 100 bytes there are read and checked, the rest of dst zeroed.
  std::memset(dst.data(), 0xAB, dst.bytes());
  store->submit_file_read(file.value(), 3 * kPage, dst.data(), 2 * kPage,
                          crc32c(content.data() + 3 * kPage, 100));
  for (const auto& [t, c] : drain(*store)) EXPECT_TRUE(c.status.is_ok()) << c.status.to_string();
  EXPECT_EQ(std::memcmp(dst.data(), content.data() + 3 * kPage, 100), 0);
  for (uint64_t i = 100; i < 2 * kPage; ++i) ASSERT_EQ(dst.data()[i], 0) << i;

  // An injected corruption caught by the expected CRC.
  store->set_fault_hook_for_testing([&](DiskOp op, int64_t f, uint64_t) {
    EXPECT_EQ(op, DiskOp::kFileRead);
    EXPECT_EQ(f, file.value());
    return DiskFault::kCorrupt;
  });
  store->submit_file_read(file.value(), kPage, dst.data(), 2 * kPage, good);
  for (const auto& [t, c] : drain(*store)) EXPECT_EQ(c.status.code(), StatusCode::kDataLoss);
  store->set_fault_hook_for_testing(nullptr);

  // The file truncated after open: a real short read.
  std::filesystem::resize_file(path, kPage + 10);
  store->submit_file_read(file.value(), 0, dst.data(), 3 * kPage);
  for (const auto& [t, c] : drain(*store)) {
    EXPECT_EQ(c.status.code(), StatusCode::kDataLoss) << c.status.to_string();
    EXPECT_THAT(c.status.message(), HasSubstr("short read, 4106 of 12288 bytes"));
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, DiskStoreFileTest, ::testing::Bool(), [](const auto& info) {
  return std::string(info.param ? "Direct" : "Buffered");
});

TEST_F(DiskStoreTest, OpenFileErrorsNameThePath) {
  auto store = make(options(8192, 2, 4));
  ASSERT_NE(store, nullptr);
  auto missing = store->open_file(dir_ / "nope.safetensors");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.safetensors"));
  auto directory = store->open_file(dir_);
  ASSERT_FALSE(directory.is_ok());
  EXPECT_EQ(directory.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(directory.status().message(), HasSubstr("not a regular file"));
}

TEST_F(DiskStoreTest, DestructionWaitsForInFlightIo) {
  const uint64_t extent = 64 * 1024;
  AlignedBuffer src(extent * 32);
  fill_random(src.data(), src.bytes(), 4);
  std::filesystem::path private_dir;
  {
    auto store = make(options(extent, 32, 4));
    ASSERT_NE(store, nullptr);
    private_dir = store->directory();
    for (int i = 0; i < 32; ++i) {
      const int64_t e = store->allocate_extent().value();
      store->submit_write(e, src.data() + e * extent, extent);
    }
    (void)store->poll();  // some in the kernel, some queued
    EXPECT_GT(store->in_flight(), 0);
  }
  EXPECT_FALSE(std::filesystem::exists(private_dir));
}

using DiskStoreDeathTest = DiskStoreTest;

TEST_F(DiskStoreDeathTest, MisuseIsABug) {
  auto store = make(options(8192, 4, 4));
  ASSERT_NE(store, nullptr);
  AlignedBuffer buf(8192);
  const int64_t e = store->allocate_extent().value();
  EXPECT_DEATH(store->submit_read(e, buf.data(), 8192), "holds no data");
  EXPECT_DEATH(store->submit_write(3, buf.data(), 8192), "unallocated extent 3");
  EXPECT_DEATH(store->submit_write(e, buf.data() + 1, 4096), "not 4096-byte aligned");
  EXPECT_DEATH(store->submit_write(e, buf.data(), 100), "positive multiple of 4096");
  EXPECT_DEATH(store->submit_write(e, buf.data(), 16384), "positive multiple of 4096");
  EXPECT_DEATH(store->free_extent(2), "free of unallocated extent 2");
  store->submit_write(e, buf.data(), 8192);
  EXPECT_DEATH(store->free_extent(e), "with I/O in flight");
  EXPECT_DEATH(store->submit_write(e, buf.data(), 8192), "with I/O in flight");
  for (const auto& [t, c] : drain(*store)) ASSERT_TRUE(c.status.is_ok());
  EXPECT_DEATH(store->submit_read(e, buf.data(), 4096), "must ask for the bytes written");
}

}  // namespace
}  // namespace tierserve
