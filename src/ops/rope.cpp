// rope: rotary position embeddings on a fused qkv (kernels/cpu/rope.h), Hugging Face Llama's
// rotate_half pairing. The output keeps qkv's dtype; the gradient is the incoming f32 gradient
// rotated back (the inverse rotation, in f32), returned in qkv's dtype (as the activations do).
#include "kernels/cpu/rope.h"

#include "autograd/engine.h"
#include "kernels/common/rope.h"
#include "ops/check.h"
#include "ops/cost.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {
namespace {

// The dims of qkv [B, T, (n_head + 2 n_kv_head) * hs] against table [positions, 2, hs / 2],
// checked.
kernels::RopeDims checked_dims(const Tensor& qkv, const Tensor& table, int n_head, int n_kv_head,
                               int64_t position_offset) {
  const char* op = "rope";
  check_float(op, "qkv", qkv);
  check_dtype(op, "table", table, DType::f32);
  common_device(op, {{"qkv", qkv}, {"table", table}});
  TS_CHECK(n_head > 0 && n_kv_head > 0 && n_head % n_kv_head == 0,
           "rope: n_head = {}, n_kv_head = {}: expected n_kv_head > 0 dividing n_head > 0", n_head,
           n_kv_head);
  const int64_t heads_in_row = int64_t(n_head) + 2 * int64_t(n_kv_head);
  TS_CHECK(qkv.ndim() == 3 && qkv.dim(2) > 0 && qkv.dim(2) % (2 * heads_in_row) == 0,
           "rope: qkv is {}, n_head = {}, n_kv_head = {}: expected [B, T, (n_head + 2 n_kv_head) "
           "* head_size] with an even head_size (a last dim divisible by {})",
           qkv.desc(), n_head, n_kv_head, 2 * heads_in_row);
  kernels::RopeDims d;
  d.batch = qkv.dim(0), d.seq = qkv.dim(1), d.heads = n_head, d.kv_heads = n_kv_head;
  d.head_size = qkv.dim(2) / heads_in_row, d.position_offset = position_offset;
  TS_CHECK(table.ndim() == 3 && table.dim(1) == 2 && table.dim(2) == d.head_size / 2,
           "rope: table is {} for qkv {} (head size {}): expected [positions, 2, {}] (cos, sin)",
           table.desc(), qkv.desc(), d.head_size, d.head_size / 2);
  TS_CHECK(position_offset >= 0 && position_offset + d.seq <= table.dim(0),
           "rope: positions {}..{} (position_offset {}, qkv {}) past the table's {} positions "
           "(table {})",
           position_offset, position_offset + d.seq - 1, position_offset, qkv.desc(), table.dim(0),
           table.desc());
  return d;
}

// x rotated into y (x and y: qkv's shape, dtype T). Its cost: x read and y written whole, and
// the table's rows for the T positions; 3 FLOPs per rotated element (two products and a sum).
template <class T>
void rotate(const char* name, const kernels::RopeDims& d, Device dev, const T* x,
            const Tensor& table, T* y, bool inverse) {
  const int64_t n = d.batch * d.seq * (d.heads + 2 * d.kv_heads) * d.head_size;
  const double bytes =
      cost::bytes_of(2 * n, dtype_of<T>::value) + cost::bytes_of(d.seq * d.head_size, DType::f32);
  if (!meta::kernel_runs(
          dev, cost::in_dtype(meta::memory_bound_cost(name, n, bytes, 3), dtype_of<T>::value)))
    return;
  if (is_cuda(dev))
    device_kernels<T>("rope", dev).rope_rotate(d, x, table.data<float>(), y, inverse);
  else
    cpu::rope_rotate<T>(d, x, table.data<float>(), y, inverse);
}

}  // namespace

Tensor rope(const Tensor& qkv0, const Tensor& table0, int n_head, int n_kv_head,
            int64_t position_offset) {
  const char* op = "rope";
  const kernels::RopeDims d = checked_dims(qkv0, table0, n_head, n_kv_head, position_offset);
  const Device dev = qkv0.device();
  Tensor qkv = qkv0.contiguous(), table = table0.contiguous();
  Tensor y = Tensor::empty(qkv.shape(), qkv.dtype(), dev);
  dispatch_float(qkv.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    rotate<T>("rope_fwd", d, dev, qkv.data<T>(), table, y.data<T>(), false);
  });
  const DType in_dtype = qkv.dtype();
  return autograd::record(y, op, {qkv0}, [d, dev, table, in_dtype](const Tensor& g) {
    Tensor gy = g.to(DType::f32).contiguous();
    Tensor gx = Tensor::empty(gy.shape(), DType::f32, dev);
    rotate<float>("rope_bwd", d, dev, gy.data<float>(), table, gx.data<float>(), true);
    return std::vector<Tensor>{in_dtype == DType::f32 ? gx : gx.to(in_dtype)};
  });
}

}  // namespace tessera::ops
