// The pipeline schedule simulator (declared in pipeline_schedule.h): every rank runs its steps
// on its own clock; a batch of transfers holds its rank until each transfer has met its
// partner, the transfer with the same sequence number on the same directed pair of ranks.
#include <algorithm>
#include <map>
#include <tuple>
#include <utility>

#include "core/error.h"
#include "dist/pipeline_schedule.h"

namespace tessera::dist::pipeline {
namespace {

// Where a transfer sits: rank, step, index in the step.
struct Slot {
  int rank, step, index;
};

// Facts about one (micro, stage) that dependencies are checked against.
struct UnitState {
  bool forward = false, backward = false;
  bool activation_arrived = false;  // this stage's output, at the rank of stage + 1
  bool gradient_arrived = false;    // the gradient of this stage's input, at stage - 1's rank
};

class Simulator {
 public:
  Simulator(const Schedule& s, const SimCosts& c) : s_(s), c_(c) {
    const auto p = size_t(s.p);
    pc_.assign(p, 0);
    clock_.assign(p, 0);
    post_time_.assign(p, -1);
    live_.assign(p, 0);
    result_.peak_live_activations.assign(p, 0);
    result_.busy.assign(p, 0);
    units_.assign(size_t(s.m) * size_t(s.stages()), UnitState{});
    number_transfers();
  }

  SimResult run() {
    try {
      for (bool moved = true; moved;) {
        moved = false;
        for (int r = 0; r < s_.p; ++r) moved |= advance(r);
        // A transfer met from one side may have completed the peer's batch.
        moved |= std::exchange(met_, false);
      }
      if (!finished()) fail("deadlock: {}", blocked_ranks());
      check_everything_ran();
      finish_result();
      result_.ok = true;
    } catch (const Error& e) {
      result_.ok = false;
      result_.error = e.what();
    }
    return result_;
  }

 private:
  const std::vector<Step>& steps(int r) const { return s_.ranks[size_t(r)]; }
  UnitState& unit(int micro, int stage) {
    TS_CHECK(micro >= 0 && micro < s_.m && stage >= 0 && stage < s_.stages(),
             "(micro {}, stage {}) outside m = {}, {} stages", micro, stage, s_.m, s_.stages());
    return units_[size_t(micro) * size_t(s_.stages()) + size_t(stage)];
  }

  // Sequence numbers: the k-th send from a to b meets the k-th recv on b from a.
  void number_transfers() {
    std::map<std::pair<int, int>, int> sent, received;  // (from, to) -> count so far
    for (int r = 0; r < s_.p; ++r) {
      seq_.emplace_back();
      done_.emplace_back();
      for (const Step& step : steps(r)) {
        std::vector<int> seqs;
        for (const Action& a : step) {
          if (!is_transfer(a.op)) {
            seqs.push_back(-1);
            continue;
          }
          TS_CHECK(a.peer >= 0 && a.peer < s_.p && a.peer != r, "rank {}: {}: peer out of range", r,
                   a.str());
          auto key = is_send(a.op) ? std::pair{r, a.peer} : std::pair{a.peer, r};
          seqs.push_back((is_send(a.op) ? sent : received)[key]++);
        }
        seq_.back().push_back(seqs);
        done_.back().push_back(std::vector<double>(step.size(), -1));
      }
    }
  }

  // Runs rank r as far as it can go; true if it moved.
  bool advance(int r) {
    bool moved = false;
    while (pc_[size_t(r)] < int(steps(r).size())) {
      const Step& step = steps(r)[size_t(pc_[size_t(r)])];
      TS_CHECK(!step.empty(), "rank {}: step {} is empty", r, pc_[size_t(r)]);
      if (!is_transfer(step[0].op)) {
        TS_CHECK(step.size() == 1, "rank {}: step {} mixes {} with other actions", r,
                 pc_[size_t(r)], step[0].str());
        compute(r, step[0]);
      } else if (!progress_batch(r)) {
        return moved;
      }
      ++pc_[size_t(r)];
      moved = true;
    }
    return moved;
  }

  void compute(int r, const Action& a) {
    UnitState& u = unit(a.micro, a.stage);
    TS_CHECK(a.stage % s_.p == r, "rank {}: {} belongs to rank {}", r, a.str(), a.stage % s_.p);
    double cost;
    if (a.op == Op::forward) {
      TS_CHECK(!u.forward, "rank {}: {} runs twice", r, a.str());
      TS_CHECK(a.stage == 0 || input_ready(a.micro, a.stage - 1, /*forward=*/true),
               "rank {}: {} runs before its input activation (stage {}) is here", r, a.str(),
               a.stage - 1);
      u.forward = true;
      const int live = ++live_[size_t(r)];
      result_.peak_live_activations[size_t(r)] =
          std::max(result_.peak_live_activations[size_t(r)], live);
      cost = c_.forward;
    } else {
      TS_CHECK(u.forward, "rank {}: {} runs before its forward", r, a.str());
      TS_CHECK(!u.backward, "rank {}: {} runs twice", r, a.str());
      TS_CHECK(a.stage + 1 == s_.stages() || input_ready(a.micro, a.stage + 1, /*forward=*/false),
               "rank {}: {} runs before its output's gradient (stage {}) is here", r, a.str(),
               a.stage + 1);
      u.backward = true;
      --live_[size_t(r)];
      cost = c_.backward;
    }
    clock_[size_t(r)] += cost;
    result_.busy[size_t(r)] += cost;
  }

  // Whether stage `from`'s result for `micro` is at the rank that consumes it: computed there
  // (same rank) or received.
  bool input_ready(int micro, int from, bool forward) {
    UnitState& u = unit(micro, from);
    const int consumer = (forward ? from + 1 : from - 1) % s_.p;
    if (from % s_.p == consumer) return forward ? u.forward : u.backward;
    return forward ? u.activation_arrived : u.gradient_arrived;
  }

  // Posts rank r's current batch (once) and meets what partners are posted; true when every
  // transfer of it is done (the rank's clock then moves to the last completion).
  bool progress_batch(int r) {
    const int pc = pc_[size_t(r)];
    const Step& step = steps(r)[size_t(pc)];
    if (post_time_[size_t(r)] < 0) post(r, step);
    bool all = true;
    for (size_t i = 0; i < step.size(); ++i) {
      if (done_[size_t(r)][size_t(pc)][i] < 0) meet(r, pc, int(i));
      all &= done_[size_t(r)][size_t(pc)][i] >= 0;
    }
    if (!all) return false;
    for (double t : done_[size_t(r)][size_t(pc)])
      clock_[size_t(r)] = std::max(clock_[size_t(r)], t);
    post_time_[size_t(r)] = -1;
    return true;
  }

  void post(int r, const Step& step) {
    post_time_[size_t(r)] = clock_[size_t(r)];
    for (const Action& a : step) {
      TS_CHECK(is_transfer(a.op), "rank {}: step {} mixes {} with transfers", r, pc_[size_t(r)],
               a.str());
      if (!is_send(a.op)) continue;
      UnitState& u = unit(a.micro, a.stage);
      TS_CHECK(a.op == Op::send_activation ? u.forward : u.backward,
               "rank {}: {} before the {} that computes it", r, a.str(),
               a.op == Op::send_activation ? "forward" : "backward");
    }
  }

  // Completes transfer i of rank r's step pc if its partner is posted now.
  void meet(int r, int pc, int i) {
    const Action& a = steps(r)[size_t(pc)][size_t(i)];
    const int q = a.peer;
    const int seq = seq_[size_t(r)][size_t(pc)][size_t(i)];
    if (post_time_[size_t(q)] < 0) return;  // the peer is computing or in another phase
    const int qpc = pc_[size_t(q)];
    const Step& theirs = steps(q)[size_t(qpc)];
    for (size_t j = 0; j < theirs.size(); ++j) {
      const Action& b = theirs[j];
      if (b.peer != r || is_send(b.op) == is_send(a.op) || seq_[size_t(q)][size_t(qpc)][j] != seq)
        continue;
      check_partners(r, a, q, b, seq);
      const double t = std::max(post_time_[size_t(r)], post_time_[size_t(q)]) + c_.transfer;
      done_[size_t(r)][size_t(pc)][size_t(i)] = t;
      done_[size_t(q)][size_t(qpc)][j] = t;
      const Action& recv = is_send(a.op) ? b : a;
      UnitState& u = unit(recv.micro, recv.stage);
      (recv.op == Op::recv_activation ? u.activation_arrived : u.gradient_arrived) = true;
      met_ = true;
      return;
    }
  }

  void check_partners(int r, const Action& a, int q, const Action& b, int seq) {
    const Action& send = is_send(a.op) ? a : b;
    const Action& recv = is_send(a.op) ? b : a;
    const bool same_kind = (send.op == Op::send_activation) == (recv.op == Op::recv_activation);
    TS_CHECK(same_kind && send.micro == recv.micro && send.stage == recv.stage,
             "message {} from rank {} to rank {} is {} but rank {} expects it to be {}", seq,
             is_send(a.op) ? r : q, is_send(a.op) ? q : r, send.str(), is_send(a.op) ? q : r,
             recv.str());
  }

  bool finished() const {
    for (int r = 0; r < s_.p; ++r)
      if (pc_[size_t(r)] < int(steps(r).size())) return false;
    return true;
  }

  std::string blocked_ranks() const {
    std::string out;
    for (int r = 0; r < s_.p; ++r) {
      const int pc = pc_[size_t(r)];
      if (pc >= int(steps(r).size())) continue;
      std::string waits;
      const Step& step = steps(r)[size_t(pc)];
      for (size_t i = 0; i < step.size(); ++i)
        if (done_[size_t(r)][size_t(pc)][i] < 0)
          waits += (waits.empty() ? "" : ", ") + step[i].str();
      out += fmt::format("{}rank {} waits in step {}: {}", out.empty() ? "" : "; ", r, pc, waits);
    }
    return out;
  }

  void check_everything_ran() {
    for (int i = 0; i < s_.m; ++i)
      for (int st = 0; st < s_.stages(); ++st) {
        const UnitState& u = unit(i, st);
        TS_CHECK(u.forward && u.backward, "(micro {}, stage {}) never ran its {}", i, st,
                 u.forward ? "backward" : "forward");
      }
  }

  void finish_result() {
    double busy = 0;
    for (int r = 0; r < s_.p; ++r) {
      result_.makespan = std::max(result_.makespan, clock_[size_t(r)]);
      busy += result_.busy[size_t(r)];
    }
    result_.bubble_fraction =
        result_.makespan > 0 ? 1 - busy / (double(s_.p) * result_.makespan) : 0;
  }

  const Schedule& s_;
  SimCosts c_;
  std::vector<int> pc_;            // per rank: the step it is in
  std::vector<double> clock_;      // per rank: time at which its current step started
  std::vector<double> post_time_;  // per rank: when its current batch was posted; -1: none
  std::vector<int> live_;          // per rank: forwards whose backward has not run
  std::vector<UnitState> units_;   // per (micro, stage)
  std::vector<std::vector<std::vector<int>>> seq_;      // [rank][step][i]: sequence number
  std::vector<std::vector<std::vector<double>>> done_;  // [rank][step][i]: completion or -1
  bool met_ = false;                                    // a transfer was met since the last sweep
  SimResult result_;
};

}  // namespace

SimResult simulate(const Schedule& s, const SimCosts& costs) {
  TS_CHECK(int(s.ranks.size()) == s.p, "simulate: {} rank lists for p = {}", s.ranks.size(), s.p);
  return Simulator(s, costs).run();
}

}  // namespace tessera::dist::pipeline
