#include "nn/weights.h"

#include <fmt/ranges.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <vector>

#include "autograd/grad_mode.h"
#include "nn/llmc_import.h"

namespace tessera::nn {

void save_weights(const Module& module, const std::string& path,
                  const std::map<std::string, std::string>& metadata) {
  NamedTensors params = module.named_parameters();
  for (auto& [name, t] : params)
    if (!t.device().is_cpu()) t = t.to(Device::cpu());  // a model trained on a GPU
  write_safetensors(path, params, metadata);
}

void assign_weights(Module& module, std::map<std::string, Tensor> file, const std::string& path) {
  std::vector<std::string> missing, mismatched, wrong_type;
  NamedTensors params = module.named_parameters();
  for (const auto& [name, p] : params) {
    auto it = file.find(name);
    if (it == file.end()) {
      missing.push_back(name);
      continue;
    }
    if (it->second.shape() != p.shape())
      mismatched.push_back(
          fmt::format("{} (file {}, model {})", name, it->second.shape().str(), p.shape().str()));
    else if (!is_floating(it->second.dtype()))
      wrong_type.push_back(fmt::format("{} ({})", name, dtype_name(it->second.dtype())));
  }
  std::vector<std::string> unexpected;
  std::set<std::string> known;
  for (const auto& [name, p] : params) known.insert(name);
  for (const auto& [name, t] : file)
    if (!known.count(name)) unexpected.push_back(name);
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty() || !wrong_type.empty()) {
    std::string msg = fmt::format("load_weights '{}': the file does not match the model:", path);
    if (!missing.empty()) msg += fmt::format(" missing [{}];", fmt::join(missing, ", "));
    if (!unexpected.empty()) msg += fmt::format(" unexpected [{}];", fmt::join(unexpected, ", "));
    if (!mismatched.empty()) msg += fmt::format(" wrong shape [{}];", fmt::join(mismatched, ", "));
    if (!wrong_type.empty())
      msg += fmt::format(" not floating point [{}];", fmt::join(wrong_type, ", "));
    msg.pop_back();
    throw Error(msg);
  }
  NoGradGuard no_grad;
  for (auto& [name, p] : params) p.copy_from(file.at(name));
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Hugging Face's names and layout -> ours (see load_hf_gpt2_weights).
std::map<std::string, Tensor> from_hf_gpt2(std::map<std::string, Tensor> tensors,
                                           const std::string& path) {
  std::map<std::string, Tensor> renamed;
  for (auto& [name0, t] : tensors) {
    std::string name = name0.rfind("transformer.", 0) == 0 ? name0.substr(12) : name0;
    if (name == "lm_head.weight" || ends_with(name, ".attn.bias") ||
        ends_with(name, ".attn.masked_bias"))
      continue;
    const bool conv1d =
        ends_with(name, ".attn.c_attn.weight") || ends_with(name, ".attn.c_proj.weight") ||
        ends_with(name, ".mlp.c_fc.weight") || ends_with(name, ".mlp.c_proj.weight");
    if (conv1d) {
      TS_CHECK(t.ndim() == 2, "load_hf_gpt2_weights '{}': tensor '{}' is {}, expected 2 dims", path,
               name0, t.desc());
      t = t.transpose_view(0, 1).contiguous();
    }
    TS_CHECK(renamed.emplace(name, t).second,
             "load_hf_gpt2_weights '{}': tensor '{}' appears with and without 'transformer.'", path,
             name);
  }
  return renamed;
}

// The file's names or layout are Hugging Face's (see load_any_weights).
bool looks_like_hf_gpt2(const std::map<std::string, Tensor>& tensors) {
  for (const auto& [name, t] : tensors) {
    if (name.rfind("transformer.", 0) == 0 || name == "lm_head.weight" ||
        ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias"))
      return true;
    // Ours is [3C, C]; Conv1D's [C, 3C]. Never square, so the two cannot be confused.
    if (ends_with(name, ".attn.c_attn.weight") && t.ndim() == 2 && t.dim(1) == 3 * t.dim(0))
      return true;
  }
  return false;
}

// The first 4 bytes are llm.c's magic number.
bool starts_with_llmc_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  int32_t magic = 0;
  in.read(reinterpret_cast<char*>(&magic), sizeof magic);
  return in.gcount() == sizeof magic && magic == kLlmcMagic;
}

}  // namespace

void load_weights(Module& module, const std::string& path) {
  assign_weights(module, read_safetensors(path).tensors, path);
}

void load_hf_gpt2_weights(GPT& model, const std::string& path) {
  assign_weights(model, from_hf_gpt2(read_safetensors(path).tensors, path), path);
}

const char* weights_format_name(WeightsFormat f) {
  switch (f) {
    case WeightsFormat::tessera:
      return "tessera safetensors";
    case WeightsFormat::hf_gpt2:
      return "Hugging Face GPT-2 safetensors";
    case WeightsFormat::llmc:
      return "llm.c checkpoint";
  }
  return "?";
}

WeightsFormat load_any_weights(Module& model, const std::string& path) {
  std::error_code ec;
  TS_CHECK(std::filesystem::is_regular_file(path, ec), "weights file '{}' does not exist{}", path,
           std::filesystem::exists(path, ec) ? " as a regular file" : "");
  GPT* gpt = dynamic_cast<GPT*>(&model);
  if (starts_with_llmc_magic(path)) {
    TS_CHECK(gpt,
             "weights file '{}' is an llm.c checkpoint, which holds a GPT, but the model is "
             "not a GPT",
             path);
    load_llmc_weights(*gpt, path);
    return WeightsFormat::llmc;
  }
  SafetensorsFile file;
  try {
    file = read_safetensors(path);
  } catch (const Error& e) {
    throw Error(fmt::format(
        "weights file '{}' is neither an llm.c checkpoint (its first 4 bytes are not the magic "
        "{}) nor a valid safetensors file: {}",
        path, kLlmcMagic, e.what()));
  }
  if (looks_like_hf_gpt2(file.tensors)) {
    TS_CHECK(gpt, "weights file '{}' has Hugging Face GPT-2 names, but the model is not a GPT",
             path);
    assign_weights(model, from_hf_gpt2(std::move(file.tensors), path), path);
    return WeightsFormat::hf_gpt2;
  }
  assign_weights(model, std::move(file.tensors), path);
  return WeightsFormat::tessera;
}

}  // namespace tessera::nn
