// Fuzzes the llm.c GPT-2 checkpoint import (src/nn/llmc_import.cpp): the 256 x int32 header
// (magic 20240326, version 3 / 5, maxT, V, L, NH, C, Vp), the file-size check and the weight
// load into a GPT built from the header.
#include "fuzz_common.h"
#include "nn/llmc_import.h"

using namespace tessera;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::MemFile file("llmc");
  file.write(data, size);
  fuzz::expect_success_or_error([&] {
    const nn::LlmcHeader hdr = nn::read_llmc_header(file.path());
    const std::unique_ptr<nn::GPT> model = nn::import_llmc_checkpoint(file.path());
    if (nn::gpt_num_parameters(model->config()) != nn::gpt_num_parameters(hdr.config))
      fuzz::property_failed("imported model's size differs from the header's");
  });
  return 0;
}
