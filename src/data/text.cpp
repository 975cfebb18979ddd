#include "data/text.h"

#include <cmath>

#include "core/error.h"
#include "data/file_io.h"

namespace tessera::data {

Tensor read_byte_tokens(const std::string& path, int64_t min_tokens) {
  const std::vector<uint8_t> bytes = read_file_bytes(path, "text corpus");
  TS_CHECK(int64_t(bytes.size()) >= min_tokens && !bytes.empty(),
           "text corpus '{}': size: file has {} bytes, expected at least {}", path, bytes.size(),
           std::max<int64_t>(min_tokens, 1));
  Tensor tokens = Tensor::empty({int64_t(bytes.size())}, DType::u16);
  uint16_t* t = tokens.data<uint16_t>();
  for (size_t i = 0; i < bytes.size(); ++i) t[i] = bytes[i];
  return tokens;
}

TextSplits split_tokens(const Tensor& tokens, double val_fraction, int64_t min_split_tokens,
                        const std::string& what) {
  TS_CHECK(tokens.dtype() == DType::u16 && tokens.ndim() == 1,
           "split_tokens '{}': expected u16 [n] tokens, got {}", what, tokens.desc());
  TS_CHECK(val_fraction >= 0.0 && val_fraction < 1.0,
           "split_tokens '{}': val_fraction {} must be in [0, 1)", what, val_fraction);
  const int64_t n = tokens.dim(0);
  const int64_t n_val = int64_t(std::floor(double(n) * val_fraction));
  const int64_t n_train = n - n_val;
  TS_CHECK(n_train >= min_split_tokens,
           "split_tokens '{}': train split has {} of {} tokens, expected at least {}", what,
           n_train, n, min_split_tokens);
  TS_CHECK(val_fraction == 0.0 || n_val >= min_split_tokens,
           "split_tokens '{}': validation split ({} of the file) has {} of {} tokens, expected "
           "at least {}",
           what, val_fraction, n_val, n, min_split_tokens);
  TextSplits s;
  s.train = tokens.slice_rows(0, n_train);
  if (n_val > 0) s.val = tokens.slice_rows(n_train, n);
  return s;
}

TextSplits load_byte_corpus(const std::string& path, double val_fraction,
                            int64_t min_split_tokens) {
  return split_tokens(read_byte_tokens(path, min_split_tokens), val_fraction, min_split_tokens,
                      path);
}

}  // namespace tessera::data
