// The training config: committed configs, overrides, error messages, presets, cross-key rules,
// TOML round trip, and docs/CONFIG.md kept equal to its generator.
#include <gtest/gtest.h>

#include "gradcheck.h"
#include "train/model_kinds.h"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "train/config.h"

using namespace tessera;
using namespace tessera::train;
using tessera::testing::expect_error;
namespace fs = std::filesystem;

namespace {

// The repository root, from this file's path (CMake compiles it by absolute path).
fs::path source_dir() {
  return fs::path(__FILE__).parent_path().parent_path();
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

Config parse(std::string_view toml, std::vector<std::string> overrides = {}) {
  return parse_config(toml, "config.toml", overrides);
}
Config with(std::vector<std::string> overrides) {
  return parse("", std::move(overrides));
}

}  // namespace

TEST(Config, CommittedConfigsParse) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(source_dir() / "configs"))
    if (entry.path().extension() == ".toml") files.push_back(entry.path());
  for (const char* name :
       {"gpt_kjv.toml", "mlp_fashion.toml", "cnn_fashion.toml", "gpt2_124m.toml"})
    EXPECT_TRUE(fs::exists(source_dir() / "configs" / name)) << name;
  ASSERT_GE(files.size(), 4u);
  for (const fs::path& f : files) {
    SCOPED_TRACE(f.string());
    EXPECT_NO_THROW(load_config(f));
  }

  Config kjv = load_config(source_dir() / "configs/gpt_kjv.toml");
  EXPECT_EQ(kjv.model.kind, "gpt");
  EXPECT_EQ(kjv.data.path, "data/kjv.txt");
  EXPECT_EQ(kjv.model.vocab_size, 256);
  EXPECT_EQ(kjv.optim.schedule, "cosine");
  EXPECT_GT(kjv.optim.warmup_steps, 0);

  Config gpt2 = load_config(source_dir() / "configs/gpt2_124m.toml");
  EXPECT_EQ(gpt2.model.n_layer, 12);
  EXPECT_EQ(gpt2.model.vocab_size, 50257);
  EXPECT_EQ(gpt2.data.kind, "shards");

  Config cnn = load_config(source_dir() / "configs/cnn_fashion.toml");
  EXPECT_EQ(cnn.data.path, "/usr/share/datasets/fashion-mnist");
}

TEST(Config, DefaultsComeFromTheKeyTable) {
  Config c;
  for (const ConfigKey& key : config_keys()) EXPECT_EQ(key.get(c), key.default_value) << key.name;
  EXPECT_NO_THROW(validate(c, "defaults"));
  EXPECT_EQ(with({}), c);  // an empty file is the defaults
  // Every key has a distinct name of the form section.field.
  for (const ConfigKey& key : config_keys()) {
    EXPECT_NE(key.name.find('.'), std::string_view::npos) << key.name;
    EXPECT_EQ(find_config_key(key.name), &key) << key.name;
  }
}

TEST(Config, OverridesOfEachType) {
  Config c = with({"train.steps=177", "optim.lr=3e-4", "optim.grad_clip=2", "data.path=a/b c.txt",
                   "train.precision=\"bf16\"", " train.seed = 9 "});
  EXPECT_EQ(c.train.steps, 177);
  EXPECT_DOUBLE_EQ(c.optim.lr, 3e-4);
  EXPECT_DOUBLE_EQ(c.optim.grad_clip, 2.0);  // an integer is a fine float
  EXPECT_EQ(c.data.path, "a/b c.txt");
  EXPECT_EQ(c.train.precision, "bf16");  // quotes the shell left are stripped
  EXPECT_EQ(c.train.seed, 9);

  // Later overrides win, and overrides win over the file.
  Config d = parse("[train]\nsteps = 1000\n", {"train.steps=2000", "train.steps=3000"});
  EXPECT_EQ(d.train.steps, 3000);
  EXPECT_EQ(parse("[train]\nsteps = 1000\n").train.steps, 1000);

  expect_error([] { with({"train.steps"}); }, {"command line", "train.steps", "key=value"});
}

TEST(Config, UnknownKeysNameTheNearestKey) {
  expect_error([] { parse("[train]\nsetps = 5\n"); },
               {"config.toml:2:", "unknown key 'train.setps'", "did you mean 'train.steps'?"});
  expect_error([] { parse("[trian]\nsteps = 5\n"); },
               {"config.toml:1:", "unknown key 'trian'", "did you mean 'train'?"});
  expect_error([] { parse("steps = 5\n"); }, {"unknown key 'steps'", "'train.steps'"});
  expect_error([] { parse("[model]\nsteps = 5\n"); }, {"'model.steps'", "'train.steps'"});
  expect_error([] { parse("[model.foo]\nx = 1\n"); }, {"unknown key 'model.foo'"});
  expect_error([] { with({"optim.weight_decy=0.1"}); },
               {"command line", "unknown key 'optim.weight_decy'", "'optim.weight_decay'"});
  expect_error([] { with({"warmup_steps=3"}); }, {"'optim.warmup_steps'"});
}

TEST(Config, WrongTypes) {
  expect_error([] { with({"train.steps=abc"}); },
               {"command line", "train.steps", "'abc'", "integer"});
  expect_error([] { with({"train.steps=1.5"}); }, {"train.steps", "'1.5'", "integer"});
  expect_error([] { with({"train.steps="}); }, {"train.steps", "integer"});
  expect_error([] { with({"optim.lr=fast"}); }, {"optim.lr", "'fast'", "float"});
  expect_error([] { with({"optim.lr=nan"}); }, {"optim.lr", "float"});
  expect_error([] { parse("[train]\nsteps = \"abc\"\n"); },
               {"config.toml:2:", "train.steps", "abc", "string", "expected an integer"});
  expect_error([] { parse("[train]\nsteps = 2.0\n"); }, {"train.steps", "float", "integer"});
  expect_error([] { parse("[optim]\nlr = true\n"); }, {"optim.lr", "boolean", "float"});
  expect_error([] { parse("[model]\nkind = 3\n"); }, {"model.kind", "expected a string"});
  expect_error([] { parse("[train.steps]\n"); }, {"train.steps", "a table"});
  expect_error([] { parse("[data]\npath = [\"a\"]\n"); }, {"data.path", "an array"});
}

TEST(Config, OutOfRange) {
  expect_error([] { with({"train.steps=0"}); }, {"command line", "train.steps = 0", ">= 1"});
  expect_error([] { with({"parallel.zero_stage=4"}); }, {"parallel.zero_stage = 4", "[0, 3]"});
  expect_error([] { with({"model.dropout=1"}); }, {"model.dropout = 1", "[0, 1)"});
  expect_error([] { with({"optim.lr=0"}); }, {"optim.lr = 0", "> 0"});
  expect_error([] { parse("[train]\nbatch_size = -2\n"); },
               {"config.toml:2:", "train.batch_size = -2", ">= 1"});
  EXPECT_EQ(with({"parallel.zero_stage=3"}).parallel.zero_stage, 3);  // bounds are inclusive

  // validate() checks ranges of configs built in code too.
  Config c;
  c.train.eval_batches = 0;
  expect_error([&] { validate(c, "code"); }, {"code", "train.eval_batches = 0", ">= 1"});
}

TEST(Config, Choices) {
  expect_error([] { with({"model.kind=transformer"}); },
               {"model.kind = 'transformer'", "one of \"gpt\", \"llama\", \"mlp\", \"cnn\""});
  expect_error([] { parse("[optim]\nschedule = \"cosin\"\n"); },
               {"config.toml:2:", "optim.schedule = 'cosin'", "did you mean 'cosine'?"});
  expect_error([] { with({"model.preset=gpt2-125m"}); }, {"model.preset", "'gpt2-124m'"});
  EXPECT_EQ(with({"optim.name=sgd"}).optim.name, "sgd");
}

TEST(Config, MicroBatchesMustDivideBatchSize) {
  expect_error([] { parse("[train]\nbatch_size = 30\nmicro_batches = 4\n"); },
               {"config.toml", "train.batch_size = 30", "train.micro_batches = 4"});
  EXPECT_EQ(parse("[train]\nbatch_size = 32\nmicro_batches = 4\n").train.micro_batches, 4);
}

TEST(Config, SeqLenAtMostContextAfterPresets) {
  expect_error(
      [] {
        with({"model.context=64", "train.seq_len=128"});
      },
      {"train.seq_len = 128", "model.context = 64"});
  // The preset's context (1024) admits seq_len 1024, which the default context would not.
  expect_error([] { with({"train.seq_len=1024"}); }, {"model.context = 256"});
  EXPECT_EQ(with({"model.preset=gpt2-124m", "train.seq_len=1024"}).train.seq_len, 1024);
  // An explicit context overrides the preset's, and is what seq_len is checked against.
  expect_error(
      [] {
        with({"model.preset=gpt2-124m", "model.context=512", "train.seq_len=1024"});
      },
      {"model.context = 512"});
  // Classifiers have no sequence, so seq_len is not checked for them.
  EXPECT_NO_THROW(load_config(source_dir() / "configs/mlp_fashion.toml",
                              std::vector<std::string>{"train.seq_len=100000"}));
}

TEST(Config, OtherRules) {
  expect_error([] { with({"model.kind=mlp"}); }, {"model.kind = 'mlp'", "data.kind = 'text'"});
  expect_error([] { with({"data.kind=fashion-mnist"}); }, {"model.kind = 'gpt'"});
  expect_error([] { with({"model.vocab_size=100"}); }, {"model.vocab_size = 100", ">= 256"});
  EXPECT_EQ(with({"data.kind=shards", "model.vocab_size=100"}).model.vocab_size, 100);
  expect_error(
      [] {
        with({"model.n_embd=100", "model.n_head=3"});
      },
      {"model.n_embd = 100", "model.n_head = 3"});
  expect_error([] { with({"optim.lr=1e-3", "optim.min_lr=1e-2"}); }, {"optim.min_lr", "optim.lr"});
  expect_error(
      [] {
        with({"optim.schedule=cosine", "train.steps=10", "optim.warmup_steps=10"});
      },
      {"optim.warmup_steps = 10", "train.steps = 10", "cosine"});
  expect_error(
      [] {
        with({"model.kind=cnn", "data.kind=fashion-mnist", "model.preset=gpt2-124m"});
      },
      {"model.preset = 'gpt2-124m'", "model.kind = 'cnn'"});
  for (const char* stage : {"0", "1", "2", "3"})  // every ZeRO stage runs on a GPU
    EXPECT_NO_THROW(with({"train.device=cuda", std::string("parallel.zero_stage=") + stage}))
        << stage;
  EXPECT_NO_THROW(with({"train.device=cpu", "parallel.zero_stage=3"}));
  expect_error([] { with({"train.device=gpu"}); }, {"train.device", "\"cpu\", \"cuda\""});
  // The decoder options are Llama's; GQA's heads must divide.
  expect_error([] { with({"model.n_kv_head=2"}); },
               {"model.n_kv_head is set", "model.kind = 'gpt'"});
  expect_error([] { with({"model.kind=gpt", "model.head=untied"}); }, {"model.head", "'gpt'"});
  expect_error(
      [] {
        with({"model.kind=llama", "model.n_head=4", "model.n_kv_head=3"});
      },
      {"model.n_head = 4", "model.n_kv_head = 3"});
  EXPECT_NO_THROW(with({"model.kind=llama", "model.n_head=4", "model.n_kv_head=2"}));
  expect_error(
      [] {
        with({"model.kind=gpt", "model.preset=llama-tiny"});
      },
      {"llama-tiny", "is a llama preset", "model.kind = 'gpt'"});
  // Mesh axes: tensor parallelism splits decoders only; pipeline and context parallelism are
  // refused until they exist.
  EXPECT_NO_THROW(with({"parallel.tp=4"}));
  expect_error(
      [] {
        with({"model.kind=mlp", "data.kind=fashion-mnist", "parallel.tp=2"});
      },
      {"parallel.tp = 2", "model.kind = 'mlp'"});
  EXPECT_NO_THROW(with({"parallel.tp=2", "train.checkpoint_every=10"}));
  // Pipeline parallelism: ZeRO-3, ZeRO with a tied head and an interleaved schedule whose
  // micro-batches do not divide are refused; virtual stages need interleaving.
  EXPECT_NO_THROW(with({"parallel.pp=2"}));
  EXPECT_NO_THROW(
      with({"parallel.pp=2", "model.kind=llama", "model.head=untied", "parallel.zero_stage=2"}));
  expect_error(
      [] {
        with({"parallel.pp=2", "parallel.zero_stage=3"});
      },
      {"parallel.pp = 2", "parallel.zero_stage = 3"});
  expect_error(
      [] {
        with({"parallel.pp=2", "parallel.zero_stage=1"});
      },
      {"parallel.zero_stage = 1", "tied head"});
  EXPECT_NO_THROW(with({"parallel.pp=2", "train.checkpoint_every=5"}));
  expect_error([] { with({"parallel.pp_virtual_stages=2"}); },
               {"parallel.pp_virtual_stages = 2", "interleaved_1f1b"});
  expect_error(
      [] {
        with({"parallel.pp=2", "parallel.pp_schedule=interleaved_1f1b",
              "parallel.pp_virtual_stages=2", "train.batch_size=12", "train.micro_batches=3"});
      },
      {"train.micro_batches = 3", "multiple of parallel.pp = 2"});
  // Context parallelism: two chunks per rank of each sequence.
  EXPECT_NO_THROW(with({"parallel.cp=2", "train.seq_len=128"}));
  expect_error(
      [] {
        with({"parallel.cp=3", "train.seq_len=128"});
      },
      {"parallel.cp = 3", "train.seq_len = 128", "multiple of 6"});
  expect_error(
      [] {
        with({"parallel.cp=2", "parallel.tp=2", "parallel.sequence_parallel=1"});
      },
      {"parallel.cp = 2", "sequence_parallel"});
  expect_error([] { with({"parallel.tp=0"}); }, {"parallel.tp"});
  EXPECT_NO_THROW(with({"parallel.tp=2", "parallel.sequence_parallel=1"}));
  expect_error([] { with({"parallel.sequence_parallel=2"}); }, {"parallel.sequence_parallel"});
  EXPECT_EQ(config_rules().size(), 12u);
}

TEST(Config, MissingFile) {
  expect_error([] { load_config("/nonexistent/dir/run.toml"); },
               {"/nonexistent/dir/run.toml", "does not exist"});
  expect_error([] { load_config(source_dir() / "configs"); }, {"configs", "not a regular file"});
}

TEST(Config, SyntaxErrorHasLineAndColumn) {
  expect_error([] { parse("[train]\nsteps = 5\nbatch_size = = 3\n"); },
               {"config.toml:3:", "syntax error"});
  expect_error([] { parse("[model\nkind = \"gpt\"\n"); }, {"config.toml:1:", "syntax error"});
}

TEST(Config, PresetsAndExplicitOverrides) {
  for (const ModelKind& k : model_kinds()) {
    for (const ModelPreset& p : k.presets) {
      SCOPED_TRACE(std::string(p.name));
      Config c = with({fmt::format("model.kind={}", k.name), fmt::format("model.preset={}", p.name),
                       "data.kind=shards"});
      EXPECT_EQ(c.model.preset, p.name);
      EXPECT_EQ(c.model.n_layer, p.n_layer);
      EXPECT_EQ(c.model.n_head, p.n_head);
      EXPECT_EQ(c.model.n_embd, p.n_embd);
      EXPECT_EQ(c.model.context, p.context);
      EXPECT_EQ(c.model.vocab_size, p.vocab_size);
      EXPECT_EQ(c.model.n_kv_head, p.n_kv_head);
      EXPECT_EQ(c.model.ffn_hidden, p.ffn_hidden);
    }
  }
  const ModelPreset& medium = model_kind("gpt").presets[1];
  EXPECT_EQ(medium.name, "gpt2-350m");
  EXPECT_EQ(medium.n_layer, 24);
  EXPECT_EQ(medium.n_head, 16);
  EXPECT_EQ(medium.n_embd, 1024);

  // Explicit keys win over the preset, whether the preset comes before or after them.
  Config a = parse("[model]\npreset = \"gpt2-774m\"\nn_layer = 6\n");
  EXPECT_EQ(a.model.n_layer, 6);
  EXPECT_EQ(a.model.n_embd, 1280);
  EXPECT_EQ(a.model.vocab_size, 50257);
  Config b = parse("[model]\nn_layer = 6\nvocab_size = 256\n", {"model.preset=gpt2-1.5b"});
  EXPECT_EQ(b.model.n_layer, 6);
  EXPECT_EQ(b.model.vocab_size, 256);
  EXPECT_EQ(b.model.n_head, 25);
  // An override of the preset replaces the file's preset.
  Config c = parse("[model]\npreset = \"gpt2-774m\"\n[data]\nkind = \"shards\"\n",
                   {"model.preset=gpt2-124m"});
  EXPECT_EQ(c.model.n_layer, 12);
}

TEST(Config, TomlRoundTrip) {
  std::vector<Config> configs;
  for (const char* name :
       {"gpt_kjv.toml", "mlp_fashion.toml", "cnn_fashion.toml", "gpt2_124m.toml"})
    configs.push_back(load_config(source_dir() / "configs" / name));
  Config tricky;
  tricky.data.path = "dir with \"quotes\"\\back\tslash\nnew line \x01 caf\xc3\xa9";
  tricky.data.val_path = "";
  tricky.optim.lr = 1.0 / 3.0;
  tricky.optim.min_lr = 1e-300;
  tricky.optim.eps = 3.0;
  tricky.optim.weight_decay = 0.1 + 0.2;
  tricky.parallel.bucket_mb = 1e20;
  tricky.train.seed = INT64_MAX;
  configs.push_back(tricky);

  for (const Config& c : configs) {
    std::string text = to_toml(c);
    SCOPED_TRACE(text);
    Config back = parse_config(text, "resolved.toml");
    EXPECT_EQ(back, c);
    EXPECT_EQ(to_toml(back), text);
    for (const ConfigKey& key : config_keys())  // every key explicit
      EXPECT_NE(text.find(std::string(key.name.substr(key.name.find('.') + 1)) + " = "),
                std::string::npos)
          << key.name;
  }
}

TEST(Config, DocsMatchGenerator) {
  fs::path docs = source_dir() / "docs/CONFIG.md";
  std::string generated = config_reference_markdown();
  if (std::getenv("TESSERA_UPDATE_DOCS")) std::ofstream(docs, std::ios::binary) << generated;
  ASSERT_TRUE(fs::exists(docs)) << docs;
  EXPECT_EQ(read_text(docs), generated)
      << "docs/CONFIG.md is stale: rerun this test with TESSERA_UPDATE_DOCS=1";
  for (const ConfigKey& key : config_keys())
    EXPECT_NE(generated.find(fmt::format("`{}`", key.name)), std::string::npos) << key.name;
  for (std::string_view rule : config_rules())
    EXPECT_NE(generated.find(rule), std::string::npos) << rule;
}
