// Errors at Tessera's boundaries: one exception type whose message says what was called,
// with which shapes or which file and field, and what was expected.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace tessera {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace tessera

// TS_CHECK(cond, "op: expected {}, got {}", a, b) throws tessera::Error when cond is false.
#define TS_CHECK(cond, ...)                    \
  do {                                         \
    if (!(cond)) ::tessera::fail(__VA_ARGS__); \
  } while (0)

// Internal invariants: a failure is a Tessera bug, not bad input.
#define TS_ASSERT(cond)                                                                    \
  do {                                                                                     \
    if (!(cond)) ::tessera::fail("internal error: {} ({}:{})", #cond, __FILE__, __LINE__); \
  } while (0)
