// Fuzzes the Hugging Face Llama readers (src/nn/llama.cpp): the same bytes as a config.json
// (model_type, shapes, rope_scaling) and as a sharded checkpoint's model.safetensors.index.json
// (weight_map naming shard files, which do not exist here: a clear error). A config that reads
// must also survive a write / read round trip unchanged.
#include <cstdio>

#include "fuzz_common.h"
#include "nn/llama.h"

using namespace tessera;

namespace {

bool same(const nn::LlamaConfig& a, const nn::LlamaConfig& b) {
  const bool scaling =
      a.rope_scaling.has_value() == b.rope_scaling.has_value() &&
      (!a.rope_scaling || (a.rope_scaling->factor == b.rope_scaling->factor &&
                           a.rope_scaling->low_freq_factor == b.rope_scaling->low_freq_factor &&
                           a.rope_scaling->high_freq_factor == b.rope_scaling->high_freq_factor));
  return scaling && a.n_layer == b.n_layer && a.n_head == b.n_head && a.n_kv_head == b.n_kv_head &&
         a.n_embd == b.n_embd && a.ffn_hidden == b.ffn_hidden && a.context == b.context &&
         a.vocab_size == b.vocab_size && a.rope_theta == b.rope_theta && a.norm_eps == b.norm_eps &&
         a.tied_head == b.tied_head;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::MemFile file("config.json");
  static fuzz::TempPath round_trip("config.json");
  file.write(data, size);
  fuzz::expect_success_or_error([&] {
    const nn::LlamaConfig cfg = nn::read_hf_llama_config(file.path());
    nn::write_hf_llama_config(cfg, round_trip.path());
    if (!same(nn::read_hf_llama_config(round_trip.path()), cfg))
      fuzz::property_failed("a config changed in a write / read round trip");
  });
  // The same bytes as an index; a tiny model to load into (never reached: its shards are absent).
  static Generator g(1);
  static nn::LlamaConfig tiny = [] {
    nn::LlamaConfig l;
    l.n_layer = 1, l.n_head = 2, l.n_kv_head = 1, l.n_embd = 8, l.ffn_hidden = 8, l.context = 4;
    l.vocab_size = 8;
    return l;
  }();
  static nn::Decoder model(nn::llama_decoder_config(tiny), g);
  static fuzz::TempPath stem("llama");
  static const std::string index = stem.path() + ".index.json";  // read as an index: ".json"
  static struct RemoveAtExit {
    ~RemoveAtExit() { std::remove(index.c_str()); }
  } remove_at_exit;
  {
    FILE* f = std::fopen(index.c_str(), "wb");
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  fuzz::expect_success_or_error([&] { nn::load_hf_llama_weights(model, index); });
  return 0;
}
