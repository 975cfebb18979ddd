// cached_attention: generation's attention through a key/value cache
// (kernels/common/cached_attention_dims.h). Inference only: it writes into the cache, so it
// records no backward and refuses inputs that require gradients.
#include "kernels/cpu/cached_attention.h"
#include "kernels/common/cached_attention_dims.h"
#include "ops/check.h"
#include "ops/cost.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {

Tensor cached_attention(const Tensor& qkv0, int n_head, int n_kv_head, Tensor& k_cache,
                        Tensor& v_cache, int64_t start) {
  const char* op = "cached_attention";
  check_defined(op, "qkv", qkv0);
  check_dtype(op, "qkv", qkv0, DType::f32);
  check_ndim(op, "qkv", qkv0, 3);
  TS_CHECK(!qkv0.requires_grad(),
           "cached_attention: qkv {} requires grad: the cache is for generation (no_grad)",
           qkv0.desc());
  TS_CHECK(n_head > 0 && n_kv_head > 0 && n_head % n_kv_head == 0,
           "cached_attention: n_kv_head {} must divide n_head {}", n_kv_head, n_head);
  const int64_t heads = n_head + 2 * int64_t(n_kv_head);
  TS_CHECK(qkv0.dim(2) % heads == 0,
           "cached_attention: qkv {} does not hold n_head + 2 n_kv_head = {} heads", qkv0.desc(),
           heads);
  kernels::CachedAttentionDims d;
  d.batch = qkv0.dim(0), d.new_tokens = qkv0.dim(1), d.heads = n_head, d.kv_heads = n_kv_head;
  d.head_size = qkv0.dim(2) / heads, d.start = start;
  for (const Tensor* c : {&k_cache, &v_cache}) {
    check_dtype(op, "cache", *c, DType::f32);
    TS_CHECK(c->is_contiguous() && c->ndim() == 4 && c->dim(0) == d.batch &&
                 c->dim(1) == n_kv_head && c->dim(3) == d.head_size,
             "cached_attention: cache {} does not fit qkv {}: expected contiguous [{}, {}, "
             "capacity, {}]",
             c->desc(), qkv0.desc(), d.batch, n_kv_head, d.head_size);
  }
  TS_CHECK(k_cache.shape() == v_cache.shape(), "cached_attention: k cache {} and v cache {} differ",
           k_cache.desc(), v_cache.desc());
  d.capacity = k_cache.dim(2);
  TS_CHECK(start >= 0 && start + d.new_tokens <= d.capacity,
           "cached_attention: positions {} .. {} do not fit a cache of {} positions", start,
           start + d.new_tokens - 1, d.capacity);
  const Device dev = common_device(op, {{"qkv", qkv0}, {"k_cache", k_cache}, {"v_cache", v_cache}});
  Tensor qkv = qkv0.contiguous();
  Tensor out = Tensor::empty(Shape{d.batch, d.new_tokens, n_head * d.head_size}, DType::f32, dev);
  if (is_cuda(dev))
    TS_CHECK(d.head_size <= 128,
             "cached_attention: head size {} on {}: the CUDA kernel takes at most 128", d.head_size,
             dev.str());
  // The new tokens are the window of queries at `start` over the cache's first start + T_new
  // positions (cost::attention_forward's count); qkv read, their k and v written into the
  // caches, every cached k and v up to the last new position read, out written.
  kernels::AttentionWindowDims w;
  w.batch = d.batch, w.q_seq = d.new_tokens, w.kv_seq = start + d.new_tokens, w.q_offset = start;
  w.channels = n_head * d.head_size, w.heads = n_head, w.kv_heads = n_kv_head;
  const double kv_bytes =
      cost::bytes_of(2 * d.batch * n_kv_head * (start + d.new_tokens) * d.head_size, DType::f32);
  const double bytes = cost::io_bytes({qkv, out}) + kv_bytes;
  if (meta::kernel_runs(dev, cost::attention_forward("cached_attention", w, DType::f32, bytes))) {
    if (is_cuda(dev))
      device_kernels(op, dev).cached_attention(d, qkv.data<float>(), k_cache.data<float>(),
                                               v_cache.data<float>(), out.data<float>());
    else
      cpu::cached_attention(d, qkv.data<float>(), k_cache.data<float>(), v_cache.data<float>(),
                            out.data<float>());
  }
  return out;
}

}  // namespace tessera::ops
