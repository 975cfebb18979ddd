#include "plan/calibrate.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "core/half.h"
#include "core/host_cores.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/matmul.h"
#include "plan/cost_model.h"
#include "plan/meta_run.h"
#include "train/config.h"

namespace tessera::plan {
namespace {

using Clock = std::chrono::steady_clock;

// The fastest of repeated calls of fn, in seconds: one warm-up call (oneDNN builds its
// primitive, pages are touched), then calls until `budget` seconds have passed (at least two).
// The fastest call is what the machine can do; slower ones met other work on a shared host.
double fastest_call(const std::function<void()>& fn, double budget) {
  fn();
  double best = std::numeric_limits<double>::infinity();
  auto start = Clock::now();
  for (int reps = 0;; ++reps) {
    auto t0 = Clock::now();
    fn();
    auto t1 = Clock::now();
    best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
    if (reps >= 1 && std::chrono::duration<double>(t1 - start).count() >= budget) break;
  }
  return best;
}

struct GemmShape {
  int64_t m, n, k;
};

// FLOP/s of C[m, n] = A[m, k] B[k, n] with operands of type t.
double gemm_rate(const GemmShape& s, DType t, double budget) {
  const size_t elem = t == DType::f32 ? 4 : 2;
  std::vector<unsigned char> a(size_t(s.m * s.k) * elem), b(size_t(s.k * s.n) * elem);
  if (t == DType::f32) {
    std::fill_n(reinterpret_cast<float*>(a.data()), s.m * s.k, 0.5f);
    std::fill_n(reinterpret_cast<float*>(b.data()), s.k * s.n, 0.25f);
  } else {
    std::fill_n(reinterpret_cast<bf16*>(a.data()), s.m * s.k, float_to_bf16(0.5f));
    std::fill_n(reinterpret_cast<bf16*>(b.data()), s.k * s.n, float_to_bf16(0.25f));
  }
  std::vector<float> c(size_t(s.m * s.n));
  kernels::GemmArgs g;
  g.m = s.m;
  g.n = s.n;
  g.k = s.k;
  g.ab_type = t;
  g.a = a.data();
  g.b = b.data();
  g.c = c.data();
  g.label = "plan_calibrate";
  double seconds = fastest_call([&] { cpu::gemm(g); }, budget);
  return 2.0 * double(s.m) * double(s.n) * double(s.k) / seconds;
}

double shape_factor(const GemmShape& s, double half_dim) {
  return GemmEfficiency{1.0, half_dim}.at(s.m, s.n, s.k);
}

struct CurveFit {
  double peak = 0;  // the rate of an infinitely large GEMM
  double half_dim = 0;
};

// Least squares in log space of rate_i = peak * s(m) s(n) s(k) over a geometric grid of
// half_dim from 4 to 2048; for each, log peak is the mean residual.
CurveFit fit_gemm_curve(const std::vector<GemmShape>& shapes, const std::vector<double>& rates) {
  CurveFit best;
  double best_err = std::numeric_limits<double>::infinity();
  for (double h = 4; h <= 2048; h *= 1.1) {
    double mean = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      mean += std::log(rates[i] / shape_factor(shapes[i], h));
    }
    mean /= double(shapes.size());
    double err = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      double r = std::log(rates[i] / shape_factor(shapes[i], h)) - mean;
      err += r * r;
    }
    if (err < best_err) {
      best_err = err;
      best = {std::exp(mean), h};
    }
  }
  return best;
}

// Forward FLOPs of fused causal attention, as the ops count them: QK^T and PV are 2 * hs
// FLOPs per (query, key) pair each, and a causal mask keeps half of the T * T pairs.
double causal_attention_flops(int64_t batch, int64_t heads, int64_t seq, int64_t head_size) {
  return 4.0 * double(batch) * double(heads) * double(seq) * double(seq) * double(head_size) / 2.0;
}

double attention_rate(double budget) {
  kernels::AttentionDims d;
  d.batch = 2;
  d.seq = 256;
  d.channels = 256;
  d.heads = 4;
  d.kv_heads = 4;
  const int64_t width = kernels::attention_qkv_width(d);
  std::vector<float> qkv(size_t(d.batch * d.seq * width), 0.01f);
  std::vector<float> out(size_t(d.batch * d.seq * d.channels));
  std::vector<float> lse(size_t(d.batch * d.heads * d.seq));
  double seconds =
      fastest_call([&] { cpu::attention_forward(d, qkv.data(), out.data(), lse.data()); }, budget);
  return causal_attention_flops(d.batch, d.heads, d.seq, d.channels / d.heads) / seconds;
}

// Bytes/s of y = a + b over buffers far larger than the caches (two reads and a write).
double elementwise_bandwidth(double budget) {
  const int64_t n = int64_t(1) << 23;  // 32 MiB per buffer
  std::vector<float> a(static_cast<size_t>(n), 1.0f), b(static_cast<size_t>(n), 2.0f);
  std::vector<float> y(static_cast<size_t>(n));
  double seconds = fastest_call([&] { cpu::add(a.data(), b.data(), y.data(), n, n); }, budget);
  return 3.0 * 4.0 * double(n) / seconds;
}

// One thread's memcpy bandwidth, counting the bytes read and written once each.
double memcpy_bandwidth(double budget) {
  const size_t n = size_t(1) << 26;  // 64 MiB
  std::vector<unsigned char> src(n, 1), dst(n, 0);
  double seconds = fastest_call([&] { std::memcpy(dst.data(), src.data(), n); }, budget);
  return double(n) / seconds;
}

// The time of the smallest kernel call Tessera makes: a tiny oneDNN GEMM (its primitive
// cached), the floor under every op's kernel on this machine. Ops pay more (tensor
// allocation, autograd bookkeeping), which a per-op figure would have to add.
double kernel_overhead(double budget) {
  kernels::GemmArgs g;
  std::vector<float> a(16, 1.0f), b(16, 1.0f), c(16);
  g.m = g.n = g.k = 4;
  g.a = a.data();
  g.b = b.data();
  g.c = c.data();
  g.label = "plan_calibrate";
  return fastest_call([&] { cpu::gemm(g); }, budget);
}

// The small training runs whose timed kernels give the per-kernel fits (kernel_fit.h): one
// layer of a GPT (LayerNorm, GELU, learned positions, tied head) and of a Llama (RMSNorm,
// SwiGLU, rotary positions, grouped-query attention), each at two sizes (a cache-resident one
// and one whose activations spill to memory), in f32 and in bf16. Every op family a decoder
// step runs is among them, at sizes that bracket the models this machine trains.
std::vector<train::Config> calibration_runs() {
  struct Size {
    int64_t width, seq, batch, vocab;
  };
  const Size sizes[] = {{128, 128, 4, 2048}, {384, 256, 4, 8192}};
  std::vector<train::Config> runs;
  for (const char* kind : {"gpt", "llama"}) {
    for (const Size& z : sizes) {
      for (const char* precision : {"f32", "bf16"}) {
        const std::string kv = std::string(kind) == "llama" ? "n_kv_head = 2\n" : "";
        runs.push_back(train::parse_config(
            fmt::format(R"([model]
kind = "{}"
n_layer = 1
n_head = 4
{}n_embd = {}
context = {}
vocab_size = {}
dropout = 0.0
[data]
kind = "random"
[train]
batch_size = {}
seq_len = {}
precision = "{}"
eval_every = 0
log_every = 1
)",
                        kind, kv, z.width, z.seq, z.vocab, z.batch, z.seq, precision),
            "plan calibration"));
      }
    }
  }
  return runs;
}

// Stand-ins for the other ranks of a job on this machine: threads that train the calibration
// runs, untraced, from construction to destruction, so the timed run shares the cores' caches
// and the memory bandwidth as a rank of the job does. (What they do not stand for: MPI's
// progress threads.)
class OtherRanks {
 public:
  explicit OtherRanks(int count) {
    const int threads = omp_get_max_threads();  // each rank's OpenMP threads, as the timed one's
    for (int i = 0; i < count; ++i)
      threads_.emplace_back([this, threads] {
        omp_set_num_threads(threads);
        meta::UntracedThread untraced;
        const std::vector<train::Config> runs = calibration_runs();
        try {
          for (size_t r = 0; !stop_.load(); ++r) run_untimed_on_this_cpu(runs[r % runs.size()], 2);
        } catch (const std::exception&) {
          // A stand-in that cannot train leaves the timed run alone; the fits say less.
        }
      });
  }
  ~OtherRanks() {
    stop_.store(true);
    for (std::thread& t : threads_) t.join();
  }
  OtherRanks(const OtherRanks&) = delete;
  OtherRanks& operator=(const OtherRanks&) = delete;

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// Each calibration run's kernels, timed, against their rooflines on `d`, with `other_ranks`
// stand-ins training beside them.
std::vector<KernelSample> time_kernels(const DeviceSpec& d, int other_ranks) {
  OtherRanks others(other_ranks);
  std::vector<KernelSample> samples;
  for (const train::Config& cfg : calibration_runs()) {
    for (const TimedKernel& k : run_on_this_cpu(cfg, 3).kernels)
      samples.push_back(
          {k.cost.name, k.cost.dtype, k.cost.cls, roofline_seconds(d, k.cost), k.seconds});
  }
  return samples;
}

}  // namespace

DeviceSpec calibrate_local(const CalibrationOptions& options) {
  const double budget = std::max(options.seconds_per_measurement, 1e-4);
  DeviceSpec d;
  const int threads = omp_get_max_threads();
  d.name = fmt::format("local CPU ({} OpenMP thread{})", threads, threads == 1 ? "" : "s");

  // f32 GEMMs, smallest first; past the third, a shape whose one call alone exceeds the
  // budget ends the list.
  const std::vector<GemmShape> all = {{64, 64, 64},      {128, 128, 128},  {256, 256, 256},
                                      {1024, 1024, 64},  {64, 1024, 1024}, {512, 512, 512},
                                      {1024, 1024, 1024}};
  std::vector<GemmShape> shapes;
  std::vector<double> rates;
  for (const GemmShape& s : all) {
    double r = gemm_rate(s, DType::f32, budget);
    shapes.push_back(s);
    rates.push_back(r);
    if (shapes.size() >= 3 && 2.0 * double(s.m) * double(s.n) * double(s.k) / r > budget) break;
  }
  CurveFit fit = fit_gemm_curve(shapes, rates);
  d.peak_f32 = fit.peak;
  d.peak_tf32 = fit.peak;  // no tf32 on the CPU: f32 GEMMs run in f32
  d.peak_f16 = fit.peak;   // f16 operands are widened to f32 (kernels/cpu/matmul.h)
  d.gemm = {1.0, fit.half_dim};
  d.f32_gemm_tf32 = false;

  // bf16 (AVX-512-BF16 / AMX through oneDNN): the peak implied by two shapes on the f32 curve.
  const GemmShape bf16_shapes[] = {{256, 256, 256}, {512, 512, 512}};
  double bf16_peak = 0;
  for (const GemmShape& s : bf16_shapes) {
    bf16_peak =
        std::max(bf16_peak, gemm_rate(s, DType::bf16, budget) / shape_factor(s, fit.half_dim));
  }
  d.peak_bf16 = bf16_peak;

  // Fused attention computes in f32 on the CPU, whatever the autocast dtype.
  d.attention_in_f32 = true;
  d.attention_efficiency = attention_rate(budget) / d.peak_f32;

  d.memory_bandwidth = elementwise_bandwidth(budget);
  d.bandwidth_fraction = 1.0;  // measured: already what kernels reach
  // Element-wise arithmetic is bandwidth-bound long before the vector units are: count it at
  // the GEMM rate.
  d.vector_fraction = 1.0;
  d.memory_bytes = host_memory_bytes();
  d.min_kernel_seconds = kernel_overhead(budget);
  if (options.time_training_steps)
    d.measured_kernels = std::make_shared<const KernelTimes>(
        KernelTimes::fit(time_kernels(d, std::max(options.ranks, 1) - 1)));
  return d;
}

const DeviceSpec& local_device(int ranks) {
  static std::mutex mu;
  static std::map<int, DeviceSpec> calibrated;
  std::lock_guard<std::mutex> lock(mu);
  auto it = calibrated.find(ranks);
  if (it == calibrated.end()) {
    CalibrationOptions options;
    options.ranks = ranks;
    it = calibrated.emplace(ranks, calibrate_local(options)).first;
  }
  return it->second;
}

// MPI between ranks of this machine: shared memory, a message copied into a shared segment and
// out of it, so half of one thread's memcpy bandwidth; 4 us a step is what Tessera's MPI
// backend measures for small all-reduces here (bench/collectives.sh: 8 us for 4 KiB, 28 us for
// 64 KiB, two ranks).
LinkSpec local_link() {
  static const double bandwidth = memcpy_bandwidth(0.05) / 2;
  return LinkSpec{"shared memory (MPI on one machine)", bandwidth, 4e-6, 1.0};
}

}  // namespace tessera::plan
