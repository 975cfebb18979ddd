#include "cuda/cuda_check.h"

#include <cublasLt.h>
#include <nccl.h>

#include "core/error.h"

namespace tessera::cuda {

std::string describe(cudaError_t err) {
  return fmt::format("{}: {}", cudaGetErrorName(err), cudaGetErrorString(err));
}

void fail_cuda(cudaError_t err, const char* call, const char* file, int line) {
  // Clear the sticky "last error" of non-fatal failures so the next check reports its own.
  (void)cudaGetLastError();
  fail("CUDA error in {} ({}:{}): {}", call, file, line, describe(err));
}

void fail_cublas(int status, const char* call, const char* file, int line) {
  fail("cuBLASLt error in {} ({}:{}): {} ({})", call, file, line,
       cublasLtGetStatusName(cublasStatus_t(status)), status);
}

void fail_nccl(int result, const char* call, const char* file, int line) {
  fail("NCCL error in {} ({}:{}): {} ({})", call, file, line,
       ncclGetErrorString(ncclResult_t(result)), result);
}

}  // namespace tessera::cuda
