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

namespace {
// cublasGetStatusName lives in libcublas, which Tessera does not otherwise need: name the
// statuses cuBLASLt returns here.
const char* cublas_status_name(int status) {
  switch (cublasStatus_t(status)) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "unknown cuBLAS status";
}
}  // namespace

void fail_cublas(int status, const char* call, const char* file, int line) {
  fail("cuBLASLt error in {} ({}:{}): {} ({})", call, file, line, cublas_status_name(status),
       status);
}

void fail_nccl(int result, const char* call, const char* file, int line) {
  fail("NCCL error in {} ({}:{}): {} ({})", call, file, line,
       ncclGetErrorString(ncclResult_t(result)), result);
}

}  // namespace tessera::cuda
