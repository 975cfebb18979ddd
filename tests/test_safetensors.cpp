// safetensors: exact round trips of every dtype, atomic writes, defensive reading of corrupt
// files (each error names the file and the tensor or field), module weights save / load, and
// import of Hugging Face GPT-2 weights (Conv1D [in, out] layout).
#include <gtest/gtest.h>

#include "gradcheck.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "nn/weights.h"

using namespace tessera;
using namespace tessera::nn;
using tessera::testing::expect_error;
namespace fs = std::filesystem;

namespace {

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.contiguous().raw_data(), b.contiguous().raw_data(), a.nbytes()) == 0;
}

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() /
          ("tessera_test_st_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

// Writes a safetensors file byte by byte: header length (or `length_override`), the header
// text, then `data_bytes` bytes of data.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes,
               int64_t length_override = -1) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  uint64_t n = length_override >= 0 ? uint64_t(length_override) : header.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << header;
  std::string data(data_bytes, '\x01');
  f << data;
}

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

}  // namespace

TEST(Safetensors, RoundTripOfEveryDtypeIsBitExact) {
  Generator g(1);
  Tensor f = Tensor::randn(Shape{3, 5}, g);
  Tensor i64 = Tensor::from_ints({-3, 7, 1 << 30, -1}, Shape{2, 2}).to(DType::i64);
  Tensor u16 = Tensor::from_ints({0, 1, 65535, 300}, Shape{4}).to(DType::u16);
  NamedTensors in = {{"f32", f},
                     {"bf16", Tensor::randn(Shape{2, 3, 4}, g, 0.f, 1.f, DType::bf16)},
                     {"f16", Tensor::randn(Shape{7}, g, 0.f, 1.f, DType::f16)},
                     {"i32", Tensor::from_ints({1, -2, 3, 2147483647}, Shape{4})},
                     {"i64", i64},
                     {"u16", u16},
                     {"scalar", Tensor::full(Shape{}, 2.5)},
                     {"empty", Tensor::zeros(Shape{0, 3})},
                     {"transposed", f.transpose_view(0, 1)}};  // written contiguously
  const std::string path = temp_path("all.safetensors");
  write_safetensors(path, in, {{"format", "pt"}, {"step", "12"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  // The data section starts 8-byte aligned.
  std::ifstream raw(path, std::ios::binary);
  uint64_t n = 0;
  raw.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);

  SafetensorsFile out = read_safetensors(path);
  EXPECT_EQ(out.metadata, (std::map<std::string, std::string>{{"format", "pt"}, {"step", "12"}}));
  ASSERT_EQ(out.tensors.size(), in.size());
  for (const auto& [name, t] : in) {
    ASSERT_TRUE(out.tensors.count(name)) << name;
    EXPECT_TRUE(bit_equal(out.tensors[name], t)) << name;
  }
  EXPECT_EQ(out.tensors["u16"].to_vector()[2], 65535.f);
  EXPECT_EQ(out.tensors["transposed"].shape(), (Shape{5, 3}));
  fs::remove(path);
}

TEST(Safetensors, WriterErrorsAndAtomicReplacement) {
  const std::string path = temp_path("atomic.safetensors");
  Tensor t = Tensor::ones(Shape{2});
  write_safetensors(path, NamedTensors{{"old", t}});
  expect_error(
      [&] {
        write_safetensors(path, NamedTensors{{"a", t}, {"a", t}});
      },
      {path, "duplicate", "'a'"});
  // Make the temporary file impossible to create: the old file must survive intact.
  fs::create_directory(path + ".tmp");
  expect_error([&] { write_safetensors(path, NamedTensors{{"new", t}}); }, {path + ".tmp"});
  fs::remove(path + ".tmp");
  EXPECT_EQ(read_safetensors(path).tensors.count("old"), 1u);
  expect_error([] { write_safetensors("/nonexistent-dir/x.safetensors", NamedTensors{}); },
               {"/nonexistent-dir/x.safetensors"});
  fs::remove(path);
}

TEST(Safetensors, CorruptFilesNameTheFileAndField) {
  const std::string path = temp_path("bad.safetensors");
  auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
           ",\"data_offsets\":" + offsets + "}";
  };
  auto check = [&](const std::string& header, size_t data, std::initializer_list<std::string> frag,
                   int64_t length_override = -1) {
    write_raw(path, header, data, length_override);
    std::vector<std::string> all(frag);
    all.push_back(path);
    try {
      read_safetensors(path);
      ADD_FAILURE() << "no error for header " << header;
    } catch (const Error& e) {
      for (const std::string& s : all)
        EXPECT_NE(std::string(e.what()).find(s), std::string::npos)
            << "'" << s << "' missing from: " << e.what();
    }
  };
  const std::string ok = "{" + entry("w", "F32", "[2,3]", "[0,24]") + "}";
  write_raw(path, ok, 24);
  EXPECT_EQ(read_safetensors(path).tensors.at("w").shape(), (Shape{2, 3}));  // the base is valid

  check(ok, 24, {"header length", "1000000"}, 1000000);  // longer than the file
  check("{\"w\":", 0, {"not valid JSON"});
  check("[1, 2]", 0, {"header", "expected an object"});
  check("{" + entry("w", "F64", "[2,3]", "[0,48]") + "}", 48, {"'w'", "'dtype'", "F64"});
  check("{" + entry("w", "F32", "[2,4]", "[0,24]") + "}", 24, {"'w'", "'shape'", "32 bytes"});
  check("{" + entry("w", "F32", "[2,3]", "[8,32]") + "}", 24, {"'w'", "'data_offsets'", "outside"});
  check("{" + entry("w", "F32", "[2,3]", "[24,0]") + "}", 24, {"'w'", "'data_offsets'"});
  check("{" + entry("w", "F32", "[2,-3]", "[0,24]") + "}", 24, {"'w'", "'shape'"});
  check("{" + entry("w", "F32", "[4294967296,4294967296]", "[0,24]") + "}", 24,
        {"'w'", "'shape'", "too large"});
  check("{" + entry("w", "F32", "[1,2,3,4,5,6]", "[0,24]") + "}", 24, {"'w'", "'shape'"});
  check("{" + entry("a", "F32", "[4]", "[0,16]") + "," + entry("b", "F32", "[4]", "[8,24]") + "}",
        24, {"'b'", "'data_offsets'", "overlaps", "'a'"});
  check("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, {"'w'", "'data_offsets'", "missing"});
  check("{\"w\":[1]}", 4, {"'w'", "expected an object"});
  check("{\"__metadata__\":{\"k\":1}}", 0, {"'__metadata__.k'", "expected a string"});
  // Shorter than the length field itself.
  { std::ofstream(path, std::ios::binary | std::ios::trunc) << "abc"; }
  expect_error([&] { read_safetensors(path); }, {path, "header length"});
  expect_error([&] { read_safetensors(path + ".missing"); }, {path + ".missing"});
  fs::remove(path);
}

TEST(Weights, SaveThenLoadIntoAnotherSeedGivesIdenticalLogits) {
  GPTConfig c = tiny_config();
  Generator g1(1), g2(2);
  GPT a(c, g1), b(c, g2);
  Tensor ids = random_ids(2, c.context, c.vocab_size, 5);
  Tensor la = a.forward(ids);
  ASSERT_FALSE(bit_equal(la, b.forward(ids)));
  const std::string path = temp_path("gpt.safetensors");
  save_weights(a, path, {{"model", "tiny"}});
  Tensor before = b.h[0]->attn.c_attn.weight;
  load_weights(b, path);
  EXPECT_TRUE(b.h[0]->attn.c_attn.weight.same(before));  // loaded in place
  EXPECT_TRUE(bit_equal(la, b.forward(ids)));
  EXPECT_EQ(read_safetensors(path).metadata.at("model"), "tiny");
  fs::remove(path);
}

TEST(Weights, MismatchesAreListedAndLeaveTheModelUntouched) {
  GPTConfig c = tiny_config();
  Generator g(1);
  GPT model(c, g);
  std::map<std::string, Tensor> file;
  for (auto& [name, t] : model.named_parameters()) file[name] = t.clone();
  file.erase("h.1.ln_2.bias");
  file["h.1.extra"] = Tensor::zeros(Shape{3});
  file["wpe.weight"] = Tensor::zeros(Shape{c.context + 1, c.n_embd});
  file["ln_f.weight"] = Tensor::zeros(Shape{c.n_embd});
  const std::string path = temp_path("mismatch.safetensors");
  write_safetensors(path, file);
  Generator g2(2);
  GPT other(c, g2);
  Tensor lnf = other.ln_f.weight.clone();
  expect_error([&] { load_weights(other, path); },
               {path, "missing [h.1.ln_2.bias]", "unexpected [h.1.extra]",
                "wpe.weight (file [17, 32], model [16, 32])"});
  EXPECT_TRUE(bit_equal(other.ln_f.weight, lnf));
  fs::remove(path);
}

TEST(Weights, HuggingFaceGPT2ImportTransposesConv1D) {
  GPTConfig c = tiny_config();
  Generator g1(1), g2(2);
  GPT src(c, g1);
  Tensor ids = random_ids(2, c.context, c.vocab_size, 5);
  Tensor expected = src.forward(ids);
  auto is_conv1d = [](const std::string& n) {
    for (const char* s : {"c_attn.weight", "c_proj.weight", "c_fc.weight"})
      if (n.size() > strlen(s) && n.compare(n.size() - strlen(s), strlen(s), s) == 0) return true;
    return false;
  };
  // The layout of Hugging Face's model.safetensors: Conv1D weights [in, out], the mask buffers,
  // and lm_head.weight beside the tied wte.
  for (const std::string prefix : {"transformer.", ""}) {
    SCOPED_TRACE(prefix);
    NamedTensors hf;
    for (auto& [name, t] : src.named_parameters())
      hf.emplace_back(prefix + name, is_conv1d(name) ? t.transpose_view(0, 1).contiguous() : t);
    for (int i = 0; i < c.n_layer; ++i)
      hf.emplace_back(prefix + "h." + std::to_string(i) + ".attn.bias",
                      Tensor::ones(Shape{1, 1, c.context, c.context}));
    hf.emplace_back("lm_head.weight", src.wte.weight);
    const std::string path = temp_path("hf.safetensors");
    write_safetensors(path, hf);
    GPT dst(c, g2);
    load_hf_gpt2_weights(dst, path);
    EXPECT_TRUE(bit_equal(dst.forward(ids), expected));
    fs::remove(path);
  }
  // Weights in our own [out, in] layout are not Conv1D's: the non-square ones are refused.
  const std::string path = temp_path("ours.safetensors");
  save_weights(src, path);
  GPT dst(c, g2);
  expect_error([&] { load_hf_gpt2_weights(dst, path); },
               {path, "h.0.attn.c_attn.weight (file [32, 96], model [96, 32])"});
  fs::remove(path);
}
