// This machine as a DeviceSpec: a microbenchmark of the CPU kernels Tessera runs, with the
// current OpenMP thread count, so that `tessera plan` can predict a local run and be checked
// against one. What it measures:
//   - GEMM FLOP/s (cpu::gemm, oneDNN) in f32 and bf16 at a few shapes, to which the GEMM
//     efficiency curve (cluster.h) is fitted;
//   - fused causal attention's FLOP rate (cpu::attention_forward, f32);
//   - the memory bandwidth of a large element-wise kernel (cpu::add: two reads, one write);
//   - the overhead of one small kernel call;
//   - memcpy bandwidth, from which the link between local ranks is estimated (local_link);
//   - then every kernel of a few small training steps (a one-layer GPT and Llama, two sizes,
//     f32 and bf16), timed on the CPU, to which the per-kernel fits are made (kernel_fit.h):
//     what each kind of kernel takes beyond the roofline the figures above give it.
// Calibrate on an otherwise idle machine: where other processes hold the cores, every OpenMP
// parallel region waits for its threads to be scheduled (milliseconds), and the figures say so.
#pragma once
#include "plan/cluster.h"

namespace tessera::plan {

struct CalibrationOptions {
  // Seconds spent timing each measurement at most (about 20 of them in all, most far
  // shorter): the default keeps a calibration to a few seconds; tests pass less.
  double seconds_per_measurement = 0.1;
  // Whether to time small training steps kernel by kernel (about 3 s) and fit what each kind
  // of kernel takes against its roofline (DeviceSpec::measured_kernels, kernel_fit.h).
  bool time_training_steps = true;
  // The ranks of the job on this machine: with more than one, ranks - 1 threads train the same
  // small runs beside the timed one (untraced), so the fits include the other ranks' share of
  // the caches and the memory bandwidth.
  int ranks = 1;
};

// Measures this machine now (a few seconds with the default options).
DeviceSpec calibrate_local(const CalibrationOptions& options = {});

// calibrate_local() for `ranks` ranks on this machine, run once per process and rank count, on
// first use (thread-safe), and kept.
const DeviceSpec& local_device(int ranks = 1);

// The link between ranks on this machine (MPI over shared memory): each message is copied
// into a shared segment by the sender and out of it by the receiver, so its bandwidth is half
// of one thread's memcpy bandwidth (measured once per process); 4 us per step, as Tessera's
// MPI backend measures for small all-reduces on this machine (bench/collectives.sh).
LinkSpec local_link();

}  // namespace tessera::plan
