#include "nn/llmc_import.h"

#include <cstring>
#include <map>
#include <vector>

#include "autograd/grad_mode.h"
#include "core/file_io.h"

namespace tessera::nn {

namespace {

constexpr uint64_t kHeaderBytes = 256 * 4;

// llm.c's parameter arrays in file order, with the name of our tensor (per layer "h.{i}." is
// prepended when per_layer).
struct Field {
  const char* llmc_name;
  const char* our_name;
  bool per_layer;
};
constexpr Field kFields[] = {
    {"wte", "wte.weight", false},
    {"wpe", "wpe.weight", false},
    {"ln1w", "ln_1.weight", true},
    {"ln1b", "ln_1.bias", true},
    {"qkvw", "attn.c_attn.weight", true},
    {"qkvb", "attn.c_attn.bias", true},
    {"attprojw", "attn.c_proj.weight", true},
    {"attprojb", "attn.c_proj.bias", true},
    {"ln2w", "ln_2.weight", true},
    {"ln2b", "ln_2.bias", true},
    {"fcw", "mlp.c_fc.weight", true},
    {"fcb", "mlp.c_fc.bias", true},
    {"fcprojw", "mlp.c_proj.weight", true},
    {"fcprojb", "mlp.c_proj.bias", true},
    {"lnfw", "ln_f.weight", false},
    {"lnfb", "ln_f.bias", false},
};

// Visits (field, our tensor) in file order.
template <class F>
void for_each_tensor(const GPT& model, F&& visit) {
  std::map<std::string, Tensor> params;
  for (auto& [name, t] : model.named_parameters()) params.emplace(name, t);
  for (const Field& f : kFields) {
    if (!f.per_layer) {
      visit(f, params.at(f.our_name));
      continue;
    }
    for (int i = 0; i < model.config().n_layer; ++i)
      visit(f, params.at(fmt::format("h.{}.{}", i, f.our_name)));
  }
}

// The file's size for these sizes: header + (Vp C + maxT C + L (12 C^2 + 13 C) + 2 C) elements.
// Checked arithmetic, since a corrupt header can hold any int32 values; false on overflow.
bool file_bytes(const GPTConfig& c, int64_t padded_vocab, DType dt, uint64_t* bytes) {
  const uint64_t C = uint64_t(c.n_embd), L = uint64_t(c.n_layer);
  uint64_t cc, layer, layers, n;
  bool ok =
      !__builtin_mul_overflow(C, C, &cc) && !__builtin_mul_overflow(cc, uint64_t(12), &layer) &&
      !__builtin_add_overflow(layer, 13 * C, &layer) &&
      !__builtin_mul_overflow(layer, L, &layers) &&
      !__builtin_add_overflow(layers, (uint64_t(padded_vocab) + uint64_t(c.context) + 2) * C, &n) &&
      !__builtin_mul_overflow(n, uint64_t(dtype_size(dt)), bytes) &&
      !__builtin_add_overflow(*bytes, kHeaderBytes, bytes);
  return ok;
}

}  // namespace

LlmcHeader read_llmc_header(const std::string& path) {
  InputFile in(path);
  const std::string file = fmt::format("llm.c checkpoint '{}'", path);
  TS_CHECK(in.size() >= kHeaderBytes, "{}: header: the file has {} bytes, fewer than {}", file,
           in.size(), kHeaderBytes);
  int32_t h[256];
  in.read_at(0, h, kHeaderBytes, "the header");
  TS_CHECK(h[0] == kLlmcMagic, "{}: field 'magic' (header[0]) is {}, expected {}", file, h[0],
           kLlmcMagic);
  TS_CHECK(h[1] == 3 || h[1] == 5,
           "{}: field 'version' (header[1]) is {}, expected 3 (f32) or 5 (bf16)", file, h[1]);
  const char* names[] = {"maxT", "V", "L", "NH", "C", "Vp"};
  for (int i = 0; i < 6; ++i)
    TS_CHECK(h[2 + i] > 0, "{}: field '{}' (header[{}]) is {}, expected a positive value", file,
             names[i], 2 + i, h[2 + i]);
  LlmcHeader out;
  out.version = h[1];
  GPTConfig& c = out.config;
  c.context = h[2], c.vocab_size = h[3], c.n_layer = h[4], c.n_head = h[5], c.n_embd = h[6];
  out.padded_vocab = h[7];
  TS_CHECK(c.n_embd % c.n_head == 0,
           "{}: field 'C' (header[6]) = {} is not divisible by field 'NH' (header[5]) = {}", file,
           c.n_embd, c.n_head);
  TS_CHECK(out.padded_vocab >= c.vocab_size,
           "{}: field 'Vp' (header[7]) = {} is smaller than field 'V' (header[3]) = {}", file,
           out.padded_vocab, c.vocab_size);
  uint64_t expected = 0;
  const bool fits = file_bytes(c, out.padded_vocab, out.dtype(), &expected);
  TS_CHECK(fits, "{}: the header's sizes (L {} C {} Vp {} maxT {}) overflow a 64-bit file size",
           file, h[4], h[6], h[7], h[2]);
  TS_CHECK(in.size() == expected,
           "{}: file size is {} bytes, expected {} for the header's sizes (maxT {} V {} L {} NH {} "
           "C {} Vp {}, {})",
           file, in.size(), expected, h[2], h[3], h[4], h[5], h[6], h[7], dtype_name(out.dtype()));
  return out;
}

void load_llmc_weights(GPT& model, const std::string& path) {
  const LlmcHeader hdr = read_llmc_header(path);
  const GPTConfig &c = hdr.config, &m = model.config();
  TS_CHECK(
      c.n_layer == m.n_layer && c.n_head == m.n_head && c.n_embd == m.n_embd &&
          c.context == m.context && c.vocab_size == m.vocab_size,
      "load_llmc_weights '{}': file has L {} NH {} C {} maxT {} V {}, model has {} {} {} {} {}",
      path, c.n_layer, c.n_head, c.n_embd, c.context, c.vocab_size, m.n_layer, m.n_head, m.n_embd,
      m.context, m.vocab_size);
  InputFile in(path);
  const DType dt = hdr.dtype();
  uint64_t offset = kHeaderBytes;
  NoGradGuard no_grad;
  for_each_tensor(model, [&](const Field& f, Tensor param) {
    Tensor chunk = Tensor::empty(param.shape(), dt);
    in.read_at(offset, chunk.raw_data(), chunk.nbytes(), fmt::format("field '{}'", f.llmc_name));
    param.copy_from(chunk);
    offset += chunk.nbytes();
    if (std::strcmp(f.llmc_name, "wte") == 0)  // skip the padding rows
      offset += uint64_t(hdr.padded_vocab - c.vocab_size) * uint64_t(c.n_embd) * dtype_size(dt);
  });
  TS_ASSERT(offset == in.size());
}

std::unique_ptr<GPT> import_llmc_checkpoint(const std::string& path) {
  const LlmcHeader hdr = read_llmc_header(path);
  Generator g(0);  // the initial values are overwritten
  auto model = std::make_unique<GPT>(hdr.config, g);
  load_llmc_weights(*model, path);
  return model;
}

void export_llmc_checkpoint(const GPT& model, const std::string& path, DType dt,
                            int64_t padded_vocab) {
  TS_CHECK(dt == DType::f32 || dt == DType::bf16,
           "export_llmc_checkpoint '{}': dtype {} unsupported, expected f32 or bf16", path,
           dtype_name(dt));
  const GPTConfig& c = model.config();
  if (padded_vocab == 0) padded_vocab = (c.vocab_size + 127) / 128 * 128;
  TS_CHECK(padded_vocab >= c.vocab_size && padded_vocab <= INT32_MAX,
           "export_llmc_checkpoint '{}': padded vocab {} must be in [V = {}, 2^31)", path,
           padded_vocab, c.vocab_size);
  int32_t h[256] = {};
  h[0] = kLlmcMagic, h[1] = dt == DType::bf16 ? 5 : 3;
  h[2] = int32_t(c.context), h[3] = int32_t(c.vocab_size), h[4] = c.n_layer, h[5] = c.n_head;
  h[6] = int32_t(c.n_embd), h[7] = int32_t(padded_vocab);
  AtomicFileWriter out(path);
  out.write(h, kHeaderBytes);
  for_each_tensor(model, [&](const Field& f, const Tensor& param) {
    Tensor t = param.to(dt).contiguous();
    out.write(t.raw_data(), t.nbytes());
    if (std::strcmp(f.llmc_name, "wte") == 0) {
      std::vector<char> zeros(size_t(padded_vocab - c.vocab_size) * size_t(c.n_embd) *
                              dtype_size(dt));
      out.write(zeros.data(), zeros.size());
    }
  });
  out.commit();
}

}  // namespace tessera::nn
