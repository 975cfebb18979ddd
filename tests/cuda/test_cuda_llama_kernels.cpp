// The kernels Llama adds, CUDA against CPU on fresh random inputs: rotary position embeddings
// (forward and inverse rotation, grouped-query layouts, position offsets) and SwiGLU (forward
// into every output type, backward), in f32, bf16 and f16. (Grouped-query attention:
// test_cuda_kernels_nn.cpp and test_cuda_attention_tc.cpp; the ops: test_cuda_gpt.cpp.)
// Without a device every test is skipped.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/common/rope.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/swiglu.h"
#include "ops/rope_table.h"

using namespace tessera;
using namespace tessera::cudatest;

namespace {

class CudaLlamaKernels : public CudaTest {};

template <class T>
void check_rope(Rng& rng, const kernels::RopeDims& d, bool inverse) {
  const int64_t width = kernels::rope_row_width(d), rows = d.batch * d.seq;
  const std::string name = std::string("rope") + (inverse ? " inverse" : "") + " H" +
                           std::to_string(d.heads) + " kv" + std::to_string(d.kv_heads) + " hs" +
                           std::to_string(d.head_size) + " offset" +
                           std::to_string(d.position_offset);
  std::vector<double> f = ops::rope_inverse_frequencies(d.head_size, 500000.0);
  f = ops::llama3_scale_frequencies(f, ops::Llama3RopeScaling{});
  const std::vector<float> table = ops::rope_table(f, d.position_offset + d.seq).to_vector();
  const std::vector<T> x = to_storage<T>(rng.normal(size_t(rows * width)));
  std::vector<T> y(x.size());
  cpu::rope_rotate<T>(d, x.data(), table.data(), y.data(), inverse);
  DevBuf<T> gx(x), gy(x.size());
  DevBuf<float> gtable(table);
  cuda::rope_rotate<T>(d, gx.get(), gtable.get(), gy.get(), inverse);
  const std::vector<float> got = to_float(gy.download()), in = to_float(x);
  expect_close(name, type_name<T>(), got, to_float(y), tol<T>());
  // The v heads are copied: the same values.
  const int64_t v0 = kernels::rope_rotated_heads(d) * d.head_size;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = v0; c < width; ++c)
      ASSERT_EQ(got[size_t(r * width + c)], in[size_t(r * width + c)]) << name << ": v changed";
}

kernels::RopeDims rope_dims(int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t hs,
                            int64_t offset) {
  kernels::RopeDims d;
  d.batch = B, d.seq = T, d.heads = H, d.kv_heads = Hkv, d.head_size = hs;
  d.position_offset = offset;
  return d;
}

TEST_F(CudaLlamaKernels, RopeMatchesCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  for (const kernels::RopeDims& d : {rope_dims(2, 33, 8, 2, 64, 0),
                                     rope_dims(1, 7, 4, 1, 128, 1000), rope_dims(3, 5, 3, 3, 6, 2)})
    for (bool inverse : {false, true}) {
      check_rope<float>(rng, d, inverse);
      check_rope<bf16>(rng, d, inverse);
      check_rope<f16>(rng, d, inverse);
    }
}

// Forward into TO from TI, backward in T: against the CPU on the same inputs.
template <class TI, class TO>
void check_swiglu_forward(Rng& rng, int64_t rows, int64_t F) {
  const std::vector<TI> x = to_storage<TI>(rng.normal(size_t(rows * 2 * F), 2.f));
  std::vector<TO> y(size_t(rows * F));
  cpu::swiglu_forward<TI, TO>(x.data(), y.data(), rows, F);
  DevBuf<TI> gx(x);
  DevBuf<TO> gy(y.size());
  cuda::swiglu_forward<TI, TO>(gx.get(), gy.get(), rows, F);
  expect_close(std::string("swiglu fwd from ") + type_name<TI>() + " F" + std::to_string(F),
               type_name<TO>(), to_float(gy.download()), to_float(y), tol<TO>());
}

template <class T>
void check_swiglu_backward(Rng& rng, int64_t rows, int64_t F) {
  const std::vector<T> x = to_storage<T>(rng.normal(size_t(rows * 2 * F), 2.f));
  const std::vector<float> g = rng.normal(size_t(rows * F));
  std::vector<T> gx(x.size());
  cpu::swiglu_backward<T>(x.data(), g.data(), gx.data(), rows, F);
  DevBuf<T> dx(x), dgx(x.size());
  DevBuf<float> dg(g);
  cuda::swiglu_backward<T>(dx.get(), dg.get(), dgx.get(), rows, F);
  expect_close("swiglu bwd F" + std::to_string(F), dgx.download(), gx);
}

TEST_F(CudaLlamaKernels, SwigluMatchesCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  for (int64_t F : {1, 37, 256}) {
    check_swiglu_forward<float, float>(rng, 13, F);
    check_swiglu_forward<float, bf16>(rng, 13, F);  // under bf16 autocast
    check_swiglu_forward<float, f16>(rng, 13, F);
    check_swiglu_forward<bf16, bf16>(rng, 13, F);
    check_swiglu_forward<f16, f16>(rng, 13, F);
    check_swiglu_backward<float>(rng, 13, F);
    check_swiglu_backward<bf16>(rng, 13, F);
    check_swiglu_backward<f16>(rng, 13, F);
  }
}

}  // namespace
