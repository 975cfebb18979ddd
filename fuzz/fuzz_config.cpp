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

// toml++ 3.3.0 (Debian 12's) has undefined behaviour on some non-ASCII characters where it
// tests for whitespace (upstream marzer/tomlplusplus#190, #295; reproducers in
// fuzz/crashes/config-toml++-*). parse_config refuses such text before toml++ sees it
// (train/config_toml_guard.h), so the fuzzer feeds every input: a sanitizer report from inside
// toml++ means the guard missed a case.

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
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
