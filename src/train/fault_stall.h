// TESSERA_FAULT_STALL=RANK:STEP:SECONDS, the fault-injection variable `tessera train` reads to
// make launch rank RANK's training thread sleep SECONDS after step STEP while its communication
// threads and heartbeats run on: a rank alive but stuck outside communication
// (tests/emu/train_2_ranks.sh, train_torchrun_2_ranks.sh).
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

namespace tessera::train {

struct FaultStall {
  int rank = 0;         // up to 6 digits
  int64_t step = 0;     // up to 12 digits
  int64_t seconds = 0;  // up to 6 digits: under 12 days
  bool operator==(const FaultStall&) const = default;
};

// The variable's value: nullopt when empty (no fault); three ':'-separated decimal integers
// (RANK, STEP, SECONDS) otherwise, or an Error quoting the value and the expected form.
std::optional<FaultStall> parse_fault_stall(std::string_view text);

}  // namespace tessera::train
