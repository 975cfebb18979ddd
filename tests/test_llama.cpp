// The Llama kind: its shapes and parameter count, Hugging Face files in and out, and agreement
// with an independent PyTorch Llama (bench/peers/torch_llama.py wrote tests/data/llama_tiny:
// HF-format weights, token batches, the logits of the first batch and 20 AdamW steps' losses).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/file_io.h"
#include "gradcheck.h"
#include "nn/llama.h"
#include "nn/safetensors.h"
#include "nn/weights.h"
#include "optim/adamw.h"
#include "optim/flat_params.h"
#include "scratch.h"
#include "train/model_kinds.h"
#include "train/task.h"

using namespace tessera;
using tessera::testing::expect_error;
using tessera::testing::scratch_dir;
namespace fs = std::filesystem;

namespace {

const fs::path kFixture = fs::path(TESSERA_SOURCE_DIR) / "tests/data/llama_tiny";

nn::LlamaConfig tiny(bool tied) {
  nn::LlamaConfig l;
  l.n_layer = 2, l.n_head = 4, l.n_kv_head = 2, l.n_embd = 32, l.ffn_hidden = 48;
  l.context = 32, l.vocab_size = 64, l.tied_head = tied;
  return l;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to_vector() == b.to_vector();
}

// Row r of ids [N, B, T+1] as (input [B, T], target [B, T]).
std::pair<Tensor, Tensor> batch(const Tensor& ids, int64_t r) {
  const int64_t B = ids.dim(1), T1 = ids.dim(2);
  const int32_t* p = ids.data<int32_t>() + r * B * T1;
  std::vector<int32_t> x, y;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < T1; ++t) {
      x.push_back(p[b * T1 + t]);
      y.push_back(p[b * T1 + t + 1]);
    }
  return {Tensor::from_ints(x, Shape{B, T1 - 1}), Tensor::from_ints(y, Shape{B, T1 - 1})};
}

}  // namespace

TEST(Llama, ShapesNamesAndParameterCount) {
  for (bool tied : {true, false}) {
    Generator g(1);
    const nn::DecoderConfig d = nn::llama_decoder_config(tiny(tied));
    nn::Decoder model(d, g);
    EXPECT_EQ(model.num_parameters(), nn::decoder_num_parameters(d));
    std::map<std::string, Shape> shapes;
    for (const auto& [name, t] : model.named_parameters()) shapes[name] = t.shape();
    EXPECT_EQ(shapes.count("wpe.weight"), 0u);            // rotary positions
    EXPECT_EQ(shapes.count("h.0.ln_1.bias"), 0u);         // RMSNorm
    EXPECT_EQ(shapes.count("h.0.attn.c_attn.bias"), 0u);  // no biases
    EXPECT_EQ(shapes.at("h.0.attn.c_attn.weight"), (Shape{(4 + 2 * 2) * 8, 32}));  // q | k | v
    EXPECT_EQ(shapes.at("h.1.mlp.c_fc.weight"), (Shape{2 * 48, 32}));              // gate | up
    EXPECT_EQ(shapes.at("h.1.mlp.c_proj.weight"), (Shape{32, 48}));
    EXPECT_EQ(shapes.count("lm_head.weight"), tied ? 0u : 1u);
    Tensor logits = model.forward(Tensor::from_ints({1, 2, 3, 4, 5, 6}, Shape{2, 3}));
    EXPECT_EQ(logits.shape(), (Shape{2, 3, 64}));
  }
  EXPECT_EQ(nn::llama_default_ffn_hidden(4096), 11008);  // Llama 2 7B's width, Meta's rule
  // Llama 3.1 8B: 8.03 billion parameters.
  nn::LlamaConfig b8;
  b8.n_layer = 32, b8.n_head = 32, b8.n_kv_head = 8, b8.n_embd = 4096, b8.ffn_hidden = 14336;
  b8.tied_head = false;
  EXPECT_EQ(nn::decoder_num_parameters(nn::llama_decoder_config(b8)), 8030261248);
}

TEST(Llama, HuggingFaceWeightsRoundTripShardedAndInBf16) {
  const fs::path dir = scratch_dir("llama_hf");
  for (bool tied : {true, false}) {
    Generator g1(1), g2(2);
    nn::Decoder a(nn::llama_decoder_config(tiny(tied)), g1),
        b(nn::llama_decoder_config(tiny(tied)), g2);
    const std::string sharded = (dir / (tied ? "tied" : "untied")).string();
    nn::save_hf_llama_weights(a, sharded, DType::f32, /*max_shard_bytes=*/16 << 10);
    ASSERT_TRUE(fs::exists(fs::path(sharded) / "model.safetensors.index.json"));
    int shards = 0;
    for (const auto& e : fs::directory_iterator(sharded))
      shards += e.path().filename().string().rfind("model-0000", 0) == 0;
    EXPECT_GE(shards, 2);
    EXPECT_EQ(nn::load_any_llama_weights(b, sharded), "Hugging Face Llama safetensors");
    const nn::NamedTensors pa = a.named_parameters(), pb = b.named_parameters();
    for (size_t i = 0; i < pa.size(); ++i)
      EXPECT_TRUE(bit_equal(pa[i].second, pb[i].second)) << pa[i].first;
    // bf16 files: the values rounded to bf16.
    const std::string one = (dir / (tied ? "tied16" : "untied16")).string();
    nn::save_hf_llama_weights(a, one, DType::bf16);
    ASSERT_TRUE(fs::exists(fs::path(one) / "model.safetensors"));
    nn::load_hf_llama_weights(b, one);
    EXPECT_TRUE(bit_equal(b.wte.weight, a.wte.weight.to(DType::bf16).to(DType::f32)));
  }
}

TEST(Llama, BrokenFilesAreRefusedNamingWhatIsWrong) {
  const fs::path dir = scratch_dir("llama_bad");
  Generator g(1);
  nn::Decoder model(nn::llama_decoder_config(tiny(false)), g);
  const std::string good = (dir / "good").string();
  nn::save_hf_llama_weights(model, good, DType::f32, 16 << 10);
  // An index naming a shard that is not there.
  const std::string index = (fs::path(good) / "model.safetensors.index.json").string();
  std::string text = read_small_file(index, 1 << 20);
  const std::string shard1 = "model-00001-of-";
  text.replace(text.find(shard1), shard1.size(), "missing-00001-of-");
  write_file_atomically(index, text);
  expect_error([&] { nn::load_hf_llama_weights(model, good); },
               {"model.safetensors.index.json", "missing-00001-of-", "does not exist"});
  // A file of another model: names missing.
  const std::string gpt_like = (dir / "other.safetensors").string();
  nn::write_safetensors(gpt_like,
                        nn::NamedTensors{{"model.embed_tokens.weight", model.wte.weight}});
  expect_error([&] { nn::load_hf_llama_weights(model, gpt_like); },
               {"other.safetensors", "missing tensors", "model.layers.0.self_attn.q_proj.weight"});
  // config.json: the wrong architecture, a missing field, inconsistent heads.
  auto config_error = [&](const std::string& json, std::initializer_list<std::string> what) {
    const std::string path = (dir / "config.json").string();
    write_file_atomically(path, json);
    expect_error([&] { nn::read_hf_llama_config(path); }, what);
  };
  config_error(R"({"model_type": "gpt2"})", {"config.json", "model_type is \"gpt2\"", "llama"});
  config_error(R"({"model_type": "llama", "hidden_size": 64})",
               {"config.json", "\"intermediate_size\" is missing"});
  config_error(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
                   "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 3,
                   "max_position_embeddings": 16, "vocab_size": 32})",
               {"config.json", "n_kv_head 3 must divide n_head 4"});
  config_error(R"({"model_type": "llama", "hidden_size": "wide"})",
               {"config.json", "\"hidden_size\" is \"wide\"", "integer"});
  // Numbers out of the field's range or kind (fuzz finding: 3.7e23 as an int64 was UB).
  config_error(R"({"model_type": "llama", "hidden_size": 3.77778e+23})",
               {"config.json", "\"hidden_size\"", "integer that fits in 64 bits"});
  config_error(R"({"model_type": "llama", "hidden_size": 64.5})",
               {"config.json", "\"hidden_size\" is 64.5", "integer"});
  config_error(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
                   "num_hidden_layers": 1099511627776})",
               {"config.json", "\"num_hidden_layers\"", "fits in 32 bits"});
  config_error(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
                   "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 16,
                   "vocab_size": 32, "rms_norm_eps": 1e300})",
               {"config.json", "\"rms_norm_eps\"", "finite number"});
  config_error(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
                   "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 16,
                   "vocab_size": 32, "rope_scaling": {"rope_type": "yarn", "factor": 4}})",
               {"config.json: rope_scaling", "\"yarn\""});
  config_error("{not json", {"config.json", "not valid JSON"});
}

TEST(Llama, MatchesTheIndependentPyTorchLlama) {
  const nn::LlamaConfig cfg = nn::read_hf_llama_config((kFixture / "config.json").string());
  EXPECT_FALSE(cfg.tied_head);
  ASSERT_TRUE(cfg.rope_scaling.has_value());
  EXPECT_EQ(cfg.rope_scaling->factor, 8.0);
  Generator g(0);
  nn::Decoder model(nn::llama_decoder_config(cfg), g);
  EXPECT_EQ(nn::load_any_llama_weights(model, kFixture.string()), "Hugging Face Llama safetensors");
  const Tensor ids =
      nn::read_safetensors((kFixture / "batches.safetensors").string()).tensors.at("ids");
  const auto expected = nn::read_safetensors((kFixture / "expected.safetensors").string()).tensors;

  // Logits of the first batch: 1e-5 relative to the largest logit.
  const Tensor logits = model.forward(batch(ids, 0).first);
  const Tensor& ref = expected.at("logits");
  ASSERT_EQ(logits.shape(), ref.shape());
  const std::vector<float> a = logits.to_vector(), b = ref.to_vector();
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(a[i] - b[i])));
    max_ref = std::max(max_ref, double(std::fabs(b[i])));
  }
  std::printf("[figure] llama logits vs PyTorch: max |diff| / max |logit| = %.2e\n",
              max_diff / max_ref);
  EXPECT_LT(max_diff / max_ref, 1e-5);

  // 20 AdamW steps (the script's settings; decay on matrices only) give the same losses.
  FlatParameters flat(model.parameters());
  AdamWOptions o;
  o.beta1 = 0.9f, o.beta2 = 0.95f, o.eps = 1e-8f, o.weight_decay = 0.1f;
  AdamW opt(flat, o);
  const std::vector<float> ref_losses = expected.at("losses").to_vector();
  double worst = 0;
  for (size_t s = 1; s <= ref_losses.size(); ++s) {
    auto [x, y] = batch(ids, int64_t(s));
    flat.zero_grad();
    Tensor loss = model.loss(x, y);
    loss.backward();
    opt.step(3e-3f);
    worst = std::max(worst, double(std::fabs(loss.item() - ref_losses[s - 1])) / ref_losses[s - 1]);
  }
  std::printf(
      "[figure] llama 20 AdamW steps vs PyTorch: max relative loss difference %.2e (%.4f -> "
      "%.4f)\n",
      worst, ref_losses.front(), ref_losses.back());
  EXPECT_LT(worst, 1e-4);
}

TEST(Llama, ConfigKindPresetAndInitWeightsFromAHuggingFaceFolder) {
  const fs::path dir = scratch_dir("llama_task");
  { std::ofstream(dir / "corpus.txt") << std::string(4000, 'a') + "In the beginning God created."; }
  const std::string toml = fmt::format(R"(
[model]
kind = "llama"
preset = "llama-tiny"
vocab_size = 256
context = 32
[data]
kind = "text"
path = "{}"
[train]
seq_len = 16
batch_size = 2
)",
                                       (dir / "corpus.txt").string());
  train::Config cfg = train::parse_config(toml, "llama.toml");
  EXPECT_EQ(cfg.model.n_kv_head, 2);
  EXPECT_EQ(cfg.model.ffn_hidden, 352);
  // The kind builds a Llama decoder from the keys: rotary, RMSNorm, SwiGLU, GQA, tied head.
  Generator g(3);
  std::unique_ptr<nn::Decoder> src = train::make_decoder(cfg, g);
  const nn::DecoderConfig& d = src->decoder_config();
  EXPECT_EQ(d.positions, nn::PositionKind::rotary);
  EXPECT_EQ(d.norm, nn::NormKind::rms_norm);
  EXPECT_EQ(d.mlp, nn::MlpKind::swiglu);
  EXPECT_EQ(d.n_kv_head, 2);
  EXPECT_TRUE(d.tied_head);
  EXPECT_DOUBLE_EQ(d.rope_theta, 500000);
  // model.init_weights takes a Hugging Face folder; the task's model starts from it.
  nn::save_hf_llama_weights(*src, (dir / "hf").string(), DType::f32);
  cfg.model.init_weights = (dir / "hf").string();
  std::unique_ptr<train::Task> task = train::make_task(cfg);
  const nn::NamedTensors a = src->named_parameters(), b = task->model().named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(bit_equal(a[i].second, b[i].second)) << a[i].first;
  // A weights file of another shape is refused naming the setting and the file.
  cfg.model.n_embd = 64;
  expect_error([&] { train::make_task(cfg); }, {"model.init_weights", "hf", "wrong shape"});
}
