#include "nn/safetensors.h"

#include <algorithm>
#include <bit>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "core/file_io.h"

namespace tessera::nn {

static_assert(std::endian::native == std::endian::little,
              "safetensors I/O copies little-endian bytes as they are");

namespace {
constexpr DType kDTypes[] = {DType::f32, DType::bf16, DType::f16,
                             DType::i32, DType::i64,  DType::u16};
constexpr const char* kMetadataKey = "__metadata__";
}  // namespace

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "F32";
    case DType::bf16:
      return "BF16";
    case DType::f16:
      return "F16";
    case DType::i32:
      return "I32";
    case DType::i64:
      return "I64";
    case DType::u16:
      return "U16";
  }
  return "?";
}

bool parse_safetensors_dtype(const std::string& name, DType* out) {
  for (DType t : kDTypes) {
    if (name == safetensors_dtype_name(t)) {
      *out = t;
      return true;
    }
  }
  return false;
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  std::set<std::string> seen;
  std::vector<Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t0] : tensors) {
    TS_CHECK(name != kMetadataKey && !name.empty(), "write_safetensors '{}': invalid name '{}'",
             path, name);
    TS_CHECK(seen.insert(name).second, "write_safetensors '{}': duplicate tensor '{}'", path, name);
    TS_CHECK(t0.defined() && t0.device().is_cpu(),
             "write_safetensors '{}': tensor '{}' must be a defined cpu tensor", path, name);
    Tensor t = t0.contiguous();
    const uint64_t bytes = t.nbytes();
    header[name] = {{"dtype", safetensors_dtype_name(t.dtype())},
                    {"shape", t.shape().vec()},
                    {"data_offsets", nlohmann::ordered_json::array({offset, offset + bytes})}};
    offset += bytes;
    data.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  uint64_t n = text.size();
  AtomicFileWriter out(path);
  out.write(&n, 8);
  out.write(text.data(), n);
  for (const Tensor& t : data) out.write(t.raw_data(), t.nbytes());
  out.commit();
}

void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  write_safetensors(path, NamedTensors(tensors.begin(), tensors.end()), metadata);
}

namespace {

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

// Parses and checks one tensor's header entry; `where` is "safetensors '<file>': tensor '<n>'".
Entry parse_entry(const std::string& where, const std::string& name, const nlohmann::json& v,
                  uint64_t data_size) {
  TS_CHECK(v.is_object(), "{}: entry is {}, expected an object", where, v.type_name());
  for (const char* field : {"dtype", "shape", "data_offsets"})
    TS_CHECK(v.contains(field), "{}: field '{}' is missing", where, field);
  Entry e;
  e.name = name;
  const auto& dt = v["dtype"];
  TS_CHECK(dt.is_string() && parse_safetensors_dtype(dt.get<std::string>(), &e.dtype),
           "{}: field 'dtype' is {}, expected one of F32, BF16, F16, I32, I64, U16", where,
           dt.dump());
  const auto& sh = v["shape"];
  TS_CHECK(sh.is_array() && sh.size() <= size_t(kMaxDims),
           "{}: field 'shape' is {}, expected an array of at most {} sizes", where, sh.dump(),
           kMaxDims);
  std::vector<int64_t> dims;
  // Computed with overflow checks: a hostile header may hold huge sizes.
  uint64_t bytes = dtype_size(e.dtype);
  // The product of the non-zero sizes: an empty tensor such as [0, 2^62, 2^62] has 0 bytes, but
  // its strides (products of the later sizes) must still fit an int64.
  uint64_t nonzero_elements = 1;
  for (const auto& d : sh) {
    TS_CHECK(d.is_number_unsigned() && d.get<uint64_t>() <= uint64_t(INT64_MAX),
             "{}: field 'shape' is {}, expected non-negative integers", where, sh.dump());
    const uint64_t s = d.get<uint64_t>();
    TS_CHECK(!__builtin_mul_overflow(bytes, s, &bytes),
             "{}: field 'shape' {} is too large (byte size overflows)", where, sh.dump());
    TS_CHECK(s == 0 || (!__builtin_mul_overflow(nonzero_elements, s, &nonzero_elements) &&
                        nonzero_elements <= uint64_t(INT64_MAX)),
             "{}: field 'shape' {} is too large (its non-zero sizes multiply past 2^63 - 1)", where,
             sh.dump());
    dims.push_back(int64_t(s));
  }
  e.shape = Shape(dims);
  const auto& off = v["data_offsets"];
  TS_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
               off[1].is_number_unsigned(),
           "{}: field 'data_offsets' is {}, expected [begin, end] non-negative integers", where,
           off.dump());
  e.begin = off[0].get<uint64_t>(), e.end = off[1].get<uint64_t>();
  TS_CHECK(e.begin <= e.end && e.end <= data_size,
           "{}: field 'data_offsets' [{}, {}] is outside the data section of {} bytes", where,
           e.begin, e.end, data_size);
  TS_CHECK(e.end - e.begin == bytes,
           "{}: field 'shape' {} of {} needs {} bytes but 'data_offsets' [{}, {}] spans {}", where,
           e.shape.str(), dt.get<std::string>(), bytes, e.begin, e.end, e.end - e.begin);
  return e;
}

}  // namespace

SafetensorsFile read_safetensors(const std::string& path) {
  InputFile in(path);
  const std::string file = fmt::format("safetensors '{}'", path);
  TS_CHECK(in.size() >= 8, "{}: header length: the file has {} bytes, fewer than 8", file,
           in.size());
  uint64_t n = 0;
  in.read_at(0, &n, 8, "the header length");
  TS_CHECK(n <= in.size() - 8, "{}: header length {} exceeds the {} bytes after it", file, n,
           in.size() - 8);
  std::string text(size_t(n), '\0');
  in.read_at(8, text.data(), n, "the header");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: header is not valid JSON: {}", file, e.what());
  }
  TS_CHECK(header.is_object(), "{}: header is a JSON {}, expected an object", file,
           header.type_name());
  const uint64_t data_start = 8 + n, data_size = in.size() - data_start;

  SafetensorsFile out;
  std::vector<Entry> entries;
  for (const auto& [name, v] : header.items()) {
    if (name == kMetadataKey) {
      TS_CHECK(v.is_object(), "{}: field '{}' is {}, expected an object of strings", file,
               kMetadataKey, v.type_name());
      for (const auto& [k, s] : v.items()) {
        TS_CHECK(s.is_string(), "{}: field '{}.{}' is {}, expected a string", file, kMetadataKey, k,
                 s.dump());
        out.metadata[k] = s.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(fmt::format("{}: tensor '{}'", file, name), name, v, data_size));
  }
  // No two tensors may share bytes (empty tensors occupy nothing).
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;
    TS_CHECK(!prev || prev->end <= e.begin,
             "{}: tensor '{}': field 'data_offsets' [{}, {}] overlaps tensor '{}' [{}, {}]", file,
             e.name, e.begin, e.end, prev->name, prev->begin, prev->end);
    prev = &e;
  }
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    in.read_at(data_start + e.begin, t.raw_data(), e.end - e.begin,
               fmt::format("tensor '{}'", e.name));
    out.tensors.emplace(e.name, t);
  }
  return out;
}

}  // namespace tessera::nn
