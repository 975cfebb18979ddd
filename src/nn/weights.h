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

// The step load_weights ends with: copies `file` (names and layout already ours) into the
// module's parameters after checking that names and shapes match exactly; otherwise one Error
// naming `path` lists every missing, unexpected and mis-shaped tensor, and nothing is modified.
void assign_weights(Module& module, std::map<std::string, Tensor> file, const std::string& path);

// Loads Hugging Face GPT-2 weights (model.safetensors of "gpt2", "gpt2-medium", ...):
//  - names may carry the "transformer." prefix;
//  - Conv1D weights (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) are stored [in, out] and
//    are transposed into our [out, in];
//  - lm_head.weight is ignored (our head is tied to wte), as are the attn.bias / attn.masked_bias
//    mask buffers.
// The model's config must match the file (shapes are checked as in load_weights).
void load_hf_gpt2_weights(GPT& model, const std::string& path);

// The weights-file formats load_any_weights tells apart.
enum class WeightsFormat { tessera, hf_gpt2, llmc };
const char* weights_format_name(WeightsFormat f);  // "tessera safetensors", ...

// Loads whichever of the three formats the file holds, detected from its content (not its name):
//  - llm.c checkpoint: the file starts with the int32 magic kLlmcMagic (GPT models only);
//  - safetensors with Hugging Face GPT-2 names: any "transformer."-prefixed name, lm_head.weight
//    or an attn.bias / attn.masked_bias mask buffer, or a c_attn weight in Conv1D's [C, 3C]
//    layout (HF files without those extras use our names; only the layout tells them apart);
//  - otherwise safetensors with our names (save_weights, RUN/model.safetensors).
// Errors name the file: missing, neither format, or not matching the model (as the loaders
// above). Returns the format it found.
WeightsFormat load_any_weights(Module& model, const std::string& path);

}  // namespace tessera::nn
