#include "nn/tensor_parallel.h"

#include <cstring>

#include "autograd/engine.h"
#include "core/error.h"
#include "ops/ops.h"

namespace tessera::nn {

IndexRange even_part(int64_t n, int part, int parts) {
  TS_CHECK(parts > 0 && part >= 0 && part < parts && n >= 0, "even_part: part {} of {} of {}", part,
           parts, n);
  const int64_t base = n / parts, extra = n % parts;
  const int64_t begin = part * base + std::min<int64_t>(part, extra);
  return {begin, begin + base + (part < extra ? 1 : 0)};
}

Tensor take_blocks(const Tensor& whole0, int dim, const std::vector<IndexRange>& blocks) {
  TS_CHECK((whole0.device().is_cpu() || whole0.device().is_meta()) &&
               (dim == 0 || (dim == 1 && whole0.ndim() == 2)) && whole0.ndim() >= 1 &&
               whole0.ndim() <= 2,
           "take_blocks: {} along dim {}: expected a 1-D or 2-D CPU (or meta) tensor, dim 0 or 1",
           whole0.desc(), dim);
  const Tensor whole = whole0.to(DType::f32).contiguous();
  const int64_t rows = whole.dim(0), cols = whole.ndim() == 2 ? whole.dim(1) : 1;
  const int64_t extent = dim == 0 ? rows : cols;
  int64_t total = 0;
  for (const IndexRange& b : blocks) {
    TS_CHECK(b.begin >= 0 && b.begin <= b.end && b.end <= extent,
             "take_blocks: block [{}, {}) outside dim {} of {}", b.begin, b.end, dim, whole.desc());
    total += b.size();
  }
  std::vector<int64_t> dims = whole.shape().vec();
  dims[size_t(dim)] = total;
  // A model built on the meta device (a plan) is cut by shape alone.
  if (whole.device().is_meta()) return Tensor::empty(Shape(dims), DType::f32, whole.device());
  Tensor out = Tensor::empty(Shape(dims));
  const float* src = whole.data<float>();
  float* dst = out.data<float>();
  if (dim == 0) {
    for (const IndexRange& b : blocks) {
      std::memcpy(dst, src + b.begin * cols, size_t(b.size() * cols) * sizeof(float));
      dst += b.size() * cols;
    }
    return out;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (const IndexRange& b : blocks) {
      std::memcpy(dst, src + r * cols + b.begin, size_t(b.size()) * sizeof(float));
      dst += b.size();
    }
  return out;
}

namespace {

// The f32 contiguous copy a collective works on in place (x itself is never written).
// x as the contiguous f32 tensor an all-gather or reduce-scatter reads (x itself when it is
// one: those collectives never write their input).
Tensor f32_input(const Tensor& x) {
  return x.to(DType::f32).contiguous();
}

Tensor f32_copy(const Tensor& x) {
  Tensor c = x.to(DType::f32).contiguous();
  return c.raw_data() == x.raw_data() ? c.clone() : c;
}

}  // namespace

Tensor tp_copy(const Tensor& x, TensorParallelGroup& group) {
  TensorParallelGroup* g = &group;
  return autograd::record(x.detach(), "tp_copy", {x}, [g](const Tensor& grad) {
    Tensor sum = f32_copy(grad);
    g->all_reduce_sum(sum);
    return std::vector<Tensor>{sum};
  });
}

Tensor tp_reduce(const Tensor& x, TensorParallelGroup& group) {
  Tensor sum = f32_copy(x);
  group.all_reduce_sum(sum);
  return autograd::record(sum, "tp_reduce", {x},
                          [](const Tensor& grad) { return std::vector<Tensor>{grad}; });
}

Tensor tp_gather_last_dim(const Tensor& x0, TensorParallelGroup& group, int64_t n) {
  const int R = group.size(), me = group.rank();
  const int64_t mine = x0.dim(-1);
  TS_CHECK(mine == even_part(n, me, R).size(),
           "tp_gather_last_dim: rank {} holds {} columns, expected {} of {}", me, x0.desc(),
           even_part(n, me, R).size(), n);
  const int64_t rows = mine ? x0.numel() / mine : 0;
  // Every rank sends an equal block: its columns padded to the widest part, then the parts are
  // joined on the host (a generation-time path: small tensors).
  const int64_t widest = even_part(n, 0, R).size();
  const Tensor x = x0.to(DType::f32).contiguous().to(Device::cpu());
  Tensor padded = Tensor::zeros(Shape{rows, widest});
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(padded.data<float>() + r * widest, x.data<float>() + r * mine,
                size_t(mine) * sizeof(float));
  const Device dev = x0.device();
  Tensor all = Tensor::empty(Shape{int64_t(R), rows, widest}, DType::f32, dev);
  group.all_gather(dev.is_cpu() ? padded : padded.to(dev), all, group.equal_counts(rows * widest));
  const Tensor host = all.to(Device::cpu());
  std::vector<int64_t> dims = x0.shape().vec();
  dims.back() = n;
  Tensor out = Tensor::empty(Shape(dims));
  for (int k = 0; k < R; ++k) {
    const IndexRange p = even_part(n, k, R);
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(out.data<float>() + r * n + p.begin,
                  host.data<float>() + (int64_t(k) * rows + r) * widest,
                  size_t(p.size()) * sizeof(float));
  }
  const IndexRange own = even_part(n, me, R);
  return autograd::record(dev.is_cpu() ? out : out.to(dev), "tp_gather_last_dim", {x0},
                          [own, n, rows](const Tensor& grad) {
                            const Tensor g = grad.to(DType::f32).contiguous().to(Device::cpu());
                            Tensor mine_grad = take_blocks(g.view(Shape{rows, n}), 1, {own});
                            std::vector<int64_t> d = grad.shape().vec();
                            d.back() = own.size();
                            return std::vector<Tensor>{mine_grad.view(Shape(d)).to(grad.device())};
                          });
}

std::vector<int64_t> SequenceShard::counts(int64_t width) const {
  std::vector<int64_t> c;
  for (int k = 0; k < group->size(); ++k)
    c.push_back(even_part(total(), k, group->size()).size() * width);
  return c;
}

SequenceShard sequence_shard(TensorParallelGroup& group, int64_t batch, int64_t seq_len) {
  SequenceShard s;
  s.group = &group;
  s.batch = batch, s.seq_len = seq_len;
  s.rows = even_part(batch * seq_len, group.rank(), group.size());
  return s;
}

namespace {

// The whole [B*T, C] from every rank's rows (forward of sp_gather, backward of
// sp_reduce_scatter).
Tensor gather_rows(const Tensor& mine, const SequenceShard& s, int64_t C) {
  Tensor all = Tensor::empty(Shape{s.total(), C}, DType::f32, mine.device());
  s.group->all_gather(f32_input(mine), all, s.counts(C));
  return all;
}

// This rank's rows of the sum over ranks of a whole [B*T, C].
Tensor scatter_rows(const Tensor& whole, const SequenceShard& s, int64_t C) {
  Tensor mine = Tensor::empty(Shape{s.rows.size(), C}, DType::f32, whole.device());
  s.group->reduce_scatter_sum(f32_input(whole), mine, s.counts(C));
  return mine;
}

}  // namespace

Tensor cp_gather_sequence(const Tensor& kv0, const ContextShard& s) {
  const int c = s.group->size();
  const int64_t B = s.batch, Tc = s.chunk, W = kv0.dim(-1), block = B * Tc * W;
  TS_CHECK(kv0.ndim() == 3 && kv0.dim(0) == 2 * B && kv0.dim(1) == Tc,
           "context parallelism: gathering {}, expected this rank's two chunks [{}, {}, W]",
           kv0.desc(), 2 * B, Tc);
  // Gathered block 2 i + slot is rank i's chunk of that slot; position chunk k comes from
  // block 2k (k < c: first slots in rank order) or 2 (2c - 1 - k) + 1 (second slots, reversed).
  auto source = [c](int k) { return k < c ? 2 * k : 2 * (2 * c - 1 - k) + 1; };
  Tensor gathered = Tensor::empty(Shape{2 * int64_t(c), block}, DType::f32, kv0.device());
  s.group->all_gather(f32_input(kv0), gathered, s.group->equal_counts(2 * block));
  Tensor ordered = Tensor::empty(Shape{2 * int64_t(c), B, Tc * W}, DType::f32, kv0.device());
  for (int k = 0; k < 2 * c; ++k)
    ordered.view(Shape{2 * int64_t(c), block})
        .slice_rows(k, k + 1)
        .copy_from(gathered.slice_rows(source(k), source(k) + 1));
  Tensor y = ordered.transpose_view(0, 1).contiguous().view(Shape{B, s.seq_len(), W});
  const ContextShard shard = s;
  return autograd::record(
      y, "cp_gather_sequence", {kv0}, [shard, source, c, B, Tc, W, block](const Tensor& g) {
        // The gradient's chunks back in gathered order, then each rank's two summed to it.
        const Tensor by_chunk = g.to(DType::f32)
                                    .contiguous()
                                    .view(Shape{B, 2 * int64_t(c), Tc * W})
                                    .transpose_view(0, 1)
                                    .contiguous()
                                    .view(Shape{2 * int64_t(c), block});
        Tensor blocks = Tensor::empty(Shape{2 * int64_t(c), block}, DType::f32, g.device());
        for (int k = 0; k < 2 * c; ++k)
          blocks.slice_rows(source(k), source(k) + 1).copy_from(by_chunk.slice_rows(k, k + 1));
        Tensor mine = Tensor::empty(Shape{2 * B, Tc, W}, DType::f32, g.device());
        shard.group->reduce_scatter_sum(blocks, mine, shard.group->equal_counts(2 * block));
        return std::vector<Tensor>{mine};
      });
}

Tensor sp_gather(const Tensor& x, const SequenceShard& s) {
  TS_CHECK(x.ndim() == 2 && x.dim(0) == s.rows.size(),
           "sequence parallelism: gathering {}, expected this rank's {} rows [{}, C]", x.desc(),
           s.rows.size(), s.rows.size());
  const int64_t C = x.dim(1);
  const SequenceShard shard = s;
  Tensor y = gather_rows(x, s, C).view(Shape{s.batch, s.seq_len, C});
  return autograd::record(y, "sp_gather", {x}, [shard, C](const Tensor& g) {
    return std::vector<Tensor>{
        scatter_rows(g.contiguous().view(Shape{shard.total(), C}), shard, C)};
  });
}

Tensor sp_reduce_scatter(const Tensor& x, const SequenceShard& s) {
  const int64_t C = x.dim(-1);
  TS_CHECK(x.numel() == s.total() * C,
           "sequence parallelism: reduce-scattering {}, expected [{}, {}, C]", x.desc(), s.batch,
           s.seq_len);
  const SequenceShard shard = s;
  const Shape shape = x.shape();
  Tensor y = scatter_rows(x.contiguous().view(Shape{s.total(), C}), s, C);
  return autograd::record(y, "sp_reduce_scatter", {x}, [shard, C, shape](const Tensor& g) {
    return std::vector<Tensor>{gather_rows(g.contiguous(), shard, C).view(shape)};
  });
}

}  // namespace tessera::nn
