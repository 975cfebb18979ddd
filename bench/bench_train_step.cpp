// The GPT-2 training step, timed end to end: draw a batch, forward, backward, AdamW, in f32, bf16
// autocast or fp16 autocast with dynamic loss scaling (parameters and optimizer state stay f32),
// on a fixed number of threads. fp16 runs the trainer's step: the loss is multiplied by the
// scale before backward, then one pass (optim/clip.h unscale_and_clip) finds the true gradient
// norm and, when it is finite, divides the gradients by the scale (and clips with --grad-clip);
// an inf/NaN gradient skips AdamW and halves the scale (optim/loss_scaler.h).
// Prints tokens/s; MFU, the model FLOP rate against the device's datasheet peak for the compute
// dtype (core/device_peak.h: the GPU table, or this CPU's cores x clock x FLOP/cycle), the same
// denominator as the training metrics and `tessera plan`; and beside it, under its own name,
// the GEMM-ceiling utilisation: the same rate against a large square GEMM measured in this
// process (oneDNN on the CPU, cuBLASLt on a GPU; --no-ceiling skips it). Also a per-step
// allocator check, and with --profile the step broken down by op family (core/profiler.h).
//
//   build-perf/bench_train_step --batch 4 --seq 64 --precision bf16 --steps 5 --profile
//
// --device cuda: model, optimizer state and batches on GPU 0 (a CUDA build); each step ends with
// a stream synchronisation, so its time is the GPU's. The GEMM ceiling is a cuBLASLt GEMM
// (8192^3, this precision); a GPU the datasheet table does not name has no MFU unless
// --peak-tflops gives its peak (which overrides the datasheet's on any device); memory is the
// device allocator's peak.
//
//   build-gpu/bench_train_step --device cuda --batch 8 --seq 1024 --precision bf16 --steps 5
//
// --recompute blocks: activation recomputation (model.recompute): each transformer block keeps
// only its input and runs its forward again during backward (less peak memory, more time).
//
// The last line is machine-readable for bench/peers/compare.py and scripts/gpu_check.sh:
//   RESULT impl=tessera precision=bf16 batch=4 seq=64 threads=2 tokens_per_s=... ms_per_step=...
//          mfu=... device=cpu peak_mib=... loss_scale=1 skipped_steps=0 recompute=none
//          mfu_peak_gflops=... gemm_ceiling_gflops=... of_gemm_ceiling=...
// (mfu: against the datasheet peak mfu_peak_gflops, 0 when there is none; of_gemm_ceiling: the
// model FLOP rate over gemm_ceiling_gflops, 0 when not measured; loss_scale: the final dynamic
// loss scale, 1 unless fp16; skipped_steps: steps whose fp16 gradients overflowed and that
// therefore ran no AdamW, warm-up included.)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/backend.h"
#include "core/profiler.h"
#include "core/rng.h"
#include "data/loader.h"
#include "dist/local_comm.h"
#include "kernels/cpu/matmul.h"
#include "nn/gpt.h"
#include "ops/autocast.h"
#include "ops/dispatch.h"
#include "ops/ops.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/loss_scaler.h"
#include "train/mfu_peak.h"
#include "train/step_decider.h"

using namespace tessera;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::string model = "gpt2-124m";
  int64_t batch = 4, seq = 64;
  std::string precision = "f32";
  int steps = 5, warmup = 2, threads = 2;
  bool profile = false;
  bool ceiling = true;
  float lr = 3e-4f;
  double grad_clip = 0;              // --grad-clip; 0: none
  float loss_scale = 65536.f;        // fp16: the initial dynamic loss scale (train.loss_scale)
  int64_t loss_scale_window = 2000;  // fp16: clean steps before the scale doubles
  Device device = Device::cpu();
  double peak_tflops = 0;          // --peak-tflops; 0: the device's datasheet peak
  std::string recompute = "none";  // --recompute none|blocks (nn::Recompute)
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "%s\nusage: bench_train_step [--model gpt2-124m] [--batch B] [--seq T]\n"
               "         [--precision f32|bf16|fp16] [--steps N] [--warmup W] [--threads P]\n"
               "         [--profile] [--no-ceiling] [--device cpu|cuda] [--peak-tflops X]\n"
               "         [--lr X] [--grad-clip X] [--loss-scale X] [--loss-scale-window N]\n"
               "         [--recompute none|blocks]\n",
               msg);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--model")
      o.model = value();
    else if (a == "--batch")
      o.batch = std::stoll(value());
    else if (a == "--seq")
      o.seq = std::stoll(value());
    else if (a == "--precision")
      o.precision = value();
    else if (a == "--steps")
      o.steps = std::stoi(value());
    else if (a == "--warmup")
      o.warmup = std::stoi(value());
    else if (a == "--threads")
      o.threads = std::stoi(value());
    else if (a == "--lr")
      o.lr = std::stof(value());
    else if (a == "--grad-clip")
      o.grad_clip = std::stod(value());
    else if (a == "--loss-scale")
      o.loss_scale = std::stof(value());
    else if (a == "--loss-scale-window")
      o.loss_scale_window = std::stoll(value());
    else if (a == "--profile")
      o.profile = true;
    else if (a == "--no-ceiling")
      o.ceiling = false;
    else if (a == "--device") {
      const std::string d = value();
      if (d == "cuda")
        o.device = Device::cuda(0);
      else if (d != "cpu")
        usage("--device must be cpu or cuda");
    } else if (a == "--peak-tflops")
      o.peak_tflops = std::stod(value());
    else if (a == "--recompute")
      o.recompute = value();
    else
      usage(("unknown option " + a).c_str());
  }
  if (o.recompute != "none" && o.recompute != "blocks") usage("--recompute must be none or blocks");
  if (o.precision != "f32" && o.precision != "bf16" && o.precision != "fp16")
    usage("--precision must be f32, bf16 or fp16");
  if (!(o.grad_clip >= 0) || !(o.loss_scale > 0) || o.loss_scale_window < 1)
    usage("--grad-clip must be >= 0, --loss-scale > 0, --loss-scale-window >= 1");
  if (o.batch < 1 || o.seq < 1 || o.steps < 1 || o.warmup < 0 || o.threads < 1)
    usage("batch, seq, steps and threads must be positive, warmup >= 0");
  if (!o.device.is_cpu() && !find_backend(o.device.type))
    usage("--device cuda: this build has no CUDA backend (-DTESSERA_CUDA=ON)");
  return o;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// oneDNN's rate on a large square GEMM (2048^3, B transposed as linear() stores weights): the
// CPU's GEMM ceiling. Median of 7 runs after one that builds the primitive.
double gemm_ceiling_gflops(DType t) {
  const int64_t n = 2048;
  Generator g(7);
  Tensor a = Tensor::randn(Shape{n, n}, g).to(t), b = Tensor::randn(Shape{n, n}, g).to(t);
  Tensor c = Tensor::empty(Shape{n, n});
  cpu::GemmArgs args;
  args.m = args.n = args.k = n, args.ab_type = t, args.trans_b = true;
  args.a = a.raw_data(), args.b = b.raw_data(), args.c = c.data<float>();
  cpu::gemm(args);
  std::vector<double> rates;
  for (int i = 0; i < 7; ++i) {
    auto t0 = Clock::now();
    cpu::gemm(args);
    rates.push_back(2.0 * double(n) * double(n) * double(n) / seconds_since(t0) * 1e-9);
  }
  return median(rates);
}

// Host waits so far (the emulated CUDA device counts them), -1 where nothing counts them.
int64_t host_waits(Device d) {
  return d.is_cpu() ? -1 : backend_for(d).host_waits();
}

// Waits for the device's queued work (a no-op on the CPU), so that wall time is device time.
void device_sync(Device d) {
  if (!d.is_cpu()) backend_for(d).synchronize();
}

// The device's rate on a large square GEMM (8192^3, operands in t, f32 output, B transposed as
// linear() uses it; cuBLASLt on a GPU): its GEMM ceiling. Median of 7.
double device_gemm_ceiling_gflops(Device d, DType t) {
  const int64_t n = 8192;
  Tensor a = Tensor::full(Shape{n, n}, 0.01, t, d);
  Tensor b = Tensor::full(Shape{n, n}, 0.01, t, d);
  Tensor c = Tensor::empty(Shape{n, n}, DType::f32, d);
  kernels::GemmArgs g;
  g.m = g.n = g.k = n, g.ab_type = t, g.trans_b = true;
  g.a = a.raw_data(), g.b = b.raw_data(), g.c = c.data<float>();
  const kernels::OpKernels& k = ops::device_kernels("gemm ceiling", d);
  k.gemm(g);
  device_sync(d);
  std::vector<double> rates;
  for (int i = 0; i < 7; ++i) {
    auto t0 = Clock::now();
    k.gemm(g);
    device_sync(d);
    rates.push_back(2.0 * double(n) * double(n) * double(n) / seconds_since(t0) * 1e-9);
  }
  return median(rates);
}

void print_breakdown(const prof::Totals& t, double step_seconds, int steps, double ceiling) {
  std::printf("\n%s", prof::format_breakdown(t, step_seconds, steps).c_str());
  const size_t gi = size_t(prof::Family::gemm);
  if (t.seconds[gi] > 0 && ceiling > 0) {
    const double rate = t.flops[gi] / t.seconds[gi] * 1e-9;
    std::printf(
        "GEMM: %.1f%% of the step, %.0f GFLOP/s achieved = %.0f%% of the %.0f GFLOP/s "
        "ceiling\n",
        100 * t.seconds[gi] / steps / step_seconds, rate, 100 * rate / ceiling, ceiling);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  omp_set_num_threads(o.threads);
  const DType compute = o.precision == "bf16"   ? DType::bf16
                        : o.precision == "fp16" ? DType::f16
                                                : DType::f32;
  nn::GPTConfig cfg = nn::gpt_preset(o.model);
  cfg.recompute = nn::recompute_from_name(o.recompute);
  if (o.seq > cfg.context) usage("--seq exceeds the model's context");

  const bool on_gpu = !o.device.is_cpu();
  if (on_gpu) {
    const DeviceBackend& b = backend_for(o.device);
    if (b.device_count() <= o.device.index) {
      std::fprintf(stderr, "bench_train_step: --device %s: no such device: %s\n",
                   o.device.str().c_str(), b.unavailable_reason().c_str());
      return 1;
    }
    std::printf("device: %s\n", b.describe(o.device.index).c_str());
  }
  // MFU's denominator, as the training metrics take it (train/mfu_peak.h).
  const train::MfuPeak peak = o.peak_tflops > 0 ? train::MfuPeak{o.peak_tflops, "--peak-tflops"}
                                                : train::datasheet_mfu_peak(o.device, compute);
  if (peak.tflops > 0)
    std::printf("MFU against %.0f GFLOP/s (%s)\n", peak.tflops * 1e3, peak.source.c_str());
  else
    std::printf("no MFU: %s (pass --peak-tflops)\n", peak.source.c_str());
  // The GEMM ceiling, GFLOP/s in the compute dtype (0: not measured): reported beside MFU.
  double ceiling = 0;
  if (o.ceiling && !on_gpu) {
    const double f32 = gemm_ceiling_gflops(DType::f32), bf16 = gemm_ceiling_gflops(DType::bf16);
    std::printf("GEMM ceiling (oneDNN 2048^3, this process): f32 %.0f GFLOP/s, bf16 %.0f GFLOP/s\n",
                f32, bf16);
    // fp16 on the CPU widens its operands exactly and runs the f32 GEMM: f32's ceiling.
    ceiling = compute == DType::bf16 ? bf16 : f32;
  }
  if (o.ceiling && on_gpu) {
    ceiling = device_gemm_ceiling_gflops(o.device, compute);
    std::printf("GEMM ceiling (cuBLASLt 8192^3, %s, this process): %.0f GFLOP/s\n",
                o.precision.c_str(), ceiling);
  }

  Generator init(1234);
  nn::GPT model(cfg, init);
  model.to(o.device);  // before the flat buffers and the optimizer, which live where it is
  FlatParameters flat(model.parameters());
  AdamWOptions ao;
  ao.weight_decay = 0.01f;
  AdamW opt(flat, ao);
  LossScalerOptions so;  // the trainer's (train/trainer.cpp): disabled, i.e. 1, unless fp16
  so.enabled = compute == DType::f16;
  so.init_scale = o.loss_scale;
  so.growth_interval = o.loss_scale_window;
  so.min_scale = std::min(so.min_scale, so.init_scale);
  DynamicLossScaler scaler(so);
  // On a GPU each step is decided on the device, as the trainer decides it
  // (train/step_decider.h): the host waits for nothing inside a step; the verdict is read after
  // the benchmark's own synchronisation.
  dist::LocalCommunicator one_rank;
  std::optional<train::StepDecider> decider;
  if (on_gpu) {
    train::StepDeciderOptions d;
    d.scaler = so;
    d.max_norm = o.grad_clip;
    d.capacity = 1;
    decider.emplace(o.device, one_rank, d, scaler.state(), 0);
  }

  // Synthetic corpus: uniform tokens, windows drawn by the real batcher.
  const int64_t corpus = std::max<int64_t>(1 << 20, 4 * o.batch * (o.seq + 1));
  Tensor tokens = Tensor::empty(Shape{corpus}, DType::u16);
  {
    Generator tg(99);
    uint16_t* p = tokens.data<uint16_t>();
    for (int64_t i = 0; i < corpus; ++i) p[i] = uint16_t(tg.next_u64() % uint64_t(cfg.vocab_size));
  }
  data::TokenBatcher batcher(tokens, o.batch, o.seq, 5);

  const double flops_per_token = nn::gpt_flops_per_token(cfg, o.seq);
  const int64_t tokens_per_step = o.batch * o.seq;
  std::printf(
      "tessera train step: %s (%lld parameters), batch %lld x %lld, %s, recompute %s, %d "
      "threads, %d warm-up + %d timed steps\n",
      o.model.c_str(), static_cast<long long>(flat.param_numel()), static_cast<long long>(o.batch),
      static_cast<long long>(o.seq), o.precision.c_str(), o.recompute.c_str(), o.threads, o.warmup,
      o.steps);
  std::printf("model FLOPs per token (6N + attention): %.3f GFLOP\n", flops_per_token * 1e-9);

  Allocator& alloc = allocator_for(o.device);
  if (on_gpu) alloc.reset_peak();
  std::vector<double> timed;
  double first_loss = 0, last_loss = 0;
  for (int step = 0; step < o.warmup + o.steps; ++step) {
    const bool measured = step >= o.warmup;
    if (measured && step == o.warmup && o.profile) {
      prof::reset();
      prof::set_enabled(true);
    }
    const uint64_t allocs0 = alloc.stats().system_allocs;
    const int64_t waits0 = host_waits(o.device);
    auto t0 = Clock::now();
    data::TokenBatch b;
    {
      prof::Scope s(prof::Family::data, "batch");
      b = batcher.next();
      if (on_gpu) b.x = b.x.to(o.device), b.y = b.y.to(o.device);
    }
    {
      prof::Scope s(prof::Family::optimizer, "zero_grad");
      flat.zero_grad();
    }
    float loss = 0;
    const float loss_scale = scaler.scale();
    bool stepped = true;
    if (decider) {
      decider->begin_step();
      {
        AutocastGuard autocast(compute);
        Tensor l = model.loss(b.x, b.y);
        decider->add_loss(l.detach().to(DType::f32).contiguous());
        // fp16: seeded with the scale the device last decided.
        if (scaler.options().enabled)
          l.backward(decider->backward_seed(l));
        else
          l.backward();
      }
      prof::Scope s(prof::Family::optimizer, "adamw");
      decider->decide([&](double* squares) {
        backend_for(o.device).sum_squares_into(flat.grad_ptr(), flat.numel(), squares);
      });
      opt.step(o.lr, decider->gate());
    } else {
      {
        AutocastGuard autocast(compute);
        Tensor l = model.loss(b.x, b.y);
        loss = l.item();
        // fp16: the gradients come out loss_scale x too large, small ones no longer flushed to 0.
        (loss_scale == 1.f ? l : ops::scale(l, loss_scale)).backward();
      }
      double gnorm = 0;
      {
        prof::Scope s(prof::Family::optimizer, "unscale_clip");
        // The true norm; unscaled and clipped in one pass when finite (as the trainer does).
        if (scaler.options().enabled)
          gnorm = unscale_and_clip(flat, o.grad_clip, loss_scale);
        else if (o.grad_clip > 0)
          gnorm = clip_grad_norm(flat, o.grad_clip);
      }
      stepped = std::isfinite(gnorm);  // fp16 overflow: no update, the scale backs off
      {
        prof::Scope s(prof::Family::optimizer, "adamw");
        if (stepped) opt.step(o.lr);
      }
      scaler.update(stepped);
    }
    // Host waits inside the step (the emulated device counts them; the sync below is the
    // benchmark's own and not counted, nor is the read of the device's verdict after it).
    const int64_t waits = waits0 >= 0 ? host_waits(o.device) - waits0 : -1;
    device_sync(o.device);
    if (decider) {
      const train::StepDecider::Verdicts v = decider->read();
      loss = float(v.steps.at(0).loss);
      stepped = v.steps[0].outcome == kStepApplied;
      scaler.load_state({v.state.loss_scale, v.state.clean_steps, v.state.skipped_steps});
      // The optimizer counted the call; the device counted the updates.
      OptimizerState st = opt.state();
      st.step = v.state.applied;
      opt.load_state(st);
    }
    const double sec = seconds_since(t0);
    const uint64_t new_allocs = alloc.stats().system_allocs - allocs0;
    if (step == 0) first_loss = loss;
    last_loss = loss;
    if (measured) timed.push_back(sec);
    char scale_note[96] = "";
    if (scaler.options().enabled)
      std::snprintf(scale_note, sizeof scale_note, "  loss scale %g%s", double(loss_scale),
                    stepped ? "" : " (overflow: skipped)");
    char waits_note[48] = "";
    if (waits >= 0)
      std::snprintf(waits_note, sizeof waits_note, "  host waits %lld",
                    static_cast<long long>(waits));
    std::printf("step %2d: loss %.4f  %8.1f ms  %8.0f tok/s  system allocs +%llu%s%s%s\n", step + 1,
                double(loss), sec * 1e3, double(tokens_per_step) / sec,
                static_cast<unsigned long long>(new_allocs), waits_note, scale_note,
                measured ? "" : "  (warm-up)");
    std::fflush(stdout);
  }
  prof::set_enabled(false);

  double total = 0;
  for (double s : timed) total += s;
  const double mean_step = total / double(timed.size());
  const double tok_s = double(tokens_per_step) / mean_step;
  const double achieved = flops_per_token * tok_s * 1e-9;
  const double mfu = peak.tflops > 0 ? achieved / (peak.tflops * 1e3) : 0;
  const double of_ceiling = ceiling > 0 ? achieved / ceiling : 0;
  std::printf("\ntimed: mean %.1f ms/step (median %.1f), %.0f tokens/s, %.0f GFLOP/s model FLOPs",
              mean_step * 1e3, median(timed) * 1e3, tok_s, achieved);
  if (peak.tflops > 0)
    std::printf(", MFU %.1f%% of %.0f GFLOP/s (%s)", 100 * mfu, peak.tflops * 1e3,
                peak.source.c_str());
  if (ceiling > 0)
    std::printf(", GEMM-ceiling utilisation %.1f%% of %.0f GFLOP/s", 100 * of_ceiling, ceiling);
  const double peak_mib = double(alloc.stats().peak_in_use) / (1 << 20);
  std::printf("\nloss %.4f -> %.4f; peak tensor memory %.0f MiB on %s; %lld GEMM primitives\n",
              double(first_loss), double(last_loss), peak_mib, o.device.str().c_str(),
              static_cast<long long>(cpu::gemm_primitive_count()));
  if (scaler.options().enabled)
    std::printf("fp16 loss scale %g at the end; %lld of %d steps skipped for overflow\n",
                double(scaler.scale()), static_cast<long long>(scaler.skipped_steps()),
                o.warmup + o.steps);
  if (o.profile) print_breakdown(prof::totals(), mean_step, o.steps, ceiling);
  std::printf(
      "RESULT impl=tessera precision=%s batch=%lld seq=%lld threads=%d tokens_per_s=%.1f "
      "ms_per_step=%.2f mfu=%.4f device=%s peak_mib=%.0f loss_scale=%g skipped_steps=%lld "
      "recompute=%s mfu_peak_gflops=%.0f gemm_ceiling_gflops=%.0f of_gemm_ceiling=%.4f\n",
      o.precision.c_str(), static_cast<long long>(o.batch), static_cast<long long>(o.seq),
      o.threads, tok_s, mean_step * 1e3, mfu, o.device.str().c_str(), peak_mib,
      double(scaler.scale()), static_cast<long long>(scaler.skipped_steps()), o.recompute.c_str(),
      peak.tflops * 1e3, ceiling, of_ceiling);
  return 0;
}
