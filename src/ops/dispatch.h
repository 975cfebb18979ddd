// Dispatch once per op, never per element: turns a runtime DType into a compile-time type, and
// picks the backend from the inputs' device.
//   dispatch_float(t.dtype(), "gelu", [&](auto tag) { using T = decltype(tag); kernel<T>(...); });
//   const Device dev = common_device("gelu", {{"x", x}});
//   if (is_cuda(dev)) device_kernels<T>(op, dev).activation_forward(...);
//   else cpu::activation_forward<T>(...);
// Every launch site first states the kernel's cost (core/meta_device.h), which the planner's
// trace records, and launches nothing on the meta device:
//   if (meta::kernel_runs(dev, meta::gemm_cost("linear_fwd", 1, m, n, k, ct))) { ...as above... }
// A device's kernels are its backend's op table (kernels/common/op_kernels.h), whose entries
// mirror the cpu:: kernels argument for argument, so a dispatched call is one branch. A build
// without the device's backend fails there, naming the op and the device (no tensor can be on
// such a device, so it is never reached in practice).
#pragma once
#include <initializer_list>

#include "core/dtype.h"
#include "core/error.h"
#include "core/meta_device.h"
#include "core/tensor.h"
#include "kernels/common/op_kernels.h"

namespace tessera::ops {

template <class F>
decltype(auto) dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32:
      return f(float{});
    case DType::bf16:
      return f(bf16{});
    case DType::f16:
      return f(f16{});
    default:
      fail("{}: no kernel for dtype {} (expected f32, bf16 or f16)", op, dtype_name(t));
  }
}

// One input of an op, by its argument name, for the device check.
struct NamedInput {
  const char* name;
  const Tensor& tensor;
};

// The device every defined input is on. Throws, naming the op and which input is where, when
// they differ (an op never moves data between devices behind the caller's back).
Device common_device(const char* op, std::initializer_list<NamedInput> inputs);

// Whether an op on device d takes its CUDA path: on a CUDA device, and on the meta device while
// it plays a GPU (meta::plays_cuda: a plan for GPUs sees the CUDA path's allocations and kernels,
// not the CPU's). Outside a kernel_runs guard a CUDA branch only allocates and shapes tensors;
// the launches (device_kernels) are all inside one, so the meta device never reaches them.
inline bool is_cuda(Device d) {
  // The meta device's host stand-in (meta::kHostIndex) always takes the host's path.
  return d.type == DeviceType::cuda || (d == Device::meta() && meta::plays_cuda());
}

// The kernels of device d (its backend's DeviceBackend::ops). An Error naming the op when this
// build has no backend for d or the backend no kernels: the op never falls back to computing on
// the host.
const kernels::OpKernels& device_kernels(const char* op, Device d);

// Those over storage type T (float, bf16 or f16).
template <class T>
const kernels::TypedOpKernels<T>& device_kernels(const char* op, Device d) {
  return device_kernels(op, d).of<T>();
}

}  // namespace tessera::ops
