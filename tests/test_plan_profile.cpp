// The local calibration: a real step on this CPU timed kernel by kernel (plan/meta_run.h), and
// what each kind of kernel takes fitted against its roofline (plan/kernel_fit.h). No timing is
// asserted here (timing belongs in bench/plan_vs_measured.sh); what is asserted is what the
// fits are made of and how they are looked up.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "plan/calibrate.h"
#include "plan/cost_model.h"
#include "plan/kernel_fit.h"
#include "plan/meta_run.h"
#include "plan_test_config.h"

using namespace tessera;
using plan::KernelFit;
using plan::KernelSample;
using plan::KernelTimes;

TEST(PlanKernelFit, AnAffineRelationIsRecoveredExactly) {
  std::vector<double> x, t;
  for (double r : {1e-6, 4e-6, 3e-5, 2e-4, 1e-3}) {
    x.push_back(r);
    t.push_back(5e-6 + 1.5 * r);
  }
  const KernelFit f = plan::fit_affine(x, t);
  EXPECT_NEAR(f.overhead, 5e-6, 1e-12);
  EXPECT_NEAR(f.scale, 1.5, 1e-9);
  EXPECT_EQ(f.samples, 5);
  EXPECT_NEAR(f.seconds(1.0), 1.5 + 5e-6, 1e-9);
}

TEST(PlanKernelFit, OverheadAndScaleStayNonNegative) {
  // Times below a line through the origin: the unconstrained overhead would be negative.
  const KernelFit through_origin = plan::fit_affine({1e-4, 2e-4, 4e-4}, {0.5e-4, 1.6e-4, 3.9e-4});
  EXPECT_EQ(through_origin.overhead, 0);
  EXPECT_GT(through_origin.scale, 0.8);
  // Times falling as the roofline grows (noise on equal work): no negative scale, all overhead.
  const KernelFit flat = plan::fit_affine({1e-6, 2e-6, 3e-6}, {9e-6, 8e-6, 7e-6});
  EXPECT_EQ(flat.scale, 0);
  EXPECT_GT(flat.overhead, 7e-6);
  EXPECT_LT(flat.overhead, 9e-6);
  // A zero roofline throughout (a fill of nothing): the overhead is the times' harmonic mean.
  const KernelFit none = plan::fit_affine({0, 0}, {1e-6, 3e-6});
  EXPECT_NEAR(none.overhead, 1.5e-6, 1e-15);
}

TEST(PlanKernelFit, KernelsAreFoundByNameAndDtypeThenNameThenClass) {
  std::vector<KernelSample> s;
  auto add = [&](const char* name, DType t, meta::KernelClass c, double overhead, double scale) {
    for (double r : {1e-4, 1e-3, 1e-2}) s.push_back({name, t, c, r, overhead + scale * r});
  };
  add("linear_fwd", DType::f32, meta::KernelClass::gemm, 10e-6, 1.2);
  add("linear_fwd", DType::bf16, meta::KernelClass::gemm, 20e-6, 2.0);
  add("layer_norm_fwd", DType::f32, meta::KernelClass::other, 3e-6, 1.8);
  const KernelTimes times = KernelTimes::fit(s);

  meta::KernelCost k;
  k.name = "linear_fwd";
  k.cls = meta::KernelClass::gemm;
  k.dtype = DType::bf16;
  ASSERT_NE(times.find(k), nullptr);
  EXPECT_NEAR(times.find(k)->scale, 2.0, 1e-9);
  EXPECT_NEAR(times.find(k)->overhead, 20e-6, 1e-12);
  k.dtype = DType::f16;  // no f16 samples: the name's fit over both dtypes
  EXPECT_EQ(times.find(k), &times.fits().at("linear_fwd"));
  k.name = "conv2d_fwd";  // never run: its class's
  EXPECT_EQ(times.find(k), &times.fits().at("class gemm"));
  k.cls = meta::KernelClass::attention;  // a class never run: nothing
  EXPECT_EQ(times.find(k), nullptr);
}

TEST(PlanKernelFit, KernelsRunOnlySmallTakeTheirClassScale) {
  std::vector<KernelSample> s;
  for (double r : {1e-4, 1e-3, 1e-2})
    s.push_back({"add", DType::f32, meta::KernelClass::other, r, 1.5 * r});
  // A scalar fill, timed at a few microseconds: its own "scale" would be noise times a million.
  s.push_back({"fill", DType::f32, meta::KernelClass::other, 1e-9, 4e-6});
  s.push_back({"fill", DType::f32, meta::KernelClass::other, 2e-9, 3e-6});
  const KernelTimes times = KernelTimes::fit(s);
  const KernelFit& fill = times.fits().at("fill/f32");
  EXPECT_DOUBLE_EQ(fill.scale, times.fits().at("class other").scale);
  EXPECT_GT(fill.overhead, 2e-6);
  EXPECT_LT(fill.overhead, 5e-6);
  // A large fill in a plan costs about its class's scale times its roofline, not seconds.
  EXPECT_LT(fill.seconds(1e-3), 2e-3);
}

TEST(PlanProfile, ATimedCpuStepAccountsForItsWholeTime) {
  const train::Config cfg = tessera::testing::tiny_config("gpt");
  const plan::TimedStep step = plan::run_on_this_cpu(cfg, 3);
  ASSERT_GT(step.kernels.size(), 20u);
  double sum = step.before_first_kernel;
  std::set<std::string> names;
  for (const auto& k : step.kernels) {
    EXPECT_GE(k.seconds, 0) << k.cost.name;
    sum += k.seconds;
    names.insert(k.cost.name);
  }
  EXPECT_NEAR(sum, step.seconds, 1e-9 * double(step.kernels.size()));
  EXPECT_GT(step.seconds, 0);
  // The optimizer, the gradient norm and the gradients' zeroing are kernels of their own on
  // the CPU too (recorded through meta::table_cost), not time hidden in the last backward op.
  for (const char* n : {"adamw", "sum_squares", "fill"}) EXPECT_TRUE(names.count(n)) << n;
}

// Every kernel a plan of this machine prices has a fit measured under its own name: the CPU run
// the calibration times and the meta run the plan records name their kernels alike, for every
// op family of both decoder kinds, in f32 and bf16.
TEST(PlanProfile, EveryKernelOfAPlanHasItsOwnMeasuredFit) {
  const plan::DeviceSpec& d = plan::local_device();
  ASSERT_NE(d.measured_kernels, nullptr);
  for (const char* kind : {"gpt", "llama"}) {
    for (const char* precision : {"\"f32\"", "\"bf16\""}) {
      const train::Config cfg = tessera::testing::tiny_config(
          kind, {fmt::format("train.precision={}", precision), "train.micro_batches=1"});
      for (const meta::Event& e :
           plan::run_rank_on_meta(cfg, 0, 1, meta::AllocatorModel::host).step) {
        // h2d: the batch's upload, which a CPU run does not make (priced by its class's fit).
        if (e.kind != meta::EventKind::kernel || e.kernel.name == std::string_view("h2d")) continue;
        EXPECT_TRUE(d.measured_kernels->fits().count(e.kernel.name))
            << kind << " " << precision << ": no fit for " << e.kernel.name;
      }
    }
  }
}

TEST(PlanProfile, AnUntracedThreadRecordsNothing) {
  meta::Trace trace;
  const meta::KernelCost k = meta::memory_bound_cost("add", 4, 48);
  {
    meta::TraceScope scope(trace);
    std::thread other([&] {
      meta::UntracedThread untraced;
      EXPECT_EQ(meta::active_trace(), nullptr);
      meta::kernel_runs(Device::cpu(), k);
    });
    other.join();
    meta::kernel_runs(Device::cpu(), k);
  }
  EXPECT_EQ(trace.size(), 1u);
}

// Calibrating for two ranks times the runs beside a stand-in for the other rank (training,
// untraced): the fits cover the same kernels as one rank's.
TEST(PlanProfile, ACalibrationForTwoRanksFitsTheSameKernels) {
  plan::CalibrationOptions two;
  two.seconds_per_measurement = 0.01;
  two.ranks = 2;
  const plan::DeviceSpec d = plan::calibrate_local(two);
  ASSERT_NE(d.measured_kernels, nullptr);
  for (const char* name : {"linear_fwd", "attention_bwd", "layer_norm_fwd", "rms_norm_fwd",
                           "swiglu_bwd", "adamw", "cast"})
    EXPECT_TRUE(d.measured_kernels->fits().count(name)) << name;
}

namespace {

void print_by_name(const plan::TimedStep& step, const plan::DeviceSpec& d) {
  struct Sum {
    int n = 0;
    double measured = 0, predicted = 0;
  };
  std::map<std::string, Sum> by;
  double measured = 0, predicted = 0;
  for (const auto& k : step.kernels) {
    Sum& s = by[k.cost.name];
    ++s.n;
    s.measured += k.seconds;
    s.predicted += plan::kernel_seconds(d, k.cost);
    measured += k.seconds;
    predicted += plan::kernel_seconds(d, k.cost);
  }
  fmt::print("{:32} {:>5} {:>13} {:>13} {:>6}\n", "kernel", "calls", "measured", "predicted",
             "ratio");
  for (auto& [name, s] : by)
    fmt::print("{:32} {:5} {:10.3f} ms {:10.3f} ms {:6.2f}\n", name, s.n, s.measured * 1e3,
               s.predicted * 1e3, s.measured / s.predicted);
  fmt::print("kernels {:.1f} ms, predicted {:.1f} ms; before the first {:.2f} ms; step {:.1f} ms\n",
             measured * 1e3, predicted * 1e3, step.before_first_kernel * 1e3, step.seconds * 1e3);
}

}  // namespace

// A developer's view of the calibration: TESSERA_PROFILE_CONFIG=path.toml
// [TESSERA_PROFILE_OVERRIDES="key=value ..."] [TESSERA_PROFILE_FITS=1] runs the config on this
// CPU and prints, per kernel name, what it took against what the calibrated cost model says
// (and the fits). Run with --gtest_also_run_disabled_tests --gtest_filter='*PrintByKernelName'.
TEST(PlanProfile, DISABLED_PrintByKernelName) {
  const char* path = std::getenv("TESSERA_PROFILE_CONFIG");
  std::vector<std::string> overrides;
  if (const char* o = std::getenv("TESSERA_PROFILE_OVERRIDES")) {
    std::istringstream words(o);
    for (std::string w; words >> w;) overrides.push_back(w);
  }
  const train::Config cfg =
      path ? train::load_config(path, overrides) : tessera::testing::tiny_config("gpt", overrides);
  const plan::DeviceSpec& d = plan::local_device();
  if (std::getenv("TESSERA_PROFILE_FITS") && d.measured_kernels)
    for (const auto& [key, f] : d.measured_kernels->fits())
      fmt::print("fit {:32} {:9.2f} us + {:6.3f} x roofline ({} calls)\n", key, f.overhead * 1e6,
                 f.scale, f.samples);
  print_by_name(plan::run_on_this_cpu(cfg, 3), d);
}
