// Collective bandwidth over Tessera's MPI backend (dist/mpi_comm.h), launched by mpirun:
//
//   mpirun -n 2 build-bench/bench_collectives [--min-bytes 4096] [--max-bytes 268435456]
//                          [--seconds 0.5] [--ring-min-bytes N] [--overlap auto|on|off] [--busy]
//
// For each message size (powers of 4 from --min-bytes to --max-bytes of f32) it times
// all_reduce, reduce_scatter and all_gather through the communicator as training calls them
// (queue the operation, wait on its handle), and prints the median time and the bus bandwidth
// (NCCL's convention: all-reduce moves 2 (n-1)/n of the buffer per rank, reduce-scatter and
// all-gather (n-1)/n), so figures compare across rank counts and with nccl-tests. --busy also
// times each call with the calling thread computing, after it queues the call, for as long as
// the call takes alone, then waiting: 1x that time means the transfer hid entirely behind the
// computation, 2x that it did not overlap at all (as gradients do with the backward pass).
// --overlap sets MpiOptions::overlap (whether collectives progress while every caller computes).
// --ring-min-bytes sets MpiOptions::ring_min_bytes: from that size on the backend runs its own
// ring instead of MPI's collective (a huge value times MPI's alone).
//
// bench/peers/torch_collectives.py measures torch.distributed (gloo) over the same sizes, and
// bench/collectives.sh prints both side by side. The last lines are machine-readable:
//   RESULT impl=tessera op=all_reduce ranks=2 bytes=... seconds=... busbw_gbps=... busy_seconds=...
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "dist/mpi_comm.h"

namespace {

using namespace tessera;
using Clock = std::chrono::steady_clock;

struct Options {
  int64_t min_bytes = 4096;
  int64_t max_bytes = int64_t(256) << 20;
  double seconds = 0.5;  // per size and op, after one warm-up call
  bool busy = false;
  dist::MpiOptions::Overlap overlap = dist::MpiOptions::Overlap::automatic;
  int64_t ring_min_bytes = dist::MpiOptions{}.ring_min_bytes;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_collectives: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--min-bytes") {
      o.min_bytes = std::atoll(value());
    } else if (a == "--max-bytes") {
      o.max_bytes = std::atoll(value());
    } else if (a == "--seconds") {
      o.seconds = std::atof(value());
    } else if (a == "--ring-min-bytes") {
      o.ring_min_bytes = std::atoll(value());
    } else if (a == "--overlap") {
      o.overlap = dist::MpiOptions::overlap_named(value());
    } else if (a == "--busy") {
      o.busy = true;
    } else {
      std::fprintf(stderr,
                   "bench_collectives: unknown argument '%s' (--min-bytes N --max-bytes N "
                   "--seconds S --ring-min-bytes N --overlap auto|on|off --busy)\n",
                   a.c_str());
      std::exit(2);
    }
  }
  return o;
}

// Keeps this thread computing for `seconds`, like a backward pass that goes on while its
// gradients travel (it never looks at the collective).
double compute_for(double seconds) {
  double x = 1;
  const auto until = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < until)
    for (int i = 0; i < 1000; ++i) x = x * 1.0000001 + 1e-9;
  return x;
}

// One timed call: queue, compute for `compute_s`, wait.
double time_one(dist::Communicator& comm, const std::string& op, Tensor& whole, Tensor& part,
                const std::vector<int64_t>& counts, double compute_s) {
  comm.barrier();
  const auto t0 = Clock::now();
  dist::WorkHandle w;
  if (op == "all_reduce") {
    w = comm.all_reduce_async(whole);
  } else if (op == "reduce_scatter") {
    w = comm.reduce_scatter_async(whole, part, counts);
  } else {
    w = comm.all_gather_async(part, whole, counts);
  }
  if (compute_s > 0) {
    volatile double sink = compute_for(compute_s);
    (void)sink;
  }
  w->wait();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The median of calls repeated for about `seconds` (every rank runs as many: rank 0 decides).
double median_time(dist::Communicator& comm, const std::string& op, Tensor& whole, Tensor& part,
                   const std::vector<int64_t>& counts, double compute_s, double seconds) {
  time_one(comm, op, whole, part, counts, compute_s);  // warm-up
  std::vector<double> times;
  double total = 0;
  for (;;) {
    const double t = time_one(comm, op, whole, part, counts, compute_s);
    times.push_back(t);
    total += t;
    Tensor go = Tensor::zeros({1});
    if (comm.rank() == 0 && total < seconds && times.size() < 1000) go.data<float>()[0] = 1;
    comm.broadcast(go, 0);
    if (go.data<float>()[0] == 0) break;
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double bus_factor(const std::string& op, int n) {
  const double f = double(n - 1) / double(n);
  return op == "all_reduce" ? 2 * f : f;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  dist::MpiOptions mpi;
  mpi.ring_min_bytes = opt.ring_min_bytes;
  mpi.overlap = opt.overlap;
  auto comm = dist::mpi_world(mpi);
  const int n = comm->world_size();
  if (comm->rank() == 0)
    std::printf("# %s; ring from %lld bytes\n# %-14s %12s %12s %12s%s\n", comm->describe().c_str(),
                (long long)opt.ring_min_bytes, "op", "bytes", "median ms", "busbw GB/s",
                opt.busy ? "      busy ms  vs alone" : "");
  for (int64_t bytes = opt.min_bytes; bytes <= opt.max_bytes; bytes *= 4) {
    const int64_t elems = std::max<int64_t>(n, bytes / 4 / n * n);
    Tensor whole = Tensor::zeros({elems});
    Tensor part = Tensor::zeros({elems / n});
    const std::vector<int64_t> counts(size_t(n), elems / n);
    for (const std::string op : {"all_reduce", "reduce_scatter", "all_gather"}) {
      const double median = median_time(*comm, op, whole, part, counts, 0, opt.seconds);
      // --busy: computing for as long as the call takes alone, then waiting. 1x: the transfer
      // hid entirely behind the computation; 2x: it did not overlap at all.
      const double busy =
          opt.busy ? median_time(*comm, op, whole, part, counts, median, opt.seconds) : 0;
      const double busbw = double(elems) * 4 * bus_factor(op, n) / median / 1e9;
      if (comm->rank() == 0) {
        std::printf("  %-14s %12lld %12.3f %12.2f", op.c_str(), (long long)(elems * 4),
                    median * 1e3, busbw);
        if (opt.busy) std::printf(" %12.3f %8.2fx", busy * 1e3, busy / median);
        std::printf(
            "\nRESULT impl=tessera op=%s ranks=%d bytes=%lld seconds=%.6g busbw_gbps=%.4g "
            "busy_seconds=%.6g ring_min_bytes=%lld\n",
            op.c_str(), n, (long long)(elems * 4), median, busbw, busy,
            (long long)opt.ring_min_bytes);
      }
    }
  }
  dist::mpi_shutdown();
  return 0;
}
