// A module's weights as safetensors files, and import of Hugging Face GPT-2 weights.
#pragma once
#include <string>

#include "nn/gpt.h"
#include "nn/safetensors.h"

namespace tessera::nn {

// Writes every parameter under its full name (f32), plus optional metadata.
void save_weights(const Module& module, const std::string& path,
                  const std::map<std::string, std::string>& metadata = {});

// Loads a file written by save_weights into the module's existing parameter tensors (which keep
// their identity, so optimizers pointing at them stay valid). Names and shapes must match
// exactly; floating dtypes are converted to the parameter's f32. Missing, unexpected and
// mis-shaped tensors throw one Error listing them all; nothing is modified then.
void load_weights(Module& module, const std::string& path);

// Loads Hugging Face GPT-2 weights (model.safetensors of "gpt2", "gpt2-medium", ...):
//  - names may carry the "transformer." prefix;
//  - Conv1D weights (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) are stored [in, out] and
//    are transposed into our [out, in];
//  - lm_head.weight is ignored (our head is tied to wte), as are the attn.bias / attn.masked_bias
//    mask buffers.
// The model's config must match the file (shapes are checked as in load_weights).
void load_hf_gpt2_weights(GPT& model, const std::string& path);

}  // namespace tessera::nn
