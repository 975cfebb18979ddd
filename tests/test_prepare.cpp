// `tessera prepare`: documents to token shards (end-of-text before each document, validation
// first, uint16 or uint32 tokens), idempotent re-runs, and the errors for broken input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/file_io.h"
#include "data/shard.h"
#include "gradcheck.h"
#include "scratch.h"
#include "tokenizer/hf_json.h"
#include "tokenizer/prepare.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/train.h"

using namespace tessera;
using namespace tessera::tokenizer;
using tessera::testing::expect_error;
namespace fs = std::filesystem;

namespace {

const std::string kTokenizer = std::string(TESSERA_SOURCE_DIR) + "/tests/data/hf_bpe_kjv.json";

std::vector<uint32_t> ids_of(const Tensor& t) {
  std::vector<uint32_t> v;
  for (int64_t i = 0; i < t.numel(); ++i)
    v.push_back(t.dtype() == DType::u16 ? t.data<uint16_t>()[i] : uint32_t(t.data<int32_t>()[i]));
  return v;
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

std::string bytes_of(const fs::path& p) {
  return read_small_file(p.string(), 1 << 30);
}

// A folder of two documents: a text file and a JSON Lines file of two records.
fs::path corpus(const fs::path& dir) {
  fs::create_directories(dir / "in");
  write(dir / "in/a.txt", "In the beginning God created the heaven and the earth.\n");
  write(dir / "in/b.jsonl",
        "{\"text\": \"And the earth was without form.\"}\n\n"
        "{\"text\": \"And God said, Let there be light: \\u00e9\", \"id\": 2}\n");
  return dir / "in";
}

PrepareOptions options(const fs::path& dir) {
  PrepareOptions o;
  o.inputs = {corpus(dir).string()};
  o.tokenizer = kTokenizer;
  o.out_dir = (dir / "out").string();
  o.name = "t";
  o.val_tokens = 5;
  o.shard_tokens = 8;
  o.progress = false;
  return o;
}

}  // namespace

TEST(Prepare, DocumentsBecomeShardsWithEndOfTextBetween) {
  const fs::path dir = tessera::testing::scratch_dir("prepare_docs");
  const PrepareOptions o = options(dir);
  const PrepareSummary s = prepare(o);
  EXPECT_FALSE(s.up_to_date);
  const Tokenizer tok = Tokenizer::from_file(kTokenizer);
  const uint32_t eot = *tok.added_token_id("<|endoftext|>");
  std::vector<uint32_t> expected;
  for (const char* doc :
       {"In the beginning God created the heaven and the earth.\n",
        "And the earth was without form.", "And God said, Let there be light: é"}) {
    expected.push_back(eot);
    for (uint32_t id : tok.encode(doc)) expected.push_back(id);
  }
  const auto val = ids_of(data::read_token_shards((dir / "out/t_val.list").string()));
  const auto train = ids_of(data::read_token_shards((dir / "out/t_train_*.bin").string()));
  EXPECT_EQ(val, std::vector<uint32_t>(expected.begin(), expected.begin() + 5));
  EXPECT_EQ(train, std::vector<uint32_t>(expected.begin() + 5, expected.end()));
  EXPECT_EQ(s.val_tokens, 5);
  EXPECT_EQ(s.train_tokens, int64_t(expected.size()) - 5);
  EXPECT_EQ(s.train_shards.size(), (expected.size() - 5 + 7) / 8);  // 8 tokens per shard
  EXPECT_EQ(data::read_token_shard(s.train_shards[0]).dtype(), DType::u16);
}

TEST(Prepare, RerunsAreIdempotent) {
  const fs::path dir = tessera::testing::scratch_dir("prepare_again");
  PrepareOptions o = options(dir);
  const PrepareSummary first = prepare(o);
  const std::string shard = bytes_of(first.train_shards[0]);
  const auto stamp = fs::last_write_time(first.train_shards[0]);
  const PrepareSummary again = prepare(o);
  EXPECT_TRUE(again.up_to_date);
  EXPECT_EQ(again.train_shards, first.train_shards);
  EXPECT_EQ(fs::last_write_time(first.train_shards[0]), stamp);  // not rewritten

  fs::remove(dir / "out/t_val_000000.bin");  // a shard gone: redo, byte-identical
  EXPECT_FALSE(prepare(o).up_to_date);
  EXPECT_EQ(bytes_of(first.train_shards[0]), shard);

  o.shard_tokens = 1000;  // other settings: one shard; the earlier run's extra shards go
  const PrepareSummary bigger = prepare(o);
  EXPECT_FALSE(bigger.up_to_date);
  EXPECT_EQ(bigger.train_shards.size(), 1u);
  EXPECT_FALSE(fs::exists(dir / "out/t_train_000001.bin"));
  write(dir / "in/a.txt", "changed\n");  // other contents: redo
  EXPECT_FALSE(prepare(o).up_to_date);
  EXPECT_TRUE(prepare(o).up_to_date);
}

TEST(Prepare, LargeVocabulariesWriteUint32Shards) {
  const fs::path dir = tessera::testing::scratch_dir("prepare_u32");
  // The 256 bytes, 70,000 more tokens no merge makes, and <|endoftext|> after them.
  TokenizerSpec spec = train_bpe({"abc"}, 256, kGpt2Pattern, {});
  for (uint32_t i = 0; i < 70000; ++i) spec.vocab.emplace_back(fmt::format("t{}", i), 256 + i);
  spec.added_tokens.push_back({"<|endoftext|>", 70256, true});
  write(dir / "big.json", tokenizer_json(spec));
  PrepareOptions o = options(dir);
  o.tokenizer = (dir / "big.json").string();
  prepare(o);
  const Tensor val = data::read_token_shard((dir / "out/t_val_000000.bin").string());
  ASSERT_EQ(val.dtype(), DType::i32);
  EXPECT_EQ(val.data<int32_t>()[0], 70256);
  expect_error([&] { data::read_token_shards((dir / "out/t_val.list").string(), 50257); },
               {"t_val_000000.bin", "token 70256", "outside the vocabulary"});
}

TEST(Prepare, BrokenInputNamesFileAndLine) {
  const fs::path dir = tessera::testing::scratch_dir("prepare_bad");
  PrepareOptions o = options(dir);
  write(dir / "in/c.jsonl", "{\"text\": \"fine\"}\n{\"txt\": \"no text field\"}\n");
  expect_error([&] { prepare(o); }, {"c.jsonl line 2", "string \"text\" field"});
  write(dir / "in/c.jsonl", "{\"text\": \"bad \\udc00 json\"\n");
  expect_error([&] { prepare(o); }, {"c.jsonl line 1", "not valid JSON"});
  write(dir / "in/c.jsonl", "");
  write(dir / "in/d.txt", "valid then \xff invalid");
  expect_error([&] { prepare(o); }, {"d.txt", "invalid UTF-8", "byte offset 11"});
  o.inputs = {(dir / "missing.txt").string()};
  expect_error([&] { prepare(o); }, {"missing.txt", "not found"});
  o = options(dir);
  fs::remove(dir / "in/d.txt");
  o.eot = "<|nope|>";
  expect_error([&] { prepare(o); }, {"--eot", "<|nope|>", "not an added token"});
}
