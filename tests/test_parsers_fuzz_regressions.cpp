// Regression tests for what fuzzing the file parsers found (fuzz/, docs/FUZZING.md): each input
// once crashed a parser or tripped a sanitizer and must now be refused with a tessera::Error
// naming the file and the field. Built with the normal compiler, no sanitizers needed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "nn/safetensors.h"
#include "train/config.h"

using namespace tessera;
using tessera::testing::expect_error;
namespace fs = std::filesystem;

namespace {

// A per-test, per-process file holding `bytes`; removed at the end of the test.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& bytes)
      : path_((fs::temp_directory_path() /
               ("tessera_fuzz_regression_" + std::to_string(::getpid()) + "_" + name))
                  .string()) {
    std::ofstream f(path_, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
  }
  ~TempFile() { fs::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A safetensors file: little-endian u64 header length, then the header text.
std::string safetensors_bytes(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char(n >> (8 * i) & 0xff);
  return out + header + data;
}

}  // namespace

// An empty tensor whose other sizes multiply past int64: 0 bytes, so the byte-size check
// passed, but building its strides overflowed (UBSan: signed integer overflow in
// contiguous_strides).
TEST(SafetensorsFuzzRegression, EmptyTensorWithHugeSizesIsRefused) {
  const TempFile f("zero_huge.safetensors",
                   safetensors_bytes(R"({"x":{"dtype":"F32","shape":[0,4611686018427387904,)"
                                     R"(4611686018427387904],"data_offsets":[0,0]}})"));
  expect_error([&] { nn::read_safetensors(f.path()); },
               {f.path(), "tensor 'x'", "field 'shape'", "2^63"});
}

// The same sizes in the other order overflow the byte size first; still an Error, and an empty
// tensor with sizes that do fit still reads.
TEST(SafetensorsFuzzRegression, EmptyTensorsWithFittingSizesRead) {
  const TempFile bad("huge_zero.safetensors",
                     safetensors_bytes(R"({"x":{"dtype":"F32","shape":[4611686018427387904,)"
                                       R"(4611686018427387904,0],"data_offsets":[0,0]}})"));
  expect_error([&] { nn::read_safetensors(bad.path()); }, {bad.path(), "field 'shape'"});

  const TempFile ok("zero_big.safetensors",
                    safetensors_bytes(R"({"x":{"dtype":"I64","shape":[0,1048576,1048576],)"
                                      R"("data_offsets":[0,0]}})"));
  const nn::SafetensorsFile st = nn::read_safetensors(ok.path());
  ASSERT_EQ(st.tensors.count("x"), 1u);
  EXPECT_EQ(st.tensors.at("x").shape(), Shape({0, 1048576, 1048576}));
  EXPECT_EQ(st.tensors.at("x").nbytes(), 0u);
}

// A command-line override may hold any bytes, but a TOML file holds UTF-8 only: to_toml wrote
// the byte 0xff as it was, and the saved config (run folder, checkpoint) did not parse back.
// fuzz_config's round trip found it; to_toml now refuses, naming the key.
TEST(ConfigFuzzRegression, NonUtf8OverrideIsRefusedWhenWritten) {
  const std::vector<std::string> overrides = {"data.path=/data/\xff.txt"};
  const train::Config config = train::parse_config("", "empty.toml", overrides);
  EXPECT_EQ(config.data.path, "/data/\xff.txt");
  expect_error([&] { train::to_toml(config); }, {"data.path", "not UTF-8", "byte 6", "0xff"});

  // Well-formed non-ASCII text still round trips.
  const std::vector<std::string> utf8 = {"data.path=/data/caf\xc3\xa9 \xe4\xb8\xad.txt"};
  const train::Config ok = train::parse_config("", "empty.toml", utf8);
  EXPECT_EQ(train::parse_config(train::to_toml(ok), "to_toml output"), ok);
}

// toml++ 3.3.0 reaches undefined behaviour testing some non-ASCII characters for whitespace
// (fuzz/crashes/config-toml++-*): such text is refused before the parser sees it, naming the
// line and column, while non-ASCII inside strings and comments still reads.
TEST(ConfigFuzzRegression, NonAsciiWhereTomlppTestsWhitespaceIsRefused) {
  expect_error([] { train::parse_config("[train]\ncaf\xc3\xa9 = 1\n", "bare.toml"); },
               {"bare.toml:2:4", "non-ASCII", "outside a string"});
  expect_error([] { train::parse_config("x = \xc2\xa7\n", "value.toml"); },
               {"value.toml:1:5", "outside a string"});
  expect_error([] { train::parse_config("s = \"\"\"\\\n\xc2\xa7\"\"\"\n", "cont.toml"); },
               {"cont.toml:2:1", "continued by a backslash"});
  expect_error([] { train::parse_config("s = \"\"\"a \\  \n\n   \xc2\xa7\"\"\"\n", "c2.toml"); },
               {"c2.toml:3:4", "continued by a backslash"});
  // A backslash followed by non-ASCII (never a valid escape), in both kinds of basic string,
  // also after spaces in a """ string (toml++ skips them looking for a line end).
  expect_error([] { train::parse_config("s = \"a\\\xc2\xa7\"\n", "esc.toml"); },
               {"esc.toml:1:8", "after a backslash", "escape sequence"});
  expect_error([] { train::parse_config("s = \"\"\"a\\\xc2\xa7\"\"\"\n", "esc2.toml"); },
               {"esc2.toml:1:10", "after a backslash"});
  expect_error([] { train::parse_config("s = \"\"\"a\\  \xc2\xa7\"\"\"\n", "esc3.toml"); },
               {"esc3.toml:1:12", "after a backslash"});
  // Non-ASCII inside strings (all four kinds) and comments reaches toml++ and reads.
  const std::string ok =
      "# caf\xc3\xa9 \xc2\xa7\n"
      "[data]\n"
      "path = \"/d/caf\xc3\xa9 \\\" \xc2\xa7.txt\"  # \xc2\xa7\n";
  EXPECT_EQ(train::parse_config(ok, "ok.toml").data.path, "/d/caf\xc3\xa9 \" \xc2\xa7.txt");
  EXPECT_EQ(train::parse_config("[data]\npath = '/\xc2\xa7'\n", "lit.toml").data.path, "/\xc2\xa7");
  // A quote inside a bare token does not open a string for toml++: what follows is code.
  expect_error([] { train::parse_config("x = 1K\"\xc2\xa7\"\n", "bare2.toml"); },
               {"bare2.toml:1:8", "outside a string"});
  // Quoted keys and values where toml++ starts them still read non-ASCII.
  EXPECT_EQ(train::parse_config("[\"data\"]\n\"path\" = \"\xc2\xa7\"\n", "q.toml").data.path,
            "\xc2\xa7");
  EXPECT_EQ(train::parse_config("data . \"path\"=\"\xc2\xa7\"\n", "dot.toml").data.path,
            "\xc2\xa7");
  // An escaped backslash before non-ASCII is content, not an escape of it.
  EXPECT_EQ(train::parse_config("[data]\npath = \"\\\\\xc2\xa7\"\n", "bs.toml").data.path,
            "\\\xc2\xa7");
  EXPECT_EQ(train::parse_config("[data]\npath = \"\"\"\\\\\xc2\xa7\"\"\"\n", "bs2.toml").data.path,
            "\\\xc2\xa7");
  EXPECT_EQ(
      train::parse_config("[data]\npath = \"\"\"/\xc2\xa7\\\n  x\"\"\"\n", "ml.toml").data.path,
      "/\xc2\xa7x");
  EXPECT_EQ(train::parse_config("[data]\npath = \'\'\'/\xc2\xa7\'\'\'\n", "mll.toml").data.path,
            "/\xc2\xa7");
  // The crash reproducers found by fuzz_config.
  for (const char* name : {"config-toml++-3.3.0-unreachable-bare-key",
                           "config-toml++-3.3.0-unreachable-line-ending-backslash",
                           "config-toml++-3.3.0-unreachable-escape",
                           "config-toml++-3.3.0-unreachable-quote-in-bare-value"}) {
    const std::filesystem::path p =
        std::filesystem::path(TESSERA_SOURCE_DIR) / "fuzz/crashes" / name;
    std::ifstream in(p, std::ios::binary);
    ASSERT_TRUE(in) << p;
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    expect_error([&] { train::parse_config(text, name); }, {name, "non-ASCII"});
  }
}
