// Fuzzes the byte-level BPE tokenizer (src/tokenizer/): the tokenizer.json reader and the
// encoder on arbitrary bytes.
//
// Input layout: byte 0 picks the mode. 0: the rest is a tokenizer.json; one that loads must
// write out (tokenizer_json) and read back to the same encoding of a fixed text, and decode
// what it encodes. 1 and 2: the rest is text for a small trained tokenizer with the GPT-2 (1) or
// Llama 3 (2) pattern: invalid UTF-8 must be an Error, valid text must decode back exactly.
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "tokenizer/hf_json.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/train.h"
#include "tokenizer/utf8.h"

using namespace tessera;
using namespace tessera::tokenizer;

namespace {

const char* const kSample =
    "It's 2024: naïve café, 1234567 € — 😀👍🏽 <|endoftext|>  \n\n\tend's ";

const Tokenizer& trained(const char* pattern) {
  auto make = [](const char* p) {
    const std::string corpus =
        std::string(kSample) + " the quick brown fox jumps over the lazy dog";
    return Tokenizer(train_bpe({corpus, corpus}, 320, p, {"<|endoftext|>", "<|x|>"}), "fuzz");
  };
  static const Tokenizer gpt2 = make(kGpt2Pattern), llama3 = make(kLlama3Pattern);
  return pattern == kGpt2Pattern ? gpt2 : llama3;
}

void check_round_trip(const Tokenizer& t, std::string_view text) {
  const std::vector<uint32_t> ids = t.encode(text, "fuzz text");
  for (const uint32_t id : ids)
    if (id >= t.vocab_size()) fuzz::property_failed("an id outside the vocabulary");
  if (t.decode(ids) != text) fuzz::property_failed("decode(encode(text)) != text");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  fuzz::expect_success_or_error([&] {
    if (data[0] % 3 == 0) {
      const Tokenizer t(parse_tokenizer_json(std::string(rest), "fuzz/tokenizer.json"),
                        "fuzz/tokenizer.json");
      const std::vector<uint32_t> ids = t.encode(kSample);
      const Tokenizer back(parse_tokenizer_json(tokenizer_json(t.spec()), "written"), "written");
      if (back.encode(kSample) != ids) fuzz::property_failed("encoding changed in a round trip");
      const std::string decoded = t.decode(ids);
      // Exact unless an added token shares its id with a different vocabulary token (a
      // hostile file's inconsistency, decoded as the added token) or a prefix space was added.
      if (t.spec().added_tokens.empty() && !t.spec().add_prefix_space && decoded != kSample)
        fuzz::property_failed("decode(encode(sample)) != sample");
    } else {
      const bool valid = first_invalid_utf8(rest) == std::string_view::npos;
      try {
        check_round_trip(trained(data[0] % 3 == 1 ? kGpt2Pattern : kLlama3Pattern), rest);
      } catch (const Error& e) {
        if (valid) fuzz::property_failed(std::string("valid UTF-8 refused: ") + e.what());
        return;
      }
      if (!valid) fuzz::property_failed("invalid UTF-8 was encoded");
    }
  });
  return 0;
}
