// The safetensors format (what PyTorch and Hugging Face tools read): an 8-byte little-endian
// header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the data section; offsets are relative to its start. Supported dtypes: F32, BF16, F16,
// I32, I64, U16.
//
// Reading is defensive: the header length is bounded by the file size, the JSON must parse,
// every tensor needs a known dtype, a shape of non-negative integers (at most 5 dims) whose
// byte size equals its data_offsets span, offsets inside the data section, and no two tensors'
// bytes may overlap. Any violation throws an Error naming the file and the tensor / field.
// Writing goes through "<path>.tmp", fsync and rename, so an existing file is never left
// half-written.
#pragma once
#include <map>
#include <string>

#include "nn/module.h"

namespace tessera::nn {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Writes the tensors (cpu, any supported dtype) in the given order. Names must be unique and
// must not be "__metadata__".
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});
void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
SafetensorsFile read_safetensors(const std::string& path);

// "F32" <-> DType::f32, etc.
const char* safetensors_dtype_name(DType t);
bool parse_safetensors_dtype(const std::string& name, DType* out);

}  // namespace tessera::nn
