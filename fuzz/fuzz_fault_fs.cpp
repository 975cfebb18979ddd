// Fuzzes TESSERA_FAULT_FS's parser (parse_fault_fs_setting, src/core/file_system.cpp): the
// value `tessera train` reads from its environment to write checkpoints through a filling disk.
// Any bytes either parse or throw an Error that quotes them with the expected form; what parses
// is `enospc`, then up to two `:`-separated decimals of at most 18 digits, and a value written
// back in that form parses to the same setting.
//
// Input layout: the variable's value.
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "core/file_system.h"
#include "fuzz_common.h"

using namespace tessera;

namespace {

// The grammar, checked independently of the parser: enospc(:DIGITS{1,18}){0,2}.
bool well_formed(std::string_view v) {
  if (!v.starts_with("enospc")) return false;
  v.remove_prefix(6);
  for (int fields = 0; !v.empty(); ++fields) {
    if (fields == 2 || v[0] != ':') return false;
    v.remove_prefix(1);
    size_t digits = 0;
    while (digits < v.size() && v[digits] >= '0' && v[digits] <= '9') ++digits;
    if (digits == 0 || digits > 18) return false;
    v.remove_prefix(digits);
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view value(reinterpret_cast<const char*>(data), size);
  const std::optional<FillingDiskSetting> s = fuzz::check_env_setting(
      value, parse_fault_fs_setting, well_formed, "TESSERA_FAULT_FS", "enospc[:BYTES[:SECONDS]]");
  if (!s) return 0;
  // 18 digits: below 10^18 (as a double, SECONDS rounds to at most 10^18 itself).
  if (s->free_bytes >= 1000000000000000000ull || s->full_for_s > 1e18 ||
      (s->full_for_s < 0 && s->full_for_s != -1))
    fuzz::property_failed("a value out of range");
  // Written back: SECONDS only where the double holds it exactly (below 2^53).
  const bool exact = s->full_for_s < 9007199254740992.0;
  const std::string back = s->full_for_s < 0 || !exact
                               ? fmt::format("enospc:{}", s->free_bytes)
                               : fmt::format("enospc:{}:{:.0f}", s->free_bytes, s->full_for_s);
  const std::optional<FillingDiskSetting> again = parse_fault_fs_setting(back);
  if (!again || again->free_bytes != s->free_bytes || (exact && again->full_for_s != s->full_for_s))
    fuzz::property_failed("changed when written back: " + back);
  return 0;
}
