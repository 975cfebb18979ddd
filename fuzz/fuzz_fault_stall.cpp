// Fuzzes TESSERA_FAULT_STALL's parser (parse_fault_stall, src/train/fault_stall.h): the value
// `tessera train` reads from its environment to stall one rank's training thread. Any bytes
// either parse or throw an Error that quotes them with the expected form; what parses is three
// ':'-separated decimal integers of at most 6, 12 and 6 digits, and a setting written back in
// that form parses to the same setting.
//
// Input layout: the variable's value.
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "core/error.h"
#include "fuzz_common.h"
#include "train/fault_stall.h"

using namespace tessera;

namespace {

// The grammar, checked independently of the parser: DIGITS{1,6}:DIGITS{1,12}:DIGITS{1,6}.
bool well_formed(std::string_view v) {
  const size_t widths[] = {6, 12, 6};
  for (int field = 0; field < 3; ++field) {
    size_t digits = 0;
    while (digits < v.size() && v[digits] >= '0' && v[digits] <= '9') ++digits;
    if (digits == 0 || digits > widths[field]) return false;
    v.remove_prefix(digits);
    if (field < 2) {
      if (v.empty() || v[0] != ':') return false;
      v.remove_prefix(1);
    }
  }
  return v.empty();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view value(reinterpret_cast<const char*>(data), size);
  const std::optional<train::FaultStall> s = fuzz::check_env_setting(
      value, train::parse_fault_stall, well_formed, "TESSERA_FAULT_STALL", "RANK:STEP:SECONDS");
  if (!s) return 0;
  if (s->rank < 0 || s->rank > 999999 || s->step < 0 || s->step > 999999999999LL ||
      s->seconds < 0 || s->seconds > 999999)
    fuzz::property_failed("a value out of range");
  const std::string back = fmt::format("{}:{}:{}", s->rank, s->step, s->seconds);
  const std::optional<train::FaultStall> again = train::parse_fault_stall(back);
  if (!again || !(*again == *s)) fuzz::property_failed("changed when written back: " + back);
  return 0;
}
