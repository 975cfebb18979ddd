// The meta device's test cases, shared by tests/test_meta_device.cpp (the meta device under the
// host model against the CPU) and tests/cuda/test_cuda_meta_device.cpp (under the CUDA model
// against the CUDA device): every op of ops/ops.h with its inputs, one run of it (forward and
// backward) with the shapes, allocations and kernels it gave, and a tiny GPT-2's step.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "core/allocator.h"
#include "core/meta_device.h"
#include "core/rng.h"
#include "nn/gpt.h"
#include "ops/autocast.h"
#include "ops/ops.h"

namespace tessera::metatest {

// The kernels the backend tables record on the meta device (core/meta_device.cpp's entries):
// copies, casts and fills run as host code on the CPU, recorded nowhere. Everything else in a
// trace is an op's own launch, recorded on every device.
inline bool backend_entry(const std::string& name) {
  static const char* kNames[] = {"memset",      "h2d",   "copy", "strided_copy",
                                 "cast",        "fill",  "add_", "scale_",
                                 "sum_squares", "adamw", "sgd",  "unscale_grads"};
  for (const char* n : kNames)
    if (name == n) return true;
  return false;
}

inline std::vector<meta::KernelCost> op_kernels(const meta::Trace& trace) {
  std::vector<meta::KernelCost> out;
  for (const meta::Event& e : trace.events())
    if (e.kind == meta::EventKind::kernel && !backend_entry(e.kernel.name)) out.push_back(e.kernel);
  return out;
}

inline std::string describe(const meta::KernelCost& k) {
  return std::string(k.name) + " cls " + std::to_string(int(k.cls)) + " flops " +
         std::to_string(k.flops) + " bytes " + std::to_string(k.bytes) + " dtype " +
         dtype_name(k.dtype) + " mnk " + std::to_string(k.m) + "," + std::to_string(k.n) + "," +
         std::to_string(k.k);
}

inline void expect_same_kernels(const std::vector<meta::KernelCost>& cpu,
                                const std::vector<meta::KernelCost>& on_meta) {
  ASSERT_EQ(cpu.size(), on_meta.size());
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_EQ(describe(cpu[i]), describe(on_meta[i])) << i;
}

// An op's input: its shape and dtype, whether it requires grad, and for i32 ids the bound of
// their values on the CPU ([0, ids)).
struct Input {
  Shape shape;
  DType dtype = DType::f32;
  bool grad = true;
  int32_t ids = 0;
};

struct OpCase {
  std::string name;
  std::vector<Input> inputs;
  std::function<Tensor(std::vector<Tensor>&)> run;
  bool gemm = false;  // also run under bf16 autocast
};

inline Tensor make_input(const Input& in, Device dev, Generator& g) {
  Tensor t;
  if (dev.is_meta()) {
    t = Tensor::empty(in.shape, in.dtype, dev);
  } else if (in.dtype == DType::i32) {
    std::vector<int32_t> v(size_t(in.shape.numel()));
    for (auto& x : v) x = int32_t(g.next_u64() % uint64_t(in.ids));
    t = Tensor::from_ints(v, in.shape);
  } else {
    t = Tensor::randn(in.shape, g, 0.f, 1.f, in.dtype);
  }
  if (!dev.is_cpu() && !dev.is_meta()) t = t.to(dev);
  if (in.grad) t.set_requires_grad(true);
  return t;
}

// What a run of an op gave: the shapes and dtypes of its output and of its inputs' gradients,
// the allocator's peak and final bytes in use over the run (above what the inputs hold), and
// its kernels.
struct RunResult {
  std::vector<std::string> tensors;
  size_t peak = 0, kept = 0;
  std::vector<meta::KernelCost> kernels;
};

inline std::string desc_or_none(const Tensor& t) {
  return t.defined() ? t.desc() : "none";
}

inline RunResult run_op(const OpCase& c, Device dev, DType autocast) {
  Allocator& a = allocator_for(dev);
  RunResult r;
  {
    Generator g(11);
    std::vector<Tensor> in;
    for (const Input& i : c.inputs) in.push_back(make_input(i, dev, g));
    AutocastGuard guard(autocast);
    meta::Trace trace;
    a.reset_peak();
    const size_t before = a.stats().in_use;
    {
      meta::TraceScope scope(trace);
      Tensor y = c.run(in);
      EXPECT_EQ(y.device(), dev) << c.name;
      if (y.requires_grad()) y.backward(Tensor::ones(y.shape(), DType::f32, dev));
      r.tensors.push_back(desc_or_none(y));
      for (const Tensor& t : in) {
        if (!t.requires_grad()) continue;
        r.tensors.push_back(desc_or_none(t.grad()));
        EXPECT_TRUE(!t.grad().defined() || t.grad().device() == dev) << c.name;
      }
      const AllocatorStats st = a.stats();
      r.peak = st.peak_in_use - before;
      r.kept = st.in_use - before;
    }
    r.kernels = op_kernels(trace);
  }
  EXPECT_TRUE(!dev.is_meta() || meta::live_allocations() == 0) << c.name;
  return r;
}

inline std::vector<OpCase> op_cases() {
  using V = std::vector<Tensor>&;
  const Shape x{2, 3, 8};
  std::vector<OpCase> c;
  c.push_back({"reshape", {{x}}, [](V in) { return ops::reshape(in[0], Shape{6, 8}); }});
  c.push_back({"transpose", {{x}}, [](V in) { return ops::transpose(in[0], 0, 2); }});
  c.push_back({"cast", {{x}}, [](V in) { return ops::cast(in[0], DType::bf16); }});
  c.push_back({"rows", {{x}}, [](V in) { return ops::rows(in[0], 1, 2); }});
  c.push_back({"columns", {{x}}, [](V in) { return ops::columns(in[0], 2, 5); }});
  c.push_back({"concat_rows", {{x}, {Shape{1, 3, 8}}}, [](V in) {
                 return ops::concat_rows(in[0], in[1]);
               }});
  c.push_back({"add", {{x}, {x}}, [](V in) { return ops::add(in[0], in[1]); }});
  c.push_back({"add_broadcast", {{x}, {Shape{8}}}, [](V in) { return ops::add(in[0], in[1]); }});
  // Rows enough for the broadcast gradient's column sums to go through partial sums per chunk
  // of rows (on CUDA: a buffer of its own).
  c.push_back({"add_broadcast_600_rows", {{Shape{600, 8}}, {Shape{8}}}, [](V in) {
                 return ops::add(in[0], in[1]);
               }});
  c.push_back({"mul", {{x}, {x}}, [](V in) { return ops::mul(in[0], in[1]); }});
  c.push_back({"mul_broadcast", {{x}, {Shape{3, 8}}}, [](V in) { return ops::mul(in[0], in[1]); }});
  c.push_back({"mul_bf16", {{x, DType::bf16}, {x, DType::bf16}}, [](V in) {
                 return ops::mul(in[0], in[1]);
               }});
  c.push_back({"scale", {{x}}, [](V in) { return ops::scale(in[0], 0.5f); }});
  c.push_back({"sum", {{x}}, [](V in) { return ops::sum(in[0]); }});
  c.push_back({"mean", {{x}}, [](V in) { return ops::mean(in[0]); }});
  c.push_back({"matmul",
               {{Shape{2, 5, 8}}, {Shape{8, 6}}},
               [](V in) { return ops::matmul(in[0], in[1]); },
               true});
  c.push_back({"matmul_batched",
               {{Shape{2, 5, 8}}, {Shape{2, 8, 6}}},
               [](V in) { return ops::matmul(in[0], in[1]); },
               true});
  c.push_back({"linear",
               {{x}, {Shape{12, 8}}, {Shape{12}}},
               [](V in) { return ops::linear(in[0], in[1], in[2]); },
               true});
  // Rows enough for the column sums of the bias gradient to go through partial sums per chunk
  // of rows (on CUDA: a buffer of its own).
  c.push_back({"linear_600_rows",
               {{Shape{600, 8}}, {Shape{12, 8}}, {Shape{12}}},
               [](V in) { return ops::linear(in[0], in[1], in[2]); },
               true});
  c.push_back({"linear_no_bias",
               {{x}, {Shape{12, 8}}},
               [](V in) { return ops::linear(in[0], in[1]); },
               true});
  c.push_back({"linear_gelu",
               {{x}, {Shape{12, 8}}, {Shape{12}}},
               [](V in) { return ops::linear_gelu(in[0], in[1], in[2]); },
               true});
  c.push_back({"gelu", {{x}}, [](V in) { return ops::gelu(in[0]); }});
  c.push_back({"silu", {{x}}, [](V in) { return ops::silu(in[0]); }});
  c.push_back({"relu", {{x, DType::bf16}}, [](V in) { return ops::relu(in[0]); }});
  c.push_back({"swiglu", {{x}}, [](V in) { return ops::swiglu(in[0]); }, true});
  c.push_back({"layer_norm", {{x}, {Shape{8}}, {Shape{8}}}, [](V in) {
                 return ops::layer_norm(in[0], in[1], in[2]);
               }});
  c.push_back({"layer_norm_to_bf16", {{x}, {Shape{8}}, {Shape{8}}}, [](V in) {
                 return ops::layer_norm(in[0], in[1], in[2], 1e-5f, DType::bf16);
               }});
  c.push_back({"layer_norm_3000_rows", {{Shape{3000, 8}}, {Shape{8}}, {Shape{8}}}, [](V in) {
                 return ops::layer_norm(in[0], in[1], in[2]);
               }});
  c.push_back({"rms_norm", {{x}, {Shape{8}}}, [](V in) { return ops::rms_norm(in[0], in[1]); }});
  c.push_back({"softmax", {{x}}, [](V in) { return ops::softmax(in[0]); }});
  c.push_back({"cross_entropy",
               {{Shape{2, 3, 10}}, {Shape{2, 3}, DType::i32, false, 10}},
               [](V in) { return ops::cross_entropy(in[0], in[1]); }});
  c.push_back({"cross_entropy_bf16_grad",
               {{Shape{2, 3, 10}}, {Shape{2, 3}, DType::i32, false, 10}},
               [](V in) { return ops::cross_entropy(in[0], in[1], -1, DType::bf16); }});
  c.push_back({"sharded_cross_entropy",
               {{Shape{2, 3, 10}}, {Shape{2, 3}, DType::i32, false, 10}},
               [](V in) {
                 return ops::sharded_cross_entropy(
                     in[0], in[1], 0, 10, -1, DType::f32, [](const Tensor& stats) {
                       return stats.view(Shape{1, stats.dim(0), stats.dim(1)});
                     });
               }});
  c.push_back({"embedding", {{Shape{10, 8}}, {Shape{2, 3}, DType::i32, false, 10}}, [](V in) {
                 return ops::embedding(in[0], in[1]);
               }});
  c.push_back({"embedding_shard", {{Shape{5, 8}}, {Shape{2, 3}, DType::i32, false, 10}}, [](V in) {
                 return ops::embedding(in[0], in[1], 5);
               }});
  // qkv [B, T, 3C] with 2 heads of 4; grouped-query: 4 heads, 2 kv heads of 4.
  c.push_back(
      {"attention", {{Shape{2, 5, 24}}}, [](V in) { return ops::attention(in[0], 2); }, true});
  c.push_back({"attention_gqa",
               {{Shape{2, 5, 32}}},
               [](V in) { return ops::attention(in[0], 4, 2); },
               true});
  // Head size 64: under 16-bit autocast the CUDA device takes its tensor-core kernels, which
  // read 16-bit copies of qkv (not f32 ones rounded).
  c.push_back({"attention_hs64",
               {{Shape{1, 5, 192}}},
               [](V in) { return ops::attention(in[0], 1); },
               true});
  c.push_back({"attention_window",
               {{Shape{2, 3, 16}}, {Shape{2, 7, 16}}},
               [](V in) { return ops::attention_window(in[0], in[1], 4, 2, 2); },
               true});
  c.push_back({"rope", {{Shape{2, 5, 32}}, {Shape{8, 2, 2}, DType::f32, false}}, [](V in) {
                 return ops::rope(in[0], in[1], 4, 2, 1);
               }});
  c.push_back({"cached_attention",
               {{Shape{2, 3, 32}, DType::f32, false},
                {Shape{2, 2, 8, 4}, DType::f32, false},
                {Shape{2, 2, 8, 4}, DType::f32, false}},
               [](V in) { return ops::cached_attention(in[0], 4, 2, in[1], in[2], 2); }});
  c.push_back({"conv2d",
               {{Shape{2, 3, 7, 7}}, {Shape{4, 3, 3, 3}}, {Shape{4}}},
               [](V in) { return ops::conv2d(in[0], in[1], in[2], 2, 1); },
               true});
  c.push_back(
      {"max_pool2d", {{Shape{2, 3, 6, 6}}}, [](V in) { return ops::max_pool2d(in[0], 2, 2); }});
  c.push_back({"dropout", {{x}}, [](V in) {
                 static Generator g(3);
                 return ops::dropout(in[0], 0.25f, g);
               }});
  return c;
}

inline nn::GPTConfig tiny_gpt() {
  nn::GPTConfig c;
  c.n_layer = 2, c.n_head = 4, c.n_embd = 32, c.context = 16, c.vocab_size = 64;
  return c;
}

// One forward and backward of the model on `dev` (batch B of T tokens), recorded: its kernels,
// and the allocator's peak bytes in use over the step above what the model and the batch hold.
struct GptStep {
  std::vector<meta::KernelCost> kernels;
  size_t peak = 0;
};

inline GptStep gpt_step(Device dev, int64_t B, int64_t T, DType autocast) {
  Generator g(5);
  nn::GPT model(tiny_gpt(), g);
  model.to(dev);
  std::vector<int32_t> ids(size_t(B * T));
  for (auto& id : ids) id = int32_t(g.next_u64() % 64);
  Tensor x = Tensor::from_ints(ids, Shape{B, T}).to(dev);
  Allocator& a = allocator_for(dev);
  GptStep r;
  meta::Trace trace;
  {
    a.reset_peak();
    const size_t before = a.stats().in_use;
    AutocastGuard guard(autocast);
    meta::TraceScope scope(trace);
    Tensor loss = model.loss(x, x);
    EXPECT_EQ(loss.device(), dev);
    loss.backward();
    r.peak = a.stats().peak_in_use - before;
  }
  for (const Tensor& p : model.parameters()) {
    EXPECT_TRUE(p.grad().defined()) << p.name();
    EXPECT_TRUE(!p.grad().defined() || p.grad().device() == dev) << p.name();
  }
  r.kernels = op_kernels(trace);
  return r;
}
}  // namespace tessera::metatest
