// Error checking for the CUDA runtime, cuBLASLt and NCCL. Every failing call becomes a
// tessera::Error naming the call, the file and line, and the library's own description, so a
// failure deep inside a kernel launch reads like any other Tessera error.
//
// The failure functions are defined out of line (cuda_check.cu) so that this header stays free
// of fmt and the rest of core/error.h: it is included by every .cu file, and nvcc front-end time
// grows with every header it parses.
#pragma once
#include <cuda_runtime_api.h>

#include <string>

namespace tessera::cuda {

[[noreturn]] void fail_cuda(cudaError_t err, const char* call, const char* file, int line);
[[noreturn]] void fail_cublas(int status, const char* call, const char* file, int line);
[[noreturn]] void fail_nccl(int result, const char* call, const char* file, int line);

// "cudaErrorNoDevice: no CUDA-capable device is detected" for an error code.
std::string describe(cudaError_t err);

}  // namespace tessera::cuda

// CUDA_CHECK(cudaMalloc(&p, n)) throws tessera::Error when the call does not return cudaSuccess.
#define CUDA_CHECK(call)                                                   \
  do {                                                                     \
    const cudaError_t ts_cuda_err_ = (call);                               \
    if (ts_cuda_err_ != cudaSuccess)                                       \
      ::tessera::cuda::fail_cuda(ts_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here (execution errors surface at
// the next synchronising call, which CUDA_CHECK also covers).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                    \
  do {                                                                        \
    const int ts_cublas_st_ = int(call);                                      \
    if (ts_cublas_st_ != 0)                                                   \
      ::tessera::cuda::fail_cublas(ts_cublas_st_, #call, __FILE__, __LINE__); \
  } while (0)

#define NCCL_CHECK(call)                                                                        \
  do {                                                                                          \
    const int ts_nccl_res_ = int(call);                                                         \
    if (ts_nccl_res_ != 0) ::tessera::cuda::fail_nccl(ts_nccl_res_, #call, __FILE__, __LINE__); \
  } while (0)
