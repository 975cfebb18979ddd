// Pipeline schedules: each rank's compute order, then the transfers placed around it (see
// pipeline_schedule.h). The simulator is pipeline_simulator.cpp.
#include "dist/pipeline_schedule.h"

#include <algorithm>
#include <functional>
#include <optional>

#include "core/error.h"

namespace tessera::dist::pipeline {

std::string schedule_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::gpipe:
      return "gpipe";
    case ScheduleKind::one_f_one_b:
      return "1f1b";
    case ScheduleKind::interleaved_1f1b:
      return "interleaved_1f1b";
  }
  return "unknown";
}

std::string op_name(Op op) {
  switch (op) {
    case Op::forward:
      return "F";
    case Op::backward:
      return "B";
    case Op::send_activation:
      return "send activation";
    case Op::recv_activation:
      return "recv activation";
    case Op::send_gradient:
      return "send gradient";
    case Op::recv_gradient:
      return "recv gradient";
  }
  return "?";
}

bool is_transfer(Op op) {
  return op != Op::forward && op != Op::backward;
}

bool is_send(Op op) {
  return op == Op::send_activation || op == Op::send_gradient;
}

std::string Action::str() const {
  if (!is_transfer(op)) return fmt::format("{}(micro {}, stage {})", op_name(op), micro, stage);
  return fmt::format("{} (micro {}, stage {}) {} rank {}", op_name(op), micro, stage,
                     is_send(op) ? "to" : "from", peer);
}

namespace {

// A compute action, or two that run back to back with no transfer between them.
using Unit = std::vector<Action>;

// Rank r's compute in the 1F1B shape: `warm` forwards, then forward k + warm and backward k
// alternately, then the backwards left. fwd(k) / bwd(k) name the k-th forward / backward. With
// `pair_steady`, each steady forward and backward form one unit (see with_transfers).
std::vector<Unit> one_f_one_b_shape(int total, int warm, bool pair_steady,
                                    const std::function<Action(int)>& fwd,
                                    const std::function<Action(int)>& bwd) {
  std::vector<Unit> out;
  for (int k = 0; k < warm; ++k) out.push_back({fwd(k)});
  for (int k = 0; k + warm < total; ++k) {
    if (pair_steady) {
      out.push_back({fwd(k + warm), bwd(k)});
    } else {
      out.push_back({fwd(k + warm)});
      out.push_back({bwd(k)});
    }
  }
  for (int k = std::max(0, total - warm); k < total; ++k) out.push_back({bwd(k)});
  return out;
}

struct Shape {
  int p, m, v, r;
  Action forward(int micro, int chunk) const { return {Op::forward, micro, chunk * p + r, -1}; }
  Action backward(int micro, int chunk) const { return {Op::backward, micro, chunk * p + r, -1}; }
};

std::vector<Unit> gpipe_order(const Shape& s) {
  std::vector<Unit> out;
  for (int i = 0; i < s.m; ++i) out.push_back({s.forward(i, 0)});
  for (int i = 0; i < s.m; ++i) out.push_back({s.backward(i, 0)});
  return out;
}

// Megatron-LM's forward_backward_pipelining_without_interleaving: a transfer batch after every
// compute (send_forward_recv_backward after a steady forward, send_backward_recv_forward after
// a backward).
std::vector<Unit> one_f_one_b_order(const Shape& s) {
  // A rank needs p - 1 - r forwards in flight before the first gradient can come back to it.
  return one_f_one_b_shape(
      s.m, std::min(s.p - 1 - s.r, s.m), /*pair_steady=*/false,
      [&](int k) { return s.forward(k, 0); }, [&](int k) { return s.backward(k, 0); });
}

// Megatron-LM's interleaved order. The k-th forward takes micro-batch groups of p through every
// chunk in turn: (group * p + k % p, chunk (k % (p v)) / p); the k-th backward takes the same
// micro-batch through the chunks in reverse. The warm-up covers the first v - 1 chunks' groups
// plus the 2 (p - 1 - r) forwards a gradient needs to come back round the ring to this rank.
// Steady forward-backward pairs share one batch after them, which also receives both inputs of
// the next pair: with the stages in a ring, a batch after each compute would leave two ranks
// each sending the other what it will only receive after its own pending send (a deadlock).
std::vector<Unit> interleaved_order(const Shape& s) {
  const int per_group = s.p * s.v, total = s.m * s.v;
  auto micro = [&](int k) { return k / per_group * s.p + k % s.p; };
  auto chunk = [&](int k) { return k % per_group / s.p; };
  const int warm = std::min((s.p - 1 - s.r) * 2 + (s.v - 1) * s.p, total);
  return one_f_one_b_shape(
      total, warm, /*pair_steady=*/true, [&](int k) { return s.forward(micro(k), chunk(k)); },
      [&](int k) { return s.backward(micro(k), s.v - 1 - chunk(k)); });
}

// The transfer compute action `a` needs to receive first, if its input comes from another rank.
std::optional<Action> input_of(const Action& a, int p, int stages) {
  if (p == 1) return std::nullopt;  // every stage on this rank: inputs stay local
  if (a.op == Op::forward && a.stage > 0)
    return Action{Op::recv_activation, a.micro, a.stage - 1, (a.stage - 1) % p};
  if (a.op == Op::backward && a.stage + 1 < stages)
    return Action{Op::recv_gradient, a.micro, a.stage + 1, (a.stage + 1) % p};
  return std::nullopt;
}

// The transfer that hands compute action `a`'s result on, if its consumer is on another rank.
std::optional<Action> output_of(const Action& a, int p, int stages) {
  if (p == 1) return std::nullopt;
  if (a.op == Op::forward && a.stage + 1 < stages)
    return Action{Op::send_activation, a.micro, a.stage, (a.stage + 1) % p};
  if (a.op == Op::backward && a.stage > 0)
    return Action{Op::send_gradient, a.micro, a.stage, (a.stage - 1) % p};
  return std::nullopt;
}

// Compute units with one batch between each two: the previous unit's sends, then the next
// unit's recvs (Megatron's send_forward_recv_backward and the like, generalised).
std::vector<Step> with_transfers(const std::vector<Unit>& units, int p, int stages) {
  std::vector<Step> steps;
  Step batch;
  for (const Unit& unit : units) {
    for (const Action& a : unit)
      if (auto in = input_of(a, p, stages)) batch.push_back(*in);
    if (!batch.empty()) steps.push_back(std::move(batch));
    batch.clear();
    for (const Action& a : unit) {
      steps.push_back({a});
      if (auto out = output_of(a, p, stages)) batch.push_back(*out);
    }
  }
  if (!batch.empty()) steps.push_back(std::move(batch));
  return steps;
}

void check_arguments(ScheduleKind kind, int p, int m, int v) {
  const std::string name = schedule_name(kind);
  TS_CHECK(p >= 1 && m >= 1 && v >= 1,
           "pipeline schedule {}: p = {} stages, m = {} micro-batches, v = {} virtual stages: "
           "each must be >= 1",
           name, p, m, v);
  TS_CHECK(kind != ScheduleKind::gpipe || v == 1,
           "pipeline schedule gpipe: v = {} virtual stages per rank; GPipe runs one stage per "
           "rank (v = 1): use interleaved_1f1b for v > 1",
           v);
  TS_CHECK(kind != ScheduleKind::one_f_one_b || v == 1,
           "pipeline schedule 1f1b: v = {} virtual stages per rank; 1F1B runs one stage per rank "
           "(v = 1): use interleaved_1f1b for v > 1",
           v);
  TS_CHECK(kind != ScheduleKind::interleaved_1f1b || v == 1 || m % p == 0,
           "pipeline schedule interleaved_1f1b: m = {} micro-batches is not a multiple of p = {} "
           "stages (micro-batches go through each chunk in groups of p): use a multiple of {}, "
           "such as {}",
           m, p, p, (m + p - 1) / p * p);
}

}  // namespace

Schedule make_schedule(ScheduleKind kind, int p, int m, int v) {
  check_arguments(kind, p, m, v);
  Schedule s{kind, p, m, v, {}};
  for (int r = 0; r < p; ++r) {
    const Shape shape{p, m, v, r};
    std::vector<Unit> compute;
    if (kind == ScheduleKind::gpipe) {
      compute = gpipe_order(shape);
    } else if (kind == ScheduleKind::one_f_one_b || v == 1) {
      compute = one_f_one_b_order(shape);
    } else {
      compute = interleaved_order(shape);
    }
    s.ranks.push_back(with_transfers(compute, p, s.stages()));
  }
  return s;
}

}  // namespace tessera::dist::pipeline
