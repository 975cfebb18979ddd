#include "nn/llama.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/file_io.h"
#include "nn/safetensors.h"
#include "nn/weights.h"

namespace tessera::nn {

int64_t llama_default_ffn_hidden(int64_t n_embd) {
  const int64_t hidden = 2 * (4 * n_embd) / 3;
  return (hidden + 255) / 256 * 256;
}

DecoderConfig llama_decoder_config(const LlamaConfig& l) {
  DecoderConfig d;
  d.n_layer = l.n_layer;
  d.n_head = l.n_head;
  d.n_kv_head = l.n_kv_head;
  d.n_embd = l.n_embd;
  d.mlp_hidden = l.ffn_hidden;
  d.context = l.context;
  d.vocab_size = l.vocab_size;
  d.norm = NormKind::rms_norm;
  d.norm_eps = l.norm_eps;
  d.positions = PositionKind::rotary;
  d.rope_theta = l.rope_theta;
  d.rope_scaling = l.rope_scaling;
  d.mlp = MlpKind::swiglu;
  d.bias = false;
  d.tied_head = l.tied_head;
  d.init_std = 0.02f;
  return d;
}

// ---- config.json ----

namespace {

using nlohmann::json;

// j as T when it is one exactly: nlohmann's get<T> converts 3e23 to an integer or 1e300 to a
// float with undefined behaviour, and truncates 2^40 to an int, so numbers are range-checked here.
template <class T>
std::optional<T> exact(const json& j) {
  if constexpr (std::is_same_v<T, bool>) {
    if (j.is_boolean()) return j.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    static_assert(std::is_signed_v<T>);
    if (j.is_number_unsigned()) {
      const uint64_t u = j.get<uint64_t>();
      if (u <= uint64_t(std::numeric_limits<T>::max())) return T(u);
    } else if (j.is_number_integer()) {
      const int64_t i = j.get<int64_t>();
      if (i >= int64_t(std::numeric_limits<T>::min()) &&
          i <= int64_t(std::numeric_limits<T>::max()))
        return T(i);
    } else if (j.is_number_float()) {  // 4096.0 is 4096; 64.5 and 3e23 are not integers we take
      const double d = j.get<double>(), limit = std::ldexp(1.0, std::numeric_limits<T>::digits);
      if (std::isfinite(d) && d == std::trunc(d) && d >= -limit && d < limit) return T(d);
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    if (j.is_number()) {
      const double d = j.get<double>();
      if (std::isfinite(d) && std::fabs(d) <= double(std::numeric_limits<T>::max())) return T(d);
    }
  } else if (j.is_string()) {
    return j.get<std::string>();
  }
  return std::nullopt;
}

// config[key] as T, or `fallback` when absent (has_fallback); errors name the file and key.
template <class T>
T field(const json& config, const char* key, const std::string& path, const T* fallback = nullptr) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) {
    TS_CHECK(fallback, "{}: field \"{}\" is missing", path, key);
    return *fallback;
  }
  if (std::optional<T> v = exact<T>(*it)) return *v;
  std::string expected = "a string";
  if constexpr (std::is_same_v<T, bool>)
    expected = "a boolean";
  else if constexpr (std::is_integral_v<T>)
    expected = fmt::format("an integer that fits in {} bits", sizeof(T) * 8);
  else if constexpr (std::is_floating_point_v<T>)
    expected = "a finite number";
  fail("{}: field \"{}\" is {}, expected {}", path, key, it->dump(), expected);
}

template <class T>
T field_or(const json& config, const char* key, const std::string& path, T fallback) {
  return field<T>(config, key, path, &fallback);
}

}  // namespace

LlamaConfig read_hf_llama_config(const std::string& path) {
  json c;
  try {
    c = json::parse(read_small_file(path, 1 << 20));
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
  TS_CHECK(c.is_object(), "{}: expected a JSON object", path);
  const std::string type = field<std::string>(c, "model_type", path);
  TS_CHECK(type == "llama", "{}: model_type is \"{}\", expected \"llama\"", path, type);
  TS_CHECK(field_or<std::string>(c, "hidden_act", path, "silu") == "silu",
           "{}: hidden_act must be \"silu\" (SwiGLU)", path);
  TS_CHECK(!field_or<bool>(c, "attention_bias", path, false) &&
               !field_or<bool>(c, "mlp_bias", path, false),
           "{}: attention_bias / mlp_bias are true: Tessera's Llama has no biases", path);
  LlamaConfig l;
  l.n_embd = field<int64_t>(c, "hidden_size", path);
  l.ffn_hidden = field<int64_t>(c, "intermediate_size", path);
  l.n_layer = field<int>(c, "num_hidden_layers", path);
  l.n_head = field<int>(c, "num_attention_heads", path);
  l.n_kv_head = field_or<int>(c, "num_key_value_heads", path, l.n_head);
  l.context = field<int64_t>(c, "max_position_embeddings", path);
  l.vocab_size = field<int64_t>(c, "vocab_size", path);
  l.rope_theta = field_or<double>(c, "rope_theta", path, 10000.0);
  l.norm_eps = field_or<float>(c, "rms_norm_eps", path, 1e-6f);
  l.tied_head = field_or<bool>(c, "tie_word_embeddings", path, false);
  TS_CHECK(l.n_head > 0 && l.n_embd % l.n_head == 0,
           "{}: hidden_size {} is not a multiple of num_attention_heads {}", path, l.n_embd,
           l.n_head);
  const int64_t head_dim = field_or<int64_t>(c, "head_dim", path, l.n_embd / l.n_head);
  TS_CHECK(head_dim == l.n_embd / l.n_head,
           "{}: head_dim {} differs from hidden_size / num_attention_heads = {}", path, head_dim,
           l.n_embd / l.n_head);
  auto rs = c.find("rope_scaling");
  if (rs != c.end() && !rs->is_null()) {
    const std::string p = path + ": rope_scaling";
    const std::string rope_type = field_or<std::string>(
        *rs, "rope_type", p, field_or<std::string>(*rs, "type", p, "default"));
    TS_CHECK(rope_type == "llama3" || rope_type == "default",
             "{}: rope_type is \"{}\", expected \"llama3\" or \"default\"", p, rope_type);
    if (rope_type == "llama3") {
      ops::Llama3RopeScaling s;
      s.factor = field<double>(*rs, "factor", p);
      s.low_freq_factor = field<double>(*rs, "low_freq_factor", p);
      s.high_freq_factor = field<double>(*rs, "high_freq_factor", p);
      s.original_max_position_embeddings =
          field<double>(*rs, "original_max_position_embeddings", p);
      TS_CHECK(s.factor > 0 && s.high_freq_factor > s.low_freq_factor &&
                   s.original_max_position_embeddings > 0,
               "{}: expected factor > 0, high_freq_factor > low_freq_factor and "
               "original_max_position_embeddings > 0",
               p);
      l.rope_scaling = s;
    }
  }
  try {
    llama_decoder_config(l).validate();
  } catch (const Error& e) {
    fail("{}: {}", path, e.what());
  }
  return l;
}

void write_hf_llama_config(const LlamaConfig& l, const std::string& path) {
  json c = {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"hidden_act", "silu"},
            {"attention_bias", false},
            {"mlp_bias", false},
            {"hidden_size", l.n_embd},
            {"intermediate_size", l.ffn_hidden},
            {"num_hidden_layers", l.n_layer},
            {"num_attention_heads", l.n_head},
            {"num_key_value_heads", l.n_kv_head},
            {"head_dim", l.n_embd / l.n_head},
            {"max_position_embeddings", l.context},
            {"vocab_size", l.vocab_size},
            {"rope_theta", l.rope_theta},
            {"rms_norm_eps", l.norm_eps},
            {"tie_word_embeddings", l.tied_head},
            {"torch_dtype", "float32"}};
  if (l.rope_scaling)
    c["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", l.rope_scaling->factor},
        {"low_freq_factor", l.rope_scaling->low_freq_factor},
        {"high_freq_factor", l.rope_scaling->high_freq_factor},
        {"original_max_position_embeddings", l.rope_scaling->original_max_position_embeddings}};
  write_file_atomically(path, c.dump(2) + "\n");
}

// ---- weights ----

namespace {

namespace fs = std::filesystem;

// Rows of f32 tensors stacked into one f32 tensor (all on the CPU, same trailing dims).
Tensor stack_rows(const std::vector<Tensor>& parts) {
  int64_t rows = 0;
  for (const Tensor& t : parts) rows += t.dim(0);
  Shape shape = parts[0].shape();
  shape[0] = rows;
  Tensor out = Tensor::empty(shape, DType::f32);
  float* dst = out.data<float>();
  for (const Tensor& t : parts) {
    Tensor f = t.to(DType::f32).contiguous();
    std::memcpy(dst, f.data<float>(), size_t(f.numel()) * sizeof(float));
    dst += f.numel();
  }
  return out;
}

struct LayerNames {
  std::string hf, ours;
};

// Per layer, the Hugging Face names that map one to one.
std::vector<LayerNames> one_to_one(int i) {
  const std::string hf = fmt::format("model.layers.{}.", i), ours = fmt::format("h.{}.", i);
  return {{hf + "input_layernorm.weight", ours + "ln_1.weight"},
          {hf + "self_attn.o_proj.weight", ours + "attn.c_proj.weight"},
          {hf + "post_attention_layernorm.weight", ours + "ln_2.weight"},
          {hf + "mlp.down_proj.weight", ours + "mlp.c_proj.weight"}};
}

// The layers a set of names holds: one more than the highest model.layers.{i}.
int count_layers(const Module& model) {
  int n = 0;
  for (const auto& [name, t] : model.named_parameters())
    if (name.rfind("h.", 0) == 0) n = std::max(n, std::stoi(name.substr(2)) + 1);
  return n;
}

// Takes `name` out of `file`, or records it as missing.
Tensor take(std::map<std::string, Tensor>& file, const std::string& name,
            std::vector<std::string>& missing) {
  auto it = file.find(name);
  if (it == file.end()) {
    missing.push_back(name);
    return Tensor();
  }
  Tensor t = it->second;
  file.erase(it);
  return t;
}

// Hugging Face names -> ours, joining q|k|v and gate|up. Leftover names stay (assign_weights
// reports them as unexpected); missing ones are reported here.
std::map<std::string, Tensor> from_hf_llama(std::map<std::string, Tensor> file, int layers,
                                            bool untied, const std::string& path) {
  std::map<std::string, Tensor> ours;
  std::vector<std::string> missing;
  ours["wte.weight"] = take(file, "model.embed_tokens.weight", missing);
  for (int i = 0; i < layers; ++i) {
    for (const LayerNames& n : one_to_one(i)) ours[n.ours] = take(file, n.hf, missing);
    const std::string hf = fmt::format("model.layers.{}.", i), h = fmt::format("h.{}.", i);
    std::vector<Tensor> qkv, fc;
    for (const char* p : {"q_proj", "k_proj", "v_proj"})
      qkv.push_back(take(file, hf + "self_attn." + p + ".weight", missing));
    for (const char* p : {"gate_proj", "up_proj"})
      fc.push_back(take(file, hf + "mlp." + p + ".weight", missing));
    if (missing.empty()) {
      ours[h + "attn.c_attn.weight"] = stack_rows(qkv);
      ours[h + "mlp.c_fc.weight"] = stack_rows(fc);
    }
  }
  ours["ln_f.weight"] = take(file, "model.norm.weight", missing);
  if (untied) {
    ours["lm_head.weight"] = take(file, "lm_head.weight", missing);
  } else {
    file.erase("lm_head.weight");  // a tied head saved as its own tensor: the same values
  }
  TS_CHECK(missing.empty(), "load_hf_llama_weights '{}': missing tensors [{}]", path,
           fmt::join(missing, ", "));
  for (auto& [name, t] : file) ours[name] = t;  // leftovers: reported as unexpected
  return ours;
}

// The safetensors files `path` stands for (see load_hf_llama_weights).
std::vector<std::string> weight_files(const std::string& path) {
  std::error_code ec;
  std::string p = path;
  if (fs::is_directory(p, ec)) {
    if (fs::exists(fs::path(p) / "model.safetensors.index.json", ec))
      p = (fs::path(p) / "model.safetensors.index.json").string();
    else if (fs::exists(fs::path(p) / "model.safetensors", ec))
      return {(fs::path(p) / "model.safetensors").string()};
    else
      fail("'{}' is a folder without model.safetensors or model.safetensors.index.json", path);
  }
  if (p.size() < 5 || p.compare(p.size() - 5, 5, ".json") != 0) return {p};
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(read_small_file(p, 64 << 20));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", p, e.what());
  }
  auto map = index.find("weight_map");
  TS_CHECK(map != index.end() && map->is_object(),
           "{}: expected an object \"weight_map\" (tensor name -> shard file)", p);
  std::vector<std::string> files;
  for (const auto& [name, file] : map->items()) {
    TS_CHECK(file.is_string(), "{}: weight_map[\"{}\"] is {}, expected a file name", p, name,
             file.dump());
    const std::string shard = (fs::path(p).parent_path() / file.get<std::string>()).string();
    TS_CHECK(fs::is_regular_file(shard, ec),
             "{}: weight_map[\"{}\"] names '{}', which does not exist", p, name, shard);
    if (std::find(files.begin(), files.end(), shard) == files.end()) files.push_back(shard);
  }
  TS_CHECK(!files.empty(), "{}: weight_map is empty", p);
  return files;
}

std::map<std::string, Tensor> read_all(const std::vector<std::string>& files) {
  std::map<std::string, Tensor> all;
  for (const std::string& f : files)
    for (auto& [name, t] : read_safetensors(f).tensors)
      TS_CHECK(all.emplace(name, t).second, "{}: tensor '{}' is also in another shard", f, name);
  return all;
}

bool has_untied_head(const Module& model) {
  for (const auto& [name, t] : model.named_parameters())
    if (name == "lm_head.weight") return true;
  return false;
}

}  // namespace

void load_hf_llama_weights(Module& model, const std::string& path) {
  std::map<std::string, Tensor> file = read_all(weight_files(path));
  assign_weights(model,
                 from_hf_llama(std::move(file), count_layers(model), has_untied_head(model), path),
                 path);
}

void save_hf_llama_weights(const Module& model, const std::string& folder, DType dtype,
                           int64_t max_shard_bytes) {
  TS_CHECK(dtype == DType::f32 || dtype == DType::bf16,
           "save_hf_llama_weights: dtype {}, expected f32 or bf16", dtype_name(dtype));
  std::map<std::string, Tensor> ours;
  for (auto [name, t] : model.named_parameters())
    ours[name] = t.device().is_cpu() ? t : t.to(Device::cpu());
  // Ours -> Hugging Face's, splitting the fused projections.
  NamedTensors hf;
  auto put = [&](const std::string& name, const Tensor& t) {
    hf.emplace_back(name, t.to(dtype).contiguous());
  };
  put("model.embed_tokens.weight", ours.at("wte.weight"));
  const int layers = count_layers(model);
  for (int i = 0; i < layers; ++i) {
    const std::string hfp = fmt::format("model.layers.{}.", i), h = fmt::format("h.{}.", i);
    const Tensor qkv = ours.at(h + "attn.c_attn.weight"), fc = ours.at(h + "mlp.c_fc.weight");
    const int64_t C = ours.at(h + "attn.c_proj.weight").dim(0), kv = (qkv.dim(0) - C) / 2;
    put(hfp + "self_attn.q_proj.weight", qkv.slice_rows(0, C));
    put(hfp + "self_attn.k_proj.weight", qkv.slice_rows(C, C + kv));
    put(hfp + "self_attn.v_proj.weight", qkv.slice_rows(C + kv, C + 2 * kv));
    put(hfp + "self_attn.o_proj.weight", ours.at(h + "attn.c_proj.weight"));
    const int64_t F = fc.dim(0) / 2;
    put(hfp + "mlp.gate_proj.weight", fc.slice_rows(0, F));
    put(hfp + "mlp.up_proj.weight", fc.slice_rows(F, 2 * F));
    put(hfp + "mlp.down_proj.weight", ours.at(h + "mlp.c_proj.weight"));
    put(hfp + "input_layernorm.weight", ours.at(h + "ln_1.weight"));
    put(hfp + "post_attention_layernorm.weight", ours.at(h + "ln_2.weight"));
  }
  put("model.norm.weight", ours.at("ln_f.weight"));
  if (ours.count("lm_head.weight")) put("lm_head.weight", ours.at("lm_head.weight"));

  // Shards in order, each up to max_shard_bytes (a tensor larger than that gets its own).
  std::vector<NamedTensors> shards(1);
  int64_t bytes = 0;
  for (auto& nt : hf) {
    const int64_t b = nt.second.numel() * int64_t(dtype_size(dtype));
    if (bytes > 0 && bytes + b > max_shard_bytes) shards.emplace_back(), bytes = 0;
    shards.back().push_back(nt);
    bytes += b;
  }
  fs::create_directories(folder);
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  if (shards.size() == 1) {
    write_safetensors((fs::path(folder) / "model.safetensors").string(), shards[0], meta);
    return;
  }
  nlohmann::json map = nlohmann::json::object();
  int64_t total = 0;
  for (size_t k = 0; k < shards.size(); ++k) {
    const std::string name =
        fmt::format("model-{:05d}-of-{:05d}.safetensors", k + 1, shards.size());
    write_safetensors((fs::path(folder) / name).string(), shards[k], meta);
    for (const auto& [tensor, t] : shards[k]) {
      map[tensor] = name;
      total += t.numel() * int64_t(dtype_size(dtype));
    }
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", map}};
  write_file_atomically((fs::path(folder) / "model.safetensors.index.json").string(),
                        index.dump(2) + "\n");
}

std::string load_any_llama_weights(Module& model, const std::string& path) {
  std::error_code ec;
  TS_CHECK(fs::exists(path, ec), "weights '{}' do not exist", path);
  const std::vector<std::string> files = weight_files(path);
  std::map<std::string, Tensor> file = read_all(files);
  if (file.count("model.embed_tokens.weight")) {
    assign_weights(
        model, from_hf_llama(std::move(file), count_layers(model), has_untied_head(model), path),
        path);
    return "Hugging Face Llama safetensors";
  }
  assign_weights(model, std::move(file), path);
  return "tessera safetensors";
}

}  // namespace tessera::nn
