// The byte-level BPE tokenizer: UTF-8 and the byte-level alphabet, pre-tokenization, merges,
// agreement with Hugging Face `tokenizers` (ids it produced, stored in tests/data/ by
// bench/peers/tokenizers_compare.py), training, and the errors for broken input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "core/file_io.h"
#include "gradcheck.h"
#include "scratch.h"
#include "tokenizer/bpe.h"
#include "tokenizer/hf_json.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/train.h"
#include "tokenizer/utf8.h"

using namespace tessera;
using namespace tessera::tokenizer;
using tessera::testing::expect_error;
namespace fs = std::filesystem;

namespace {

std::string test_data(const std::string& name) {
  return std::string(TESSERA_SOURCE_DIR) + "/tests/data/" + name;
}
std::string read_text(const std::string& path) {
  return read_small_file(path, 1 << 30);
}

// Hugging Face's tokenizer trained on the KJV (vocabulary 2048, GPT-2 pre-tokenization).
const Tokenizer& hf_kjv() {
  static const Tokenizer t = Tokenizer::from_file(test_data("hf_bpe_kjv.json"));
  return t;
}

std::vector<std::string> pieces(const std::string& pattern, const std::string& text) {
  const Regex re(pattern, "test");
  std::vector<Span> spans;
  re.split(text, spans);
  std::vector<std::string> out;
  for (const Span& s : spans) out.push_back(text.substr(s.begin, s.end - s.begin));
  return out;
}

// A tokenizer.json text with a small vocabulary: the 256 bytes, "ab", "abc" and merges.
nlohmann::json small_tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[to_byte_level(std::string(1, char(b)))] = b;
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  return {{"model",
           {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b", nlohmann::json{"ab", "c"}}}}},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"added_tokens", {{{"id", 258}, {"content", "<|endoftext|>"}, {"special", true}}}}};
}

}  // namespace

// ---------------------------------------------------------------------------------- UTF-8, bytes

TEST(Utf8, InvalidInputNamesTheSourceAndOffset) {
  EXPECT_EQ(first_invalid_utf8("héllo 😀"), std::string_view::npos);
  EXPECT_EQ(first_invalid_utf8("abc\xff"), 3u);
  EXPECT_EQ(first_invalid_utf8("0123456789\xc3"), 10u);   // truncated sequence
  EXPECT_EQ(first_invalid_utf8("a\xc0\xaf"), 1u);         // overlong '/'
  EXPECT_EQ(first_invalid_utf8("ab\xed\xa0\x80"), 2u);    // surrogate
  EXPECT_EQ(first_invalid_utf8("\xf4\x90\x80\x80"), 0u);  // above U+10FFFF
  expect_error([] { check_utf8("good text\x80 then", "corpus.txt"); },
               {"corpus.txt", "invalid UTF-8", "byte offset 9", "0x80"});
  expect_error([] { hf_kjv().encode("ok\xfe", "doc.jsonl line 3"); },
               {"doc.jsonl line 3", "byte offset 2"});
}

TEST(Utf8, ByteLevelAlphabetIsGpt2s) {
  EXPECT_EQ(to_byte_level(" "), "Ġ");
  EXPECT_EQ(to_byte_level("\n"), "Ċ");
  EXPECT_EQ(to_byte_level("a!~"), "a!~");
  std::string all;
  for (int b = 0; b < 256; ++b) all += char(b);
  std::string back;
  ASSERT_TRUE(from_byte_level(to_byte_level(all), back));
  EXPECT_EQ(back, all);
  EXPECT_FALSE(from_byte_level(" ", back));  // a raw space is not in the alphabet
}

// -------------------------------------------------------------------------- pre-tokenization

TEST(Regex, Gpt2PatternSplitsAsGpt2) {
  EXPECT_EQ(pieces(kGpt2Pattern, "Hello world's  end\n\nnext 123"),
            (std::vector<std::string>{"Hello", " world", "'s", " ", " end", "\n", "\n", "next",
                                      " 123"}));  // \s+(?!\S) leaves the last '\n' to \s+
  EXPECT_EQ(pieces(kGpt2Pattern, "naïve 😀!! x"), (std::vector<std::string>{"naïve", " 😀!!", " x"}));
}

TEST(Regex, Llama3PatternGroupsDigitsAndFoldsContractions) {
  EXPECT_EQ(pieces(kLlama3Pattern, "I'LL pay 1234567 now.\n\nOk"),
            (std::vector<std::string>{"I", "'LL", " pay", " ", "123", "456", "7", " now", ".\n\n",
                                      "Ok"}));
}

TEST(Regex, GapsBetweenMatchesArePieces) {
  EXPECT_EQ(pieces("[0-9]+", "ab12cd3"), (std::vector<std::string>{"ab", "12", "cd", "3"}));
  EXPECT_EQ(pieces("x*", "abxxc"), (std::vector<std::string>{"ab", "xx", "c"}));
  expect_error([] { Regex("(unclosed", "tok.json: pre_tokenizer"); },
               {"tok.json: pre_tokenizer", "does not compile", "offset 9"});
}

TEST(Regex, CutsForThreadsKeepEveryWord) {
  const std::string kjv = read_text(test_data("kjv_excerpt.txt"));
  std::string big;
  while (big.size() < 600000) big += kjv;
  const auto cuts = cut_for_threads(big);
  EXPECT_GT(cuts.size(), 4u);
  for (const char* pattern : {kGpt2Pattern, kLlama3Pattern}) {
    std::vector<std::string> joined;
    for (const std::string_view c : cuts)
      for (auto& p : pieces(pattern, std::string(c))) joined.push_back(std::move(p));
    EXPECT_EQ(joined, pieces(pattern, big)) << pattern;
  }
}

// ----------------------------------------------------------------------------------- merges

TEST(Bpe, ScanAndHeapMergeAlike) {
  // Bytes, then tokens made of 'a' and 'b' up to 6 long, merged shortest first.
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.emplace_back(1, char(b));
  std::vector<Merge> merges;
  std::mt19937 rng(7);
  for (int len = 2; len <= 6; ++len) {
    for (int i = 0; i < 12; ++i) {
      std::string t;
      for (int k = 0; k < len; ++k) t += "ab"[rng() % 2];
      if (std::find(tokens.begin(), tokens.end(), t) != tokens.end()) continue;
      const size_t cut = 1 + rng() % (len - 1);
      const auto l = std::find(tokens.begin(), tokens.end(), t.substr(0, cut));
      const auto r = std::find(tokens.begin(), tokens.end(), t.substr(cut));
      if (l == tokens.end() || r == tokens.end()) continue;
      merges.push_back(
          {uint32_t(l - tokens.begin()), uint32_t(r - tokens.begin()), uint32_t(tokens.size())});
      tokens.push_back(t);
    }
  }
  ASSERT_GT(merges.size(), 20u);
  const BpeModel model(tokens, merges, false);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<uint32_t> ids(1 + rng() % 200);
    for (auto& id : ids) id = uint32_t("ab"[rng() % 2]);
    auto scan = ids, heap = ids;
    model.merge_symbols(scan, MergeStrategy::scan);
    model.merge_symbols(heap, MergeStrategy::heap);
    ASSERT_EQ(scan, heap) << "trial " << trial;
  }
}

// ------------------------------------------------------------------- agreement with Hugging Face

TEST(HuggingFace, SameIdsAsTokenizersOnTortureTextAndKjv) {
  const auto expected = nlohmann::json::parse(read_text(test_data("hf_bpe_kjv_ids.json")));
  for (const char* name : {"tokenizer_torture.txt", "kjv_excerpt.txt"}) {
    const std::string text = read_text(test_data(name));
    const std::vector<uint32_t> ids = hf_kjv().encode(text, name);
    EXPECT_EQ(ids, expected[name].get<std::vector<uint32_t>>()) << name;
    EXPECT_EQ(hf_kjv().decode(ids), text) << name;
  }
}

TEST(HuggingFace, SameIdsAsTokenizersWithLlama3Layout) {
  // Llama 3's layout, trained by tokenizers on the two texts: Split with its regex, ByteLevel
  // without regex, ignore_merges, <|begin_of_text|> and <|end_of_text|>.
  const Tokenizer t = Tokenizer::from_file(test_data("hf_bpe_llama3_style.json"));
  EXPECT_EQ(t.spec().pattern, kLlama3Pattern);
  EXPECT_TRUE(t.spec().ignore_merges);
  const auto expected = nlohmann::json::parse(read_text(test_data("hf_bpe_llama3_style_ids.json")));
  for (const char* name : {"tokenizer_torture.txt", "kjv_excerpt.txt"}) {
    const std::string text = read_text(test_data(name));
    EXPECT_EQ(t.encode(text, name), expected[name].get<std::vector<uint32_t>>()) << name;
  }
}

TEST(HuggingFace, AddedTokensMatchBeforePreTokenization) {
  const Tokenizer& t = hf_kjv();
  const uint32_t eot = *t.added_token_id("<|endoftext|>");
  const auto ids = t.encode("a<|endoftext|>b");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[1], eot);
  EXPECT_EQ(t.decode(ids), "a<|endoftext|>b");
}

TEST(RoundTrip, WholeKjvAnyThreadCount) {
  const std::string path = std::string(TESSERA_SOURCE_DIR) + "/data/kjv.txt";
  if (!fs::exists(path)) GTEST_SKIP() << path << " missing: run scripts/prepare-data.sh";
  const std::string kjv = read_text(path);
  const auto one = hf_kjv().encode(kjv, path, 1);
  EXPECT_EQ(hf_kjv().encode(kjv, path, 2), one);
  EXPECT_EQ(hf_kjv().decode(one), kjv);
  EXPECT_LT(one.size(), kjv.size() / 3);  // a 2048-token vocabulary compresses the KJV 3x+
}

TEST(RoundTrip, TortureTextWithEveryPattern) {
  const std::string torture = read_text(test_data("tokenizer_torture.txt"));
  for (const char* pattern : {kGpt2Pattern, kLlama3Pattern}) {
    const Tokenizer t(train_bpe({torture}, 600, pattern, {"<|endoftext|>"}), "trained");
    EXPECT_EQ(t.decode(t.encode(torture)), torture) << pattern;
  }
}

// ---------------------------------------------------------------------------------- training

TEST(Train, WrittenJsonReadsBackToTheSameEncoding) {
  const std::string kjv = read_text(test_data("kjv_excerpt.txt"));
  for (const std::string name : {"gpt2", "llama3"}) {
    const TokenizerSpec spec = train_bpe({kjv}, 700, pattern_by_name(name), {"<|endoftext|>"});
    EXPECT_EQ(spec.vocab.size(), 700u);
    EXPECT_EQ(spec.merges.size(), 700u - 257u);
    EXPECT_EQ(spec.vocab[0].first, "<|endoftext|>");
    const std::string json = tokenizer_json(spec);
    EXPECT_EQ(tokenizer_json(train_bpe({kjv}, 700, pattern_by_name(name), {"<|endoftext|>"})),
              json);  // deterministic
    const Tokenizer direct(spec, "trained");
    const Tokenizer read(parse_tokenizer_json(json, "trained.json"), "trained.json");
    const std::string torture = read_text(test_data("tokenizer_torture.txt"));
    for (const std::string* text : {&kjv, &torture}) {
      const auto ids = direct.encode(*text);
      EXPECT_EQ(read.encode(*text), ids) << name;
      EXPECT_EQ(read.decode(ids), *text) << name;
    }
    EXPECT_LT(direct.encode(kjv).size(), kjv.size() / 2) << name;
  }
}

TEST(Train, SameVocabularyAndMergesAsHuggingFacesTrainer) {
  // tests/data/hf_bpe_kjv.json is `tokenizers`' BpeTrainer on the whole KJV (one text).
  const std::string path = std::string(TESSERA_SOURCE_DIR) + "/data/kjv.txt";
  if (!fs::exists(path)) GTEST_SKIP() << path << " missing: run scripts/prepare-data.sh";
  const std::string kjv = read_text(path);
  const TokenizerSpec hf = read_tokenizer_json(test_data("hf_bpe_kjv.json"));
  const TokenizerSpec ours = train_bpe({kjv}, 2048, kGpt2Pattern, {"<|endoftext|>"});
  EXPECT_EQ(ours.merges, hf.merges);
  auto sorted = [](auto v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(sorted(ours.vocab), sorted(hf.vocab));
}

TEST(Train, MostFrequentPairFirstSmallerIdsOnTies) {
  // "a b" (4 times) before "c d" (3); then four pairs occur once: "b c" is gone (merged into
  // "ab"), and of "ab cd", "x y" and "y z" the smallest ids win: the bytes' ids are below the
  // merged tokens', so "x y" comes first, then "ab cd" (256, 257) before "xy z" (258, ...).
  const TokenizerSpec spec = train_bpe({"ab ab ab cd cd abcd xyz"}, 256 + 4, "[^ ]+", {});
  using Pair = std::pair<std::string, std::string>;
  EXPECT_EQ(spec.merges, (std::vector<Pair>{{"a", "b"}, {"c", "d"}, {"x", "y"}, {"ab", "cd"}}));
  expect_error([] { train_bpe({"x"}, 100, kGpt2Pattern, {}); }, {"vocab_size = 100", "256"});
}

// ------------------------------------------------------------------------------ broken input

TEST(Errors, BrokenTokenizerJsonNamesFileAndField) {
  auto refuses = [](nlohmann::json j, std::initializer_list<std::string> fragments) {
    expect_error([&] { Tokenizer(parse_tokenizer_json(j.dump(), "tok.json"), "tok.json"); },
                 fragments);
  };
  auto j = small_tokenizer_json();
  EXPECT_NO_THROW(Tokenizer(parse_tokenizer_json(j.dump(), "tok.json"), "tok.json"));

  j["model"]["type"] = "WordPiece";
  refuses(j, {"tok.json", "model.type is \"WordPiece\", expected \"BPE\""});
  j = small_tokenizer_json();
  j["model"]["merges"][1] = "ab zz";
  refuses(j, {"tok.json", "model.merges[1]", "part \"zz\"", "not in model.vocab"});
  j = small_tokenizer_json();
  j["model"]["vocab"].erase("abc");
  refuses(j, {"tok.json", "model.merges[1]", "result \"abc\"", "not in model.vocab"});
  j = small_tokenizer_json();
  j["model"]["merges"][0] = "abc";
  refuses(j, {"tok.json", "model.merges[0]", "two tokens separated by one space"});
  j = small_tokenizer_json();
  j["model"]["vocab"].erase("Ġ");
  refuses(j, {"tok.json", "byte 0x20", "all 256 bytes"});
  j = small_tokenizer_json();
  j["decoder"] = {{"type", "WordPiece"}};
  refuses(j, {"tok.json", "decoder.type is \"WordPiece\"", "ByteLevel"});
  j = small_tokenizer_json();
  j["normalizer"] = {{"type", "NFC"}};
  refuses(j, {"tok.json", "normalizer", "null"});
  j = small_tokenizer_json();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  refuses(j, {"tok.json", "pre_tokenizer.type is \"Whitespace\"", "ByteLevel"});
  j = small_tokenizer_json();
  j["model"]["vocab"]["abc"] = 5;
  refuses(j, {"tok.json", "model.vocab", "id 5", "two tokens"});
  j = small_tokenizer_json();
  j["model"]["vocab"]["abc"] = "x";
  refuses(j, {"tok.json", "model.vocab[\"abc\"]", "token id"});
  expect_error([] { parse_tokenizer_json("{\"model\": ", "cut.json"); },
               {"cut.json", "not valid JSON"});
  expect_error([] { Tokenizer::from_file("/nonexistent/tok.json"); }, {"/nonexistent/tok.json"});
  expect_error(
      [] {
        hf_kjv().decode(std::vector<uint32_t>{5, 999999});
      },
      {"token id 999999", "outside the vocabulary"});
}

TEST(Tokenizer, ReadsSplitSequenceAndIgnoreMerges) {
  auto j = small_tokenizer_json();
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"},
                           {"pattern", {{"Regex", kLlama3Pattern}}},
                           {"behavior", "Isolated"},
                           {"invert", false}},
                          {{"type", "ByteLevel"}, {"use_regex", false}}}}};
  // " ac" is a token no merge makes: ignore_merges emits it whole, as Llama 3 does.
  j["model"]["vocab"]["Ġac"] = 259;
  const Tokenizer plain(parse_tokenizer_json(j.dump(), "t.json"), "t.json");
  EXPECT_EQ(plain.spec().pattern, kLlama3Pattern);
  EXPECT_EQ(plain.encode("abc ac"), (std::vector<uint32_t>{257, ' ', 'a', 'c'}));
  j["model"]["ignore_merges"] = true;
  const Tokenizer whole(parse_tokenizer_json(j.dump(), "t.json"), "t.json");
  EXPECT_EQ(whole.encode("abc ac<|endoftext|>"), (std::vector<uint32_t>{257, 259, 258}));
}
