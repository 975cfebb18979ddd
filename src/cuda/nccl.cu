#include "cuda/nccl.h"

#include <nccl.h>

#include "cuda/cuda_check.h"

namespace tessera::cuda {

int nccl_version() {
  int v = 0;
  NCCL_CHECK(ncclGetVersion(&v));
  return v;
}

std::string nccl_version_string() {
  // Codes since 2.9 are major * 10000 + minor * 100 + patch.
  const int v = nccl_version();
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}

}  // namespace tessera::cuda
