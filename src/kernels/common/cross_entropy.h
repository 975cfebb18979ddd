// The result of the fused softmax + cross-entropy forward kernels (cpu/softmax.h,
// cuda/softmax.h).
#pragma once
#include <cstdint>

namespace tessera::kernels {

struct CrossEntropySum {
  double loss = 0;    // sum over counted rows of -log softmax(logits)[target]
  int64_t count = 0;  // rows whose target is not ignore_index
};

}  // namespace tessera::kernels
