// Generation on the device: the cached-attention kernel against the CPU's, and a whole cached
// forward (GPT-2 and Llama) and greedy generation on CUDA tensors against the same on the CPU.
// Without a device every test skips, saying why.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "autograd/grad_mode.h"
#include "cuda_test_util.h"
#include "nn/gpt.h"
#include "nn/llama.h"
#include "ops/ops.h"
#include "train/generate.h"

namespace tessera {
namespace {

using cudatest::CudaTest;
using cudatest::expect_close;
using cudatest::expect_exact;

const Device kGpu = Device::cuda(0);

std::unique_ptr<nn::Decoder> tiny_model(bool llama) {
  Generator g(21);
  if (!llama) {
    nn::GPTConfig c;
    c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.context = 16, c.vocab_size = 40;
    return std::make_unique<nn::GPT>(c, g);
  }
  nn::LlamaConfig l;
  l.n_layer = 2, l.n_head = 4, l.n_kv_head = 2, l.n_embd = 64, l.ffn_hidden = 96, l.context = 16;
  l.vocab_size = 40;
  return std::make_unique<nn::Decoder>(nn::llama_decoder_config(l), g);
}

class CudaGenerate : public CudaTest {};

TEST_F(CudaGenerate, CachedAttentionMatchesTheCpu) {
  cudatest::Rng rng;
  TS_TRACE_SEED(rng);
  const int64_t B = 2, H = 4, Hkv = 2, hs = 64, cap = 12;
  for (int64_t start : {0, 5}) {
    const int64_t Tn = start == 0 ? 6 : 3;
    Tensor qkv = Tensor::from_vector(rng.normal(size_t(B * Tn * (H + 2 * Hkv) * hs)),
                                     Shape{B, Tn, (H + 2 * Hkv) * hs});
    Tensor kc = Tensor::from_vector(rng.normal(size_t(B * Hkv * cap * hs)), Shape{B, Hkv, cap, hs});
    Tensor vc = Tensor::from_vector(rng.normal(size_t(B * Hkv * cap * hs)), Shape{B, Hkv, cap, hs});
    Tensor kg = kc.to(kGpu), vg = vc.to(kGpu), qg = qkv.to(kGpu);
    NoGradGuard no_grad;
    const Tensor cpu = ops::cached_attention(qkv, int(H), int(Hkv), kc, vc, start);
    const Tensor gpu = ops::cached_attention(qg, int(H), int(Hkv), kg, vg, start);
    expect_close("cached_attention", "f32", gpu.to(Device::cpu()).to_vector(), cpu.to_vector(),
                 1e-5);
    expect_exact("cached_attention k append", "f32", kg.to(Device::cpu()).to_vector(),
                 kc.to_vector());
    expect_exact("cached_attention v append", "f32", vg.to(Device::cpu()).to_vector(),
                 vc.to_vector());
  }
}

TEST_F(CudaGenerate, CachedForwardAndGreedyTokensMatchTheCpu) {
  for (bool llama : {false, true}) {
    SCOPED_TRACE(llama ? "llama" : "gpt");
    auto cpu = tiny_model(llama), gpu = tiny_model(llama);
    gpu->to(kGpu);
    cpu->eval(), gpu->eval();
    NoGradGuard no_grad;
    const std::vector<int32_t> prompt = {3, 14, 15, 9, 2, 6};
    nn::KVCache cc = cpu->make_cache(1, 16, Device::cpu()), gc = gpu->make_cache(1, 16, kGpu);
    const Tensor ids = Tensor::from_ints(prompt, Shape{1, 6});
    expect_close(llama ? "llama forward_cached" : "gpt forward_cached", "f32",
                 gpu->forward_cached(ids.to(kGpu), gc).to(Device::cpu()).to_vector(),
                 cpu->forward_cached(ids, cc).to_vector(), 1e-4);
    train::SampleOptions opt;
    opt.temperature = 0, opt.tokens = 24;  // past the context: the cache restarts once
    Generator g1(1), g2(1);
    EXPECT_EQ(train::generate(*cpu, prompt, opt, g1), train::generate(*gpu, prompt, opt, g2));
  }
}

}  // namespace
}  // namespace tessera
