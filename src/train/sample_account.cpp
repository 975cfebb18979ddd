#include "train/sample_account.h"

#include <fmt/format.h>

#include <cstring>

#include "core/error.h"
#include "core/rng.h"
#include "dist/communicator.h"

namespace tessera::train {
namespace {
// Keys of the two hashes (arbitrary constants, fixed: digests are compared across runs).
constexpr uint64_t kBatchKey = 0x5341'4d50'4c45'5331ull;  // "SAMPLES1"
constexpr uint64_t kRunKey = 0x5255'4e53'414d'5031ull;    // "RUNSAMP1"
}  // namespace

void SampleAccount::add(int64_t step, const std::vector<int64_t>& ids) {
  step_ = 0;
  const uint64_t step_key = Generator::bits(kRunKey, uint64_t(step));
  for (int64_t id : ids) {
    step_ += Generator::bits(kBatchKey, uint64_t(id));
    run_ += Generator::bits(step_key, uint64_t(id));
  }
}

SampleAccount::Digests SampleAccount::global() const {
  uint64_t mine[3] = {step_, run_, run_known_ ? 0u : 1u};
  uint64_t total[3] = {0, 0, 0};
  if (!comm_ || comm_->world_size() == 1) {
    std::memcpy(total, mine, sizeof mine);
  } else {
    const std::vector<std::string> all =
        comm_->all_gather_bytes(std::string(reinterpret_cast<const char*>(mine), sizeof mine));
    for (const std::string& b : all) {
      TS_CHECK(b.size() == sizeof mine, "sample accounting: a rank sent {} bytes, expected {}",
               b.size(), sizeof mine);
      uint64_t v[3];
      std::memcpy(v, b.data(), sizeof v);
      for (int i = 0; i < 3; ++i) total[i] += v[i];  // wraps: sums modulo 2^64
    }
  }
  Digests d;
  d.step = total[0];
  if (total[2] == 0) d.run = total[1];
  return d;
}

void SampleAccount::resume(std::optional<uint64_t> run) {
  run_known_ = run.has_value();
  run_ = rank_ == 0 && run ? *run : 0;
}

std::string digest_hex(uint64_t d) {
  return fmt::format("{:#018x}", d);
}

}  // namespace tessera::train
