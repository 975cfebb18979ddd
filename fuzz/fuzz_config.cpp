// Fuzzes the training config parser (src/train/config.cpp: toml++ plus the key table, the
// per-key ranges and the rules joining keys) and its writer (config_text.cpp): a config that
// parses must read back equal from its own to_toml() text.
//
// Input layout: TOML text, optionally followed by a line "%%" and then one `key=value`
// command-line override per line.
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.h"
#include "train/config.h"

using namespace tessera;

namespace {

// toml++ 3.3.0 (Debian 12's) reaches TOML_UNREACHABLE in is_non_ascii_horizontal_whitespace()
// for some code points wherever it checks for whitespace: a bare key or value such as
// `café = 1`, or the line after a line-ending backslash in a multi-line string (upstream
// marzer/tomlplusplus#190, #295; reproducers in fuzz/crashes/config-toml++-*). That is
// undefined behaviour in the library, not in Tessera's code, until the parser guards against
// it (docs/FUZZING.md); inputs holding such a code point are skipped so the fuzzer keeps
// exploring the rest. These are the code points in the function's "child" blocks 0, 11 and 63
// that its explicit cases do not answer.
bool hits_toml_whitespace_bug(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const auto b = static_cast<unsigned char>(text[i]);
    const size_t len = b >> 5 == 6 ? 2 : b >> 4 == 14 ? 3 : b >> 3 == 30 ? 4 : 1;
    // Only well-formed sequences: toml++ refuses malformed UTF-8 before it looks at whitespace.
    if (len == 1 || i + len > text.size()) {
      ++i;
      continue;
    }
    char32_t c = b & (0x7f >> len);
    bool well_formed = true;
    for (size_t k = 1; k < len; ++k) {
      const auto cont = static_cast<unsigned char>(text[i + k]);
      well_formed = well_formed && (cont & 0xc0) == 0x80;
      c = c << 6 | (cont & 0x3f);
    }
    i += well_formed ? len : 1;
    if (!well_formed || c <= 0xA0 || c >= 0xFEFF || c == 0x3000) continue;
    const uint64_t block = (uint64_t(c) - 0xA0) / 0x3FA;
    if (block == 0 || block == 11 || block == 63) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (hits_toml_whitespace_bug(input)) return 0;
  std::string_view toml = input;
  std::vector<std::string> overrides;
  if (size_t sep = input.find("\n%%\n"); sep != std::string_view::npos) {
    toml = input.substr(0, sep + 1);
    std::string_view rest = input.substr(sep + 4);
    while (!rest.empty()) {
      const size_t eol = rest.find('\n');
      overrides.emplace_back(rest.substr(0, eol));
      rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    }
  }
  fuzz::expect_success_or_error([&] {
    const train::Config config = train::parse_config(toml, "fuzz.toml", overrides);
    const std::string text = train::to_toml(config);
    train::Config back;
    try {
      back = train::parse_config(text, "to_toml output");
    } catch (const Error& e) {
      fuzz::property_failed(std::string("to_toml output does not parse: ") + e.what() + "\n" +
                            text);
    }
    if (!(back == config)) fuzz::property_failed("config changed in a to_toml round trip\n" + text);
  });
  return 0;
}
