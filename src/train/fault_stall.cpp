#include "train/fault_stall.h"

#include <string>

#include "core/error.h"

namespace tessera::train {
namespace {

// Reads 1..max_digits decimal digits from the front of `text`, then `sep` (or the end when sep
// is 0); nullopt otherwise.
std::optional<int64_t> take_number(std::string_view& text, size_t max_digits, char sep) {
  size_t n = 0;
  int64_t v = 0;
  while (n < text.size() && text[n] >= '0' && text[n] <= '9') {
    if (++n > max_digits) return std::nullopt;
    v = v * 10 + (text[n - 1] - '0');
  }
  if (n == 0) return std::nullopt;
  text.remove_prefix(n);
  if (sep == 0) {
    if (!text.empty()) return std::nullopt;
  } else {
    if (text.empty() || text[0] != sep) return std::nullopt;
    text.remove_prefix(1);
  }
  return v;
}

}  // namespace

std::optional<FaultStall> parse_fault_stall(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::string_view rest = text;
  const std::optional<int64_t> rank = take_number(rest, 6, ':');
  const std::optional<int64_t> step = rank ? take_number(rest, 12, ':') : std::nullopt;
  const std::optional<int64_t> seconds = step ? take_number(rest, 6, 0) : std::nullopt;
  TS_CHECK(seconds.has_value(),
           "environment variable TESSERA_FAULT_STALL = '{}': expected RANK:STEP:SECONDS, three "
           "decimal integers (at most 6, 12 and 6 digits)",
           std::string(text));
  return FaultStall{int(*rank), *step, *seconds};
}

}  // namespace tessera::train
