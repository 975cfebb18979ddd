// Modules, GPT and classifiers: names and order of parameters, sizes, initialisation, losses at
// initialisation, gradients through whole models, a training sanity check, and the llm.c
// checkpoint round trip.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "autograd/grad_mode.h"
#include "gradcheck.h"
#include "nn/classifiers.h"
#include "nn/gpt.h"
#include "nn/llmc_import.h"
#include "ops/ops.h"

using namespace tessera;
using namespace tessera::nn;
using namespace tessera::testing;

namespace {

GPTConfig tiny_config() {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 4, c.n_embd = 32, c.context = 16, c.vocab_size = 64;
  return c;
}

Tensor random_ids(int64_t B, int64_t T, int64_t vocab, uint64_t seed) {
  Generator g(seed);
  std::vector<int32_t> v(size_t(B * T));
  for (auto& x : v) x = int32_t(g.next_u64() % uint64_t(vocab));
  return Tensor::from_ints(v, Shape{B, T});
}

double sample_std(const Tensor& t) {
  std::vector<float> v = t.to_vector();
  double m = 0, s = 0;
  for (float x : v) m += x;
  m /= double(v.size());
  for (float x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size()));
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.contiguous().raw_data(), b.contiguous().raw_data(), a.nbytes()) == 0;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("tessera_test_nn_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

// A module with interleaved parameters and children, to pin down the documented order.
struct Toy : Module {
  Tensor a = Tensor::zeros(Shape{2});
  Linear inner;
  Tensor b = Tensor::zeros(Shape{3});
  explicit Toy(Generator& g) : inner(2, 3, true, g, 1.f) {
    register_parameter("a", a);
    register_module("inner", inner);
    register_parameter("b", b);
  }
};
struct Outer : Module {
  Toy toy;
  Tensor c = Tensor::zeros(Shape{1});
  explicit Outer(Generator& g) : toy(g) {
    register_parameter("c", c);
    register_module("toy", toy);
  }
};

}  // namespace

TEST(Module, RegistrationOrderAndHierarchicalNames) {
  Generator g(1);
  Outer m(g);
  std::vector<std::string> names;
  for (auto& [name, t] : m.named_parameters()) {
    names.push_back(name);
    EXPECT_EQ(t.name(), name);  // the tensors themselves carry their full names
    EXPECT_TRUE(t.requires_grad());
  }
  EXPECT_EQ(names, (std::vector<std::string>{"c", "toy.a", "toy.inner.weight", "toy.inner.bias",
                                             "toy.b"}));
  std::vector<Tensor> params = m.parameters();
  ASSERT_EQ(params.size(), 5u);
  EXPECT_TRUE(params[2].same(m.toy.inner.weight));
  EXPECT_EQ(m.num_parameters(), 1 + 2 + 6 + 3 + 3);
}

TEST(Module, TrainEvalReachesChildrenAndDuplicatesAreRejected) {
  Generator g(1);
  Outer m(g);
  EXPECT_TRUE(m.toy.inner.training());
  m.eval();
  EXPECT_FALSE(m.training());
  EXPECT_FALSE(m.toy.inner.training());
  m.train();
  EXPECT_TRUE(m.toy.inner.training());
  struct Dup : Module {
    Tensor x = Tensor::zeros(Shape{1}), y = Tensor::zeros(Shape{1});
    Dup() {
      register_parameter("x", x);
      register_parameter("x", y);
    }
  };
  expect_error([] { Dup d; }, {"'x'", "already registered"});
}

TEST(GPT, ParameterNamesOrderAndShapesFollowHuggingFace) {
  Generator g(1);
  GPTConfig c = tiny_config();
  GPT model(c, g);
  std::vector<std::string> expected = {"wte.weight", "wpe.weight"};
  for (int i = 0; i < c.n_layer; ++i)
    for (const char* s :
         {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
          "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight",
          "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"})
      expected.push_back("h." + std::to_string(i) + "." + s);
  expected.push_back("ln_f.weight");
  expected.push_back("ln_f.bias");
  std::vector<std::string> names;
  std::map<std::string, Tensor> byname;
  for (auto& [name, t] : model.named_parameters()) {
    names.push_back(name);
    byname[name] = t;
    EXPECT_EQ(t.name(), name);
    EXPECT_EQ(t.dtype(), DType::f32);
  }
  EXPECT_EQ(names, expected);
  const int64_t C = c.n_embd;
  EXPECT_EQ(byname["wte.weight"].shape(), (Shape{c.vocab_size, C}));
  EXPECT_EQ(byname["wpe.weight"].shape(), (Shape{c.context, C}));
  EXPECT_EQ(byname["h.1.attn.c_attn.weight"].shape(), (Shape{3 * C, C}));
  EXPECT_EQ(byname["h.1.mlp.c_fc.weight"].shape(), (Shape{4 * C, C}));
  EXPECT_EQ(byname["h.1.mlp.c_proj.weight"].shape(), (Shape{C, 4 * C}));
}

TEST(GPT, ParameterCounts) {
  // Published sizes of the Hugging Face GPT-2 checkpoints.
  EXPECT_EQ(gpt_num_parameters(gpt_preset("gpt2-124m")), 124439808);
  EXPECT_EQ(gpt_num_parameters(gpt_preset("gpt2-350m")), 354823168);
  EXPECT_EQ(gpt_num_parameters(gpt_preset("gpt2-774m")), 774030080);
  EXPECT_EQ(gpt_num_parameters(gpt_preset("gpt2-1.5b")), 1557611200);
  GPTConfig p = gpt_preset("gpt2-350m");
  EXPECT_EQ(p.n_layer, 24);
  EXPECT_EQ(p.n_head, 16);
  EXPECT_EQ(p.n_embd, 1024);
  EXPECT_EQ(p.context, 1024);
  EXPECT_EQ(p.vocab_size, 50257);
  // The formula agrees with what the model actually allocates.
  for (auto [L, H, C, T, V] : {std::tuple{1, 1, 8, 4, 10}, {2, 4, 32, 16, 64}, {3, 2, 12, 7, 5}}) {
    GPTConfig c;
    c.n_layer = L, c.n_head = H, c.n_embd = C, c.context = T, c.vocab_size = V;
    Generator g(0);
    GPT m(c, g);
    EXPECT_EQ(m.num_parameters(), gpt_num_parameters(c));
  }
}

TEST(GPT, FlopsPerToken) {
  // 6 N + 12 L C T with N the 124M model without wpe (123,653,376), as nanoGPT / PaLM count.
  GPTConfig c = gpt_preset("gpt2-124m");
  EXPECT_DOUBLE_EQ(gpt_flops_per_token(c, 1024), 6.0 * 123653376 + 12.0 * 12 * 768 * 1024);
  EXPECT_DOUBLE_EQ(gpt_flops_per_token(c, 0), 6.0 * 123653376);
}

TEST(GPT, ConfigErrors) {
  expect_error([] { gpt_preset("gpt3"); }, {"gpt3", "gpt2-124m", "gpt2-350m", "gpt2-1.5b"});
  GPTConfig c = tiny_config();
  c.n_embd = 30;  // not a multiple of 4 heads
  Generator g(0);
  expect_error([&] { GPT m(c, g); }, {"n_embd", "30", "n_head"});
  c = tiny_config();
  c.dropout = 1.f;
  expect_error([&] { GPT m(c, g); }, {"dropout"});
}

TEST(GPT, InitialisationFollowsGPT2AndIsSeeded) {
  GPTConfig c = tiny_config();
  Generator g1(7), g2(7), g3(8);
  GPT a(c, g1), b(c, g2), other(c, g3);
  const Block& blk = *a.h[1];
  EXPECT_NEAR(sample_std(a.wte.weight), 0.02, 0.002);
  EXPECT_NEAR(sample_std(blk.mlp.c_fc.weight), 0.02, 0.002);
  const double proj = 0.02 / std::sqrt(2.0 * c.n_layer);
  EXPECT_NEAR(sample_std(blk.mlp.c_proj.weight), proj, 0.1 * proj);
  EXPECT_NEAR(sample_std(blk.attn.c_proj.weight), proj, 0.1 * proj);
  for (float v : blk.attn.c_attn.bias.to_vector()) EXPECT_EQ(v, 0.f);
  for (float v : blk.ln_1.weight.to_vector()) EXPECT_EQ(v, 1.f);
  for (float v : a.ln_f.bias.to_vector()) EXPECT_EQ(v, 0.f);
  auto pa = a.parameters(), pb = b.parameters(), po = other.parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(bit_equal(pa[i], pb[i])) << pa[i].name();
  EXPECT_FALSE(bit_equal(a.wte.weight, other.wte.weight));
}

TEST(GPT, LossAtInitialisationIsNearLnVocab) {
  GPTConfig c = tiny_config();
  Generator g(3);
  GPT model(c, g);
  Tensor ids = random_ids(4, c.context, c.vocab_size, 11);
  Tensor targets = random_ids(4, c.context, c.vocab_size, 12);
  Tensor logits = model.forward(ids);
  EXPECT_EQ(logits.shape(), (Shape{4, c.context, c.vocab_size}));
  EXPECT_NEAR(model.loss(ids, targets).item(), std::log(double(c.vocab_size)), 0.05);
}

TEST(GPT, InputErrors) {
  GPTConfig c = tiny_config();
  Generator g(3);
  GPT model(c, g);
  expect_error([&] { model.forward(random_ids(1, c.context + 1, c.vocab_size, 1)); },
               {"Decoder::forward", "17", "context = 16"});
  expect_error([&] { model.forward(Tensor::zeros(Shape{1, 4})); }, {"Decoder::forward", "i32"});
  Tensor ids = random_ids(2, 4, c.vocab_size, 1);
  expect_error([&] { model.loss(ids, random_ids(2, 5, c.vocab_size, 1)); }, {"targets"});
}

TEST(GPT, DropoutOnlyInTrainingMode) {
  GPTConfig c = tiny_config();
  c.dropout = 0.2f;
  Generator g(3);
  GPT model(c, g);
  Tensor ids = random_ids(2, 8, c.vocab_size, 5);
  model.eval();
  Tensor e1 = model.forward(ids), e2 = model.forward(ids);
  EXPECT_TRUE(bit_equal(e1, e2));
  model.train();
  Tensor t1 = model.forward(ids), t2 = model.forward(ids);
  EXPECT_FALSE(bit_equal(t1, e1));
  EXPECT_FALSE(bit_equal(t1, t2));  // the dropout stream advances
}

TEST(GPT, GradientsMatchFiniteDifferences) {
  GPTConfig c = tiny_config();
  c.n_layer = 2, c.n_embd = 16, c.n_head = 2, c.context = 6, c.vocab_size = 12;
  Generator g(5);
  GPT model(c, g);
  Tensor ids = random_ids(2, 6, c.vocab_size, 9);
  Tensor targets = random_ids(2, 6, c.vocab_size, 10);
  GradCheckOptions opt;
  opt.max_checks = 12;
  // wte is used twice (lookup and tied head); c_attn and ln_2 sit inside a block.
  for (Tensor p : {model.wte.weight, model.h[0]->attn.c_attn.weight, model.h[1]->ln_2.weight,
                   model.h[1]->mlp.c_proj.weight}) {
    SCOPED_TRACE(p.name());
    check_gradients([&](auto&) { return model.forward(ids); }, {p}, opt);
    // The loss gradient itself, scaled so that it is well above the check's absolute tolerance.
    check_gradients([&](auto&) { return ops::scale(model.loss(ids, targets), 100.f); }, {p}, opt);
  }
}

TEST(GPT, TinyModelOverfitsAFixedBatchWithSGD) {
  GPTConfig c = tiny_config();
  Generator g(21);
  GPT model(c, g);
  Tensor ids = random_ids(4, c.context, c.vocab_size, 31);
  Tensor targets = random_ids(4, c.context, c.vocab_size, 32);
  const float lr = 0.5f;
  float first = 0, last = 0;
  for (int step = 0; step < 50; ++step) {
    model.zero_grad();
    Tensor loss = model.loss(ids, targets);
    loss.backward();
    (step == 0 ? first : last) = loss.item();
    NoGradGuard no_grad;
    for (Tensor p : model.parameters()) {
      float* w = p.data<float>();
      std::vector<float> gr = p.grad().to_vector();
      for (size_t i = 0; i < gr.size(); ++i) w[i] -= lr * gr[i];
    }
  }
  EXPECT_NEAR(first, std::log(64.0), 0.05);
  EXPECT_LT(last, 0.3f * first) << "loss went from " << first << " to " << last;
}

TEST(Classifiers, MLPShapesNamesAndInit) {
  MLPClassifierConfig cfg;
  Generator g(1);
  MLPClassifier m(cfg, g);
  std::vector<std::string> names;
  for (auto& [n, t] : m.named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"layers.0.weight", "layers.0.bias", "layers.1.weight",
                                             "layers.1.bias", "head.weight", "head.bias"}));
  EXPECT_EQ(m.num_parameters(), 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10);
  EXPECT_NEAR(sample_std(m.layers[0]->weight), std::sqrt(2.0 / 784), 0.02 * std::sqrt(2.0 / 784));
  EXPECT_NEAR(sample_std(m.head->weight), std::sqrt(1.0 / 256), 0.1 * std::sqrt(1.0 / 256));
  Tensor x = Tensor::randn(Shape{3, 1, 28, 28}, g);
  EXPECT_EQ(m.forward(x).shape(), (Shape{3, 10}));
  expect_error([&] { m.forward(Tensor::randn(Shape{3, 100}, g)); }, {"MLPClassifier", "784"});
}

TEST(Classifiers, CNNShapesAndGradients) {
  CNNClassifierConfig cfg;
  cfg.channels = 4;
  Generator g(2);
  CNNClassifier m(cfg, g);
  EXPECT_EQ(m.conv1.weight.shape(), (Shape{4, 1, 3, 3}));
  EXPECT_EQ(m.conv2.weight.shape(), (Shape{8, 4, 3, 3}));
  EXPECT_EQ(m.head.weight.shape(), (Shape{10, 8 * 7 * 7}));
  EXPECT_NEAR(sample_std(m.conv2.weight), std::sqrt(2.0 / 36), 0.1 * std::sqrt(2.0 / 36));
  Tensor x = Tensor::randn(Shape{2, 1, 28, 28}, g);
  EXPECT_EQ(m.forward(x).shape(), (Shape{2, 10}));
  expect_error([&] { m.forward(Tensor::randn(Shape{2, 1, 20, 20}, g)); }, {"CNNClassifier"});

  CNNClassifierConfig small;
  small.channels = 2, small.height = 8, small.width = 8;
  CNNClassifier s(small, g);
  Tensor xs = Tensor::randn(Shape{2, 1, 8, 8}, g);
  GradCheckOptions opt;
  opt.max_checks = 12;
  for (Tensor p : {s.conv1.weight, s.conv2.bias, s.head.weight}) {
    SCOPED_TRACE(p.name());
    check_gradients([&](auto&) { return s.forward(xs); }, {p}, opt);
  }
}

TEST(LlmcCheckpoint, ExportImportRoundTripIsExact) {
  GPTConfig c = tiny_config();
  c.vocab_size = 60;  // padded to 128 rows in the file
  Generator g(4);
  GPT model(c, g);
  const std::string path = temp_path("rt.bin");
  export_llmc_checkpoint(model, path);
  EXPECT_EQ(std::filesystem::file_size(path),
            1024 + 4 * uint64_t(gpt_num_parameters(c) + (128 - 60) * c.n_embd));
  LlmcHeader h = read_llmc_header(path);
  EXPECT_EQ(h.version, 3);
  EXPECT_EQ(h.padded_vocab, 128);
  auto loaded = import_llmc_checkpoint(path);
  EXPECT_EQ(loaded->config().n_layer, c.n_layer);
  EXPECT_EQ(loaded->config().vocab_size, 60);
  auto pa = model.named_parameters(), pb = loaded->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i)
    EXPECT_TRUE(bit_equal(pa[i].second, pb[i].second)) << pa[i].first;
  Tensor ids = random_ids(2, c.context, c.vocab_size, 3);
  EXPECT_TRUE(bit_equal(model.forward(ids), loaded->forward(ids)));

  // bf16 (version 5): the weights come back rounded to bf16.
  export_llmc_checkpoint(model, path, DType::bf16);
  EXPECT_EQ(read_llmc_header(path).version, 5);
  auto half = import_llmc_checkpoint(path);
  EXPECT_TRUE(bit_equal(half->h[1]->attn.c_attn.weight,
                        model.h[1]->attn.c_attn.weight.to(DType::bf16).to(DType::f32)));
  EXPECT_LT(relative_error(half->forward(ids), model.forward(ids)), 1e-2);
  std::filesystem::remove(path);
}

TEST(LlmcCheckpoint, CorruptHeadersNameTheFileAndField) {
  GPTConfig c = tiny_config();
  Generator g(4);
  GPT model(c, g);
  const std::string good = temp_path("good.bin"), bad = temp_path("bad.bin");
  export_llmc_checkpoint(model, good);
  auto patched = [&](int index, int32_t value) {
    std::filesystem::copy_file(good, bad, std::filesystem::copy_options::overwrite_existing);
    std::fstream f(bad, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(index * 4);
    f.write(reinterpret_cast<const char*>(&value), 4);
  };
  struct Case {
    int index;
    int32_t value;
    const char* field;
  };
  for (Case k : {Case{0, 12345, "'magic'"}, Case{1, 4, "'version'"}, Case{3, 0, "'V'"},
                 Case{4, -2, "'L'"}, Case{5, 5, "'NH'"}, Case{7, 10, "'Vp'"},
                 Case{4, 3, "file size"}, Case{6, 1 << 30, "overflow"}}) {
    patched(k.index, k.value);
    expect_error([&] { import_llmc_checkpoint(bad); }, {bad, k.field});
  }
  // Truncated parameters, and a file shorter than the header.
  std::filesystem::copy_file(good, bad, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::resize_file(bad, std::filesystem::file_size(good) - 4);
  expect_error([&] { import_llmc_checkpoint(bad); }, {bad, "file size"});
  std::filesystem::resize_file(bad, 100);
  expect_error([&] { import_llmc_checkpoint(bad); }, {bad, "header"});
  expect_error([&] { import_llmc_checkpoint(bad + ".missing"); }, {bad + ".missing"});
  // A model of another size refuses the file.
  GPTConfig other = c;
  other.n_layer = 1;
  GPT small(other, g);
  expect_error([&] { load_llmc_weights(small, good); }, {good, "L 2", "model has 1"});
  std::filesystem::remove(good);
  std::filesystem::remove(bad);
}
