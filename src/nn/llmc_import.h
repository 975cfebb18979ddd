// llm.c GPT-2 checkpoints (gpt2_124M.bin, gpt2_124M_bf16.bin): import and export.
// Layout (docs/formats/llmc_checkpoint.md): 256 int32 header (magic 20240326, version 3 = f32
// or 5 = bf16, maxT, V, L, NH, C, Vp), then the parameters as flat arrays in llm.c's order
// (wte [Vp, C], wpe [maxT, C], then per-layer tensors stacked over L, then lnf). llm.c's
// weights are [out, in] like ours; wte rows V..Vp are padding.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "nn/gpt.h"

namespace tessera::nn {

constexpr int32_t kLlmcMagic = 20240326;

struct LlmcHeader {
  int32_t version = 3;       // 3: f32 parameters, 5: bf16 parameters
  GPTConfig config;          // context = maxT, vocab_size = V, dropout 0
  int64_t padded_vocab = 0;  // Vp >= V
  DType dtype() const { return version == 5 ? DType::bf16 : DType::f32; }
};

// Reads and validates the header and the file size (Error naming the file and the field).
LlmcHeader read_llmc_header(const std::string& path);

// Builds a GPT of the header's size and loads the weights (wte rows beyond V are dropped).
std::unique_ptr<GPT> import_llmc_checkpoint(const std::string& path);
// Loads into an existing model, whose config must match the file's.
void load_llmc_weights(GPT& model, const std::string& path);

// Writes the model in the same layout: dtype f32 (version 3) or bf16 (version 5); wte padded
// with zero rows to padded_vocab (0: V rounded up to a multiple of 128, as llm.c does).
// Written atomically (temporary file, fsync, rename).
void export_llmc_checkpoint(const GPT& model, const std::string& path, DType dtype = DType::f32,
                            int64_t padded_vocab = 0);

}  // namespace tessera::nn
