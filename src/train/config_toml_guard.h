// A pre-parse check that keeps toml++ away from a known bug in the version Debian 12 ships.
//
// toml++ 3.3.0 reaches an "unreachable" point (undefined behaviour) when it tests some non-ASCII
// characters for being whitespace (upstream marzer/tomlplusplus #190 and #295; reproducers in
// fuzz/crashes/config-toml++-*). It tests wherever whitespace may stand: outside strings and
// comments, and at the start of the line after a line-ending backslash in a multi-line basic
// string. TOML itself allows non-ASCII only inside strings and comments, so refusing it
// elsewhere costs nothing valid; the one valid form refused is a continued line of a """ string
// that starts with a non-ASCII character.
#pragma once
#include <string_view>

namespace tessera::train {

// Throws tessera::Error naming source, line and column of the first non-ASCII byte toml++ would
// test for whitespace.
void check_toml_text_for_parser(std::string_view text, std::string_view source);

}  // namespace tessera::train
