// The one time base of distributed training: seconds on the steady clock. Work handles stamp
// their start and completion with it, and traces (trace.h) convert it to microseconds.
#pragma once
#include <chrono>

namespace tessera::dist {

inline double monotonic_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace tessera::dist
