#include "train/config_toml_guard.h"

#include <cstddef>

#include "core/error.h"

namespace tessera::train {
namespace {

enum class State { code, comment, basic, literal, ml_basic, ml_literal };

bool starts(std::string_view text, size_t i, std::string_view what) {
  return text.substr(i, what.size()) == what;
}

bool non_ascii(char c) {
  return static_cast<unsigned char>(c) >= 0x80;
}

// Whether a quote after `last` (the line's last non-blank character outside strings, '\0' for
// none) opens a string for toml++: where a key or a value starts. Elsewhere (`x = 1K"...`) it
// belongs to a bare token, whose characters toml++ tests one by one.
bool opens_string(char last) {
  return last == '\0' || last == '=' || last == '[' || last == '{' || last == ',' || last == '.';
}

}  // namespace

void check_toml_text_for_parser(std::string_view text, std::string_view source) {
  State state = State::code;
  size_t line = 1, line_start = 0;
  char last = '\0';  // see opens_string
  const auto refuse = [&](size_t i, const char* where) {
    fail(
        "{}:{}:{}: TOML syntax error: non-ASCII character {}; expected it only inside a "
        "quoted string or a comment (bare keys are ASCII: quote the key)",
        source, line, i - line_start + 1, where);
  };
  // An escape is a backslash and ASCII (\n, \", \u00e9, ...); toml++ tests a non-ASCII
  // character after it for whitespace, which is where its bug lies.
  const auto refuse_escape = [&](size_t i) {
    fail(
        "{}:{}:{}: TOML syntax error: non-ASCII character after a backslash; expected an escape "
        "sequence (\\n, \\t, \\\", \\\\, \\uXXXX, ...)",
        source, line, i - line_start + 1);
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') {
      ++line, line_start = i + 1;
      last = '\0';
      // A newline ends a comment; inside a one-line string it is toml++'s own error to report.
      if (state == State::comment || state == State::basic || state == State::literal)
        state = State::code;
      continue;
    }
    switch (state) {
      case State::code:
        if (c == ' ' || c == '\t' || c == '\r') break;
        if (c == '#') {
          state = State::comment;
        } else if ((c == '"' || c == '\'') && !opens_string(last)) {
          last = c;  // part of a bare token (`x = 1K"...`): what follows is tested as code
        } else if (starts(text, i, "\"\"\"")) {
          state = State::ml_basic, i += 2;
        } else if (starts(text, i, "'''")) {
          state = State::ml_literal, i += 2;
        } else if (c == '"') {
          state = State::basic;
        } else if (c == '\'') {
          state = State::literal;
        } else if (non_ascii(c)) {
          refuse(i, "outside a string");
        } else {
          last = c;
        }
        break;
      case State::comment:
        break;
      case State::basic:
        if (c == '\\') {
          if (i + 1 < text.size() && non_ascii(text[i + 1])) refuse_escape(i + 1);
          ++i;  // the escaped character (a newline here is an error toml++ reports)
        } else if (c == '"') {
          state = State::code, last = c;
        }
        break;
      case State::literal:
        if (c == '\'') state = State::code, last = c;
        break;
      case State::ml_basic: {
        if (starts(text, i, "\"\"\"")) {
          // Up to two more quotes may belong to the content (""""" ends with two quotes inside).
          i += 2;
          while (i + 1 < text.size() && text[i + 1] == '"') ++i;
          state = State::code, last = '"';
          break;
        }
        if (c != '\\') break;
        // A line-ending backslash: spaces or tabs, then a newline; the parser then skips all
        // whitespace and newlines, testing each character it meets.
        size_t j = i + 1;
        while (j < text.size() && (text[j] == ' ' || text[j] == '\t' || text[j] == '\r')) ++j;
        if (j < text.size() && non_ascii(text[j])) refuse_escape(j);
        if (j >= text.size() || text[j] != '\n') {
          ++i;  // an ordinary escape: skip the escaped character
          break;
        }
        while (j < text.size() &&
               (text[j] == ' ' || text[j] == '\t' || text[j] == '\r' || text[j] == '\n')) {
          if (text[j] == '\n') ++line, line_start = j + 1;
          ++j;
        }
        if (j < text.size() && non_ascii(text[j]))
          refuse(j, "at the start of a line continued by a backslash in a \"\"\" string");
        i = j - 1;
        break;
      }
      case State::ml_literal:
        if (starts(text, i, "'''")) {
          i += 2;
          while (i + 1 < text.size() && text[i + 1] == '\'') ++i;
          state = State::code, last = '\'';
        }
        break;
    }
  }
}

}  // namespace tessera::train
