#include "train/run_report.h"

#include <fmt/format.h>

#include "train/metrics.h"
#include "train/trainer.h"

namespace tessera::train {

nlohmann::json step_record(const StepResult& r, const StepRecordParts& parts) {
  nlohmann::json rec = {{"step", r.step},      {"loss", r.loss},
                        {"lr", r.lr},          {"grad_norm", r.grad_norm},
                        {"ms_per_step", r.ms}, {parts.rate_key, r.items_per_s}};
  if (r.tflops > 0) rec["tflops_per_device"] = r.tflops;
  if (r.pipeline_transfer >= 0) rec["pipeline_transfer_fraction"] = r.pipeline_transfer;
  if (r.tp_bytes >= 0) rec["tp_bytes"] = r.tp_bytes;
  if (r.pp_bytes >= 0) rec["pp_bytes"] = r.pp_bytes;
  if (r.tflops > 0) {
    const MfuPeak& peak = parts.mfu_peak;
    if (peak.tflops > 0) {
      rec["mfu"] = r.tflops / peak.tflops;
      rec["mfu_peak_tflops"] = peak.tflops;
    }
    rec["mfu_peak"] = peak.source;  // what the peak is, or why there is no MFU
  }
  rec["rank_compute_ms_p50"] = parts.times->p50_ms;
  rec["rank_compute_ms_p95"] = parts.times->p95_ms;
  rec["peak_tensor_bytes"] = parts.peak_tensor_bytes;
  if (parts.host_waits >= 0) rec["host_waits"] = parts.host_waits;
  rec["samples_hash"] = digest_hex(parts.samples->step);
  if (parts.samples->run) rec["samples_hash_run"] = digest_hex(*parts.samples->run);
  if (parts.fp16_scaler) {
    rec["loss_scale"] = parts.fp16_scaler->scale();
    rec["loss_scale_skipped"] = parts.fp16_scaler->skipped_steps();  // whole run, resumes too
  }
  return rec;
}

std::string slow_rank_warning(int rank, const RankTiming::Report& times, double slow_rank_factor) {
  const size_t r = size_t(rank);
  return fmt::format(
      "warning: rank {} is slow: its median compute time per step, {:.1f} ms, is {:.1f}x the "
      "other ranks' median ({:.1f} ms) on {} logged steps in a row (parallel.slow_rank_factor = "
      "{})",
      rank, times.p50_ms[r], times.p50_ms[r] / times.others_median_ms[r], times.others_median_ms[r],
      RankTiming::kPatience, slow_rank_factor);
}

std::string eval_text(const nlohmann::json& eval) {
  std::string text;
  for (auto& [k, v] : eval.items()) text += fmt::format(" {} {:.4f}", k, v.get<double>());
  return text;
}

namespace {

// ", MFU 41.2% of 989.5 TFLOP/s (H100 SXM5 80GB datasheet, bf16)", or ", no MFU (why)".
std::string mfu_text(double tflops, const MfuPeak& mfu_peak) {
  if (mfu_peak.tflops <= 0) return fmt::format(", no MFU ({})", mfu_peak.source);
  return fmt::format(", MFU {:.1f}% of {:.4g} TFLOP/s ({})", 100 * tflops / mfu_peak.tflops,
                     mfu_peak.tflops, mfu_peak.source);
}

}  // namespace

std::string done_message(const RunSummary& sum, const char* rate_unit, const MfuPeak& mfu_peak,
                         bool fp16, size_t peak_tensor_bytes) {
  std::string s = fmt::format("tessera: done: {} steps in {}, final loss {:.4f}, {} {}", sum.steps,
                              format_duration(sum.seconds), sum.final_loss,
                              format_si(sum.items_per_s), rate_unit);
  if (sum.tflops_per_device > 0) {
    s += fmt::format(", {:.3g} TFLOP/s per device", sum.tflops_per_device);
    s += mfu_text(sum.tflops_per_device, mfu_peak);
  }
  for (auto& [k, v] : sum.last_eval.items()) s += fmt::format(", {} {:.4f}", k, v.get<double>());
  if (sum.bad_steps) s += fmt::format(", {} steps skipped (non-finite)", sum.bad_steps);
  if (fp16)
    s += fmt::format(", loss scale {} ({} steps skipped for fp16 overflow)", sum.loss_scale,
                     sum.loss_scale_skipped - sum.bad_steps);
  s += fmt::format(", peak tensor memory {:.1f} MiB", double(peak_tensor_bytes) / (1 << 20));
  return s;
}

std::string communication_message(const dist::OverlapStats& overlap, const std::string& run_dir) {
  return fmt::format(
      "tessera: communication (rank 0, after step 1): {:.3f} s in flight, {:.1f}% hidden behind "
      "computation, {} of {} collectives started during backward; traces: {}/trace_rank*.json",
      overlap.comm_s, 100 * overlap.share(), overlap.started_in_backward, overlap.comm_spans,
      run_dir);
}

}  // namespace tessera::train
