// The voice repository without gRPC or torch: two VoiceRegistry instances
// over one directory stand for two replicas. Atomic, checksummed writes;
// exclusive create decides conflicts; torn and corrupt files never load;
// deletions and additions reach the other replica; the device cache evicts
// and reloads; a read-only repository refuses writes with FailedPrecondition.
#include "server/voice_registry.h"

#include <dirent.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "server/voice_file.h"
#include "tests/testing/status_matchers.h"

namespace vocoder::server {
namespace {

using ::testing::HasSubstr;
using vocoder::testing::StatusIs;

// PrepareVoice validates like the real runner and counts uploads; nothing
// else is used by the registry.
class FakeVocoder final : public model::Vocoder {
 public:
  const model::Manifest& manifest() const override { return m_; }
  std::string device() const override { return "cpu"; }
  absl::StatusOr<std::shared_ptr<const model::Voice>> PrepareVoice(model::VoiceData data) override {
    if (auto s = model::ValidateVoice(data, m_); !s.ok()) return s;
    prepared.fetch_add(1);
    auto v = std::make_shared<model::Voice>();
    v->data = std::move(data);
    return std::shared_ptr<const model::Voice>(std::move(v));
  }
  absl::Status Run(absl::Span<model::VocodeJob* const>, int) override {
    return absl::UnimplementedError("fake");
  }
  std::unique_ptr<model::FlowBatch> NewFlowBatch() override { return nullptr; }
  absl::StatusOr<std::vector<model::RowId>> Admit(model::FlowBatch&,
                                                  absl::Span<model::VocodeJob* const>,
                                                  absl::Span<const int>) override {
    return absl::UnimplementedError("fake");
  }
  absl::Status Step(model::FlowBatch&) override { return absl::UnimplementedError("fake"); }
  absl::Status Retire(model::FlowBatch&, absl::Span<const model::RowId>,
                      absl::Span<model::VocodeJob* const>) override {
    return absl::UnimplementedError("fake");
  }
  absl::Status Drop(model::FlowBatch&, absl::Span<const model::RowId>) override {
    return absl::UnimplementedError("fake");
  }
  std::atomic<int> prepared{0};

 private:
  model::Manifest m_;
};

model::VoiceData Voice(int seed, int tokens = 10) {
  model::VoiceData d;
  for (int i = 0; i < tokens; ++i) d.prompt_tokens.push_back((i * 37 + seed) % 6561);
  for (int i = 0; i < 2 * tokens * 80; ++i) {
    d.prompt_feat.push_back(-5.0f + 0.001f * static_cast<float>((i + seed) % 97));
  }
  for (int i = 0; i < 192; ++i) d.embedding.push_back(0.01f * static_cast<float>((i + seed) % 13));
  return d;
}

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  while (dirent* e = d != nullptr ? readdir(d) : nullptr) {
    if (e->d_name[0] != '.' || std::string(e->d_name).rfind(".voice-tmp-", 0) == 0) {
      out.push_back(e->d_name);
    }
  }
  if (d != nullptr) closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

class VoiceRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/voice-repo-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    [[maybe_unused]] int rc = std::system(("rm -rf " + dir_).c_str());
  }
  std::unique_ptr<VoiceRegistry> Make(VoiceRegistryOptions o = {}) {
    o.dir = dir_;
    if (o.metrics == nullptr) o.metrics = &registry_;
    return std::make_unique<VoiceRegistry>(vocoder_, o);
  }
  void TwoReplicas(VoiceRegistryOptions o = {}) {
    a_ = Make(o);
    b_ = Make(o);
    ASSERT_TRUE(a_->Sync().ok());
    ASSERT_TRUE(b_->Sync().ok());
  }

  std::string dir_;
  FakeVocoder vocoder_;
  prometheus::Registry registry_;
  std::unique_ptr<VoiceRegistry> a_, b_;
};

TEST_F(VoiceRegistryTest, RegisterWritesOneChecksummedFileThatTheOtherReplicaServesAtOnce) {
  TwoReplicas();
  auto reg = a_->Register("carol", "Carol", Voice(1));
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_THAT(Names(dir_), ::testing::ElementsAre("carol.voice"));  // no temporary left

  std::ifstream in(dir_ + "/carol.voice", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  auto record = DecodeVoiceFile(bytes);
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->id, "carol");
  EXPECT_EQ(record->display_name, "Carol");

  // B has not scanned: the first Get finds it in the repository.
  auto got = b_->Get("carol");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->fingerprint, reg->fingerprint);
  EXPECT_EQ(got->create_time_unix_ms, reg->create_time_unix_ms);
  EXPECT_EQ(got->display_name, "Carol");
  ASSERT_NE(got->voice, nullptr);
  EXPECT_EQ(got->voice->data.embedding, Voice(1).embedding);
}

TEST_F(VoiceRegistryTest, DeleteOnOneReplicaIsNotFoundOnTheOtherAndLeavesItsList) {
  TwoReplicas();
  ASSERT_TRUE(a_->Register("carol", "", Voice(1)).ok());
  auto held = a_->Get("carol");  // a stream on A holds the voice
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(b_->Get("carol").ok());
  ASSERT_TRUE(b_->Delete("carol").ok());
  EXPECT_THAT(a_->Get("carol"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("carol")));
  EXPECT_THAT(b_->Delete("carol"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("carol")));
  ASSERT_TRUE(a_->Sync().ok());
  EXPECT_TRUE(a_->List().empty());
  EXPECT_EQ(held->voice->data.embedding, Voice(1).embedding);  // the stream keeps its voice
}

TEST_F(VoiceRegistryTest, ConcurrentRegistrationOfOneIdOnTwoReplicasHasExactlyOneWinner) {
  TwoReplicas();
  for (int round = 0; round < 20; ++round) {
    const std::string id = "v" + std::to_string(round);
    std::atomic<int> go{0};
    absl::StatusOr<VoiceEntry> ra, rb;
    std::thread ta([&] {
      go.fetch_add(1);
      while (go.load() < 2) {
      }
      ra = a_->Register(id, "A", Voice(100 + round));
    });
    std::thread tb([&] {
      go.fetch_add(1);
      while (go.load() < 2) {
      }
      rb = b_->Register(id, "B", Voice(200 + round));
    });
    ta.join();
    tb.join();
    ASSERT_NE(ra.ok(), rb.ok()) << id << ": " << ra.status() << " / " << rb.status();
    const auto& loser = ra.ok() ? rb : ra;
    EXPECT_THAT(loser, StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr(id)));
    // Both replicas serve the winner's content.
    const auto& winner = ra.ok() ? *ra : *rb;
    for (VoiceRegistry* r : {a_.get(), b_.get()}) {
      auto got = r->Get(id);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->fingerprint, winner.fingerprint);
    }
  }
  EXPECT_EQ(Names(dir_).size(), 20u);  // no temporaries left
}

TEST_F(VoiceRegistryTest, TornAndCorruptFilesAreNeverLoadedAndCountedOncePerVersion) {
  const std::string good = EncodeVoiceFile({"carol", "", 1, Voice(1)});
  WriteFile(dir_ + "/carol.voice", good.substr(0, good.size() / 2));  // torn
  std::string flipped = EncodeVoiceFile({"dave", "", 1, Voice(2)});
  flipped[flipped.size() / 2] ^= 0x40;
  WriteFile(dir_ + "/dave.voice", flipped);                       // corrupt
  WriteFile(dir_ + "/.voice-tmp-erin-1-2", good.substr(0, 100));  // crashed write
  WriteFile(dir_ + "/frank.voice", EncodeVoiceFile({"frank", "", 1, Voice(3)}));
  auto a = Make();
  ASSERT_TRUE(a->Sync().ok());
  ASSERT_EQ(a->List().size(), 1u);
  EXPECT_EQ(a->List()[0].id, "frank");
  EXPECT_EQ(a->load_failures(), 2);
  ASSERT_TRUE(a->Sync().ok());
  EXPECT_THAT(a->Get("carol"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("cannot be loaded")));
  EXPECT_EQ(a->load_failures(), 2);  // reported once, then ignored until it changes
  EXPECT_EQ(vocoder_.prepared.load(), 1);

  WriteFile(dir_ + "/.new", good);  // the file is replaced (atomically) by a good one
  ASSERT_EQ(rename((dir_ + "/.new").c_str(), (dir_ + "/carol.voice").c_str()), 0);
  ASSERT_TRUE(a->Sync().ok());
  EXPECT_EQ(a->List().size(), 2u);
  EXPECT_TRUE(a->Get("carol").ok());
}

TEST_F(VoiceRegistryTest, CacheEvictsLeastRecentlyUsedAndReloadsOnNextUse) {
  const int64_t one = 2 * (10 * 8 + 2 * 10 * 80 * 4 + 192 * 4);  // VoiceBytes of Voice(seed)
  VoiceRegistryOptions o;
  o.cache_bytes = 2 * one;
  a_ = Make(o);
  ASSERT_TRUE(a_->Sync().ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(a_->Register("v" + std::to_string(i), "", Voice(i)).ok());
  }
  EXPECT_EQ(a_->resident(), 2u);
  EXPECT_EQ(a_->resident_bytes(), 2 * one);
  EXPECT_EQ(a_->evictions(), 1);  // v0, the least recently used
  const int prepared = vocoder_.prepared.load();

  auto v0 = a_->Get("v0");  // reloaded from the repository; evicts v1
  ASSERT_TRUE(v0.ok()) << v0.status();
  EXPECT_EQ(v0->voice->data.embedding, Voice(0).embedding);
  EXPECT_EQ(a_->reloads(), 1);
  EXPECT_EQ(vocoder_.prepared.load(), prepared + 1);
  EXPECT_EQ(a_->resident(), 2u);

  // v0 is in use (held here like a stream holds it): evicted from the cache,
  // its next Get shares the stream's copy instead of loading again.
  ASSERT_TRUE(a_->Get("v1").ok());  // reload; evicts v2
  ASSERT_TRUE(a_->Get("v2").ok());  // reload; evicts v0
  EXPECT_EQ(a_->reloads(), 3);
  auto again = a_->Get("v0");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->voice, v0->voice);
  EXPECT_EQ(a_->reloads(), 3);  // not loaded again
}

TEST_F(VoiceRegistryTest, PollingAloneBringsAdditionsAndDeletionsToTheOtherReplica) {
  VoiceRegistryOptions o;
  o.sync_interval = std::chrono::milliseconds(20);
  o.inotify = false;  // as on a network filesystem
  TwoReplicas(o);
  b_->StartSync();
  ASSERT_TRUE(a_->Register("carol", "", Voice(1)).ok());
  auto until = [&](auto cond) {
    for (int i = 0; i < 500 && !cond(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return cond();
  };
  EXPECT_TRUE(until([&] { return b_->size() == 1; }));
  ASSERT_TRUE(a_->Delete("carol").ok());
  EXPECT_TRUE(until([&] { return b_->size() == 0; }));
}

TEST_F(VoiceRegistryTest, RejectsLongDisplayNamesAndBadIds) {
  a_ = Make();
  EXPECT_THAT(a_->Register("carol", std::string(kMaxDisplayNameBytes + 1, 'x'), Voice(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("display_name")));
  EXPECT_THAT(a_->Register(".voice-tmp-x", "", Voice(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("voice_id")));
  EXPECT_TRUE(Names(dir_).empty());
}

TEST_F(VoiceRegistryTest, ReadOnlyRepositoryServesItsVoicesAndRefusesWrites) {
  WriteFile(dir_ + "/carol.voice", EncodeVoiceFile({"carol", "", 1, Voice(1)}));
  std::string dir = dir_;
  if (geteuid() == 0) {
    // Root writes through file modes; sysfs refuses file creation to anyone.
    dir = "/sys/kernel";
    if (access(dir.c_str(), F_OK) != 0) GTEST_SKIP() << "no read-only directory for root";
  } else {
    ASSERT_EQ(chmod(dir_.c_str(), 0555), 0);
  }
  VoiceRegistryOptions o;
  o.dir = dir;
  VoiceRegistry r(vocoder_, o);
  ASSERT_TRUE(r.Sync().ok());
  if (dir == dir_) {
    EXPECT_TRUE(r.Get("carol").ok());
    EXPECT_THAT(r.Delete("carol"),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("read-only")));
  }
  EXPECT_THAT(r.Register("dave", "", Voice(2)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("read-only")));
  chmod(dir_.c_str(), 0755);
}

}  // namespace
}  // namespace vocoder::server
