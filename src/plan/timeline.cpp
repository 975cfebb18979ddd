#include "plan/timeline.h"

#include <algorithm>
#include <deque>
#include <tuple>
#include <unordered_map>

#include "core/error.h"
#include "plan/cost_model.h"

namespace tessera::plan {
namespace {

using GroupKey = std::tuple<int, int, int>;  // size, first, stride

GroupKey key_of(const meta::RankGroup& g) {
  return {g.size, g.first, g.stride};
}

bool in_group(const meta::RankGroup& g, int rank) {
  if (rank < g.first || g.stride <= 0) return rank == g.first;
  const int offset = rank - g.first;
  return offset % g.stride == 0 && offset / g.stride < g.size;
}

// The work ids' state on one rank: operations not yet finished, and when the last ended.
struct Work {
  int pending = 0;
  double finish = 0;
  double peer_wait = 0;   // how long its start waited for other simulated ranks to issue it
  bool transfer = false;  // a send / recv: a stall on it is bubble
};

struct IssuedCollective {
  const meta::CollectiveEvent* e;
  double issue;
  GroupKey group;
  int64_t seq;  // the k-th collective this rank issued on the group
};

struct RankState {
  const RankTrace* trace;
  size_t next = 0;
  double t = 0;          // the compute stream's clock
  double comm_free = 0;  // when the communication stream is next free
  double end = 0;        // when the rank's last work ends
  std::deque<IssuedCollective> comm_queue;
  // Without ClusterSpec::collectives_overlap_compute: collectives issued, held until the compute
  // stream waits on pending work (or runs out of events), when they join comm_queue.
  std::vector<IssuedCollective> held;
  std::map<GroupKey, int64_t> group_seq;
  std::unordered_map<int64_t, Work> works;
  RankTimes times;
};

struct Transfer {
  int index;  // into the rank states
  const meta::CollectiveEvent* e;
  double issue;
};

class Simulator {
 public:
  Simulator(const ClusterSpec& c, const std::vector<RankTrace>& ranks) : c_(c) {
    states_.reserve(ranks.size());
    for (const RankTrace& r : ranks) {
      TS_CHECK(index_.count(r.rank) == 0, "plan::simulate: rank {} is given twice", r.rank);
      index_[r.rank] = int(states_.size());
      RankState s;
      s.trace = &r;
      s.times.rank = r.rank;
      states_.push_back(std::move(s));
    }
  }

  Timeline run() {
    for (bool progress = true; progress;) {
      progress = false;
      for (size_t i = 0; i < states_.size(); ++i) progress |= advance(int(i));
      progress |= start_collectives();
    }
    check_finished();
    Timeline out;
    for (RankState& s : states_) {
      s.times.step_seconds = std::max({s.t, s.comm_free, s.end});
      out.step_seconds = std::max(out.step_seconds, s.times.step_seconds);
      out.compute_seconds += s.times.compute_seconds;
      out.exposed_comm_seconds += s.times.exposed_comm_seconds;
      out.bubble_seconds += s.times.bubble_seconds;
      out.comm_seconds += s.times.comm_seconds;
      out.ranks.push_back(s.times);
    }
    if (!states_.empty()) {
      const double n = double(states_.size());
      out.compute_seconds /= n;
      out.exposed_comm_seconds /= n;
      out.bubble_seconds /= n;
      out.comm_seconds /= n;
    }
    out.kernels = std::move(kernels_);
    out.collectives = std::move(collectives_);
    return out;
  }

 private:
  void complete(RankState& s, int64_t work, double finish, double peer_wait) {
    Work& w = s.works[work];
    --w.pending;
    w.finish = std::max(w.finish, finish);
    w.peer_wait = std::max(w.peer_wait, peer_wait);
    s.end = std::max(s.end, finish);
  }

  void count_collective(RankState& s, const meta::CollectiveEvent& e, double seconds) {
    s.times.comm_seconds += seconds;
    Total& t = collectives_[e.op];
    t.count += 1;
    t.seconds += seconds;
    t.bytes += e.bytes;
  }

  // Runs rank i's events until one must wait; whether any ran.
  bool advance(int i) {
    RankState& s = states_[size_t(i)];
    const std::vector<meta::Event>& events = s.trace->events;
    const size_t start = s.next;
    for (; s.next < events.size(); ++s.next) {
      const meta::Event& ev = events[s.next];
      switch (ev.kind) {
        case meta::EventKind::kernel: {
          const double dt = kernel_seconds(c_.device, ev.kernel);
          s.t += dt;
          s.times.compute_seconds += dt;
          Total& t = kernels_[ev.kernel.name];
          t.count += 1;
          t.seconds += dt;
          t.flops += ev.kernel.flops;
          t.bytes += ev.kernel.bytes;
          break;
        }
        case meta::EventKind::collective:
          issue(i, s, ev.collective);
          break;
        case meta::EventKind::wait: {
          auto it = s.works.find(ev.work);
          if (it == s.works.end()) break;  // not issued in this step
          if (it->second.pending > 0 || it->second.finish > s.t) release_held(s);
          if (it->second.pending > 0) return s.next > start;
          // A stall on a transfer is bubble. Of a stall on a collective, the part its start
          // waited for peers that issued it later (another stage still computing) is bubble
          // too; the rest is exposed communication.
          const Work& w = it->second;
          const double stall = std::max(0.0, w.finish - s.t);
          const double on_peers = w.transfer ? stall : std::min(stall, w.peer_wait);
          s.times.bubble_seconds += on_peers;
          s.times.exposed_comm_seconds += stall - on_peers;
          s.t += stall;
          break;
        }
        case meta::EventKind::mark:
          break;
      }
    }
    release_held(s);  // the step's end waits for everything
    return s.next > start;
  }

  // The held collectives start moving now, at the compute stream's clock.
  void release_held(RankState& s) {
    for (IssuedCollective& h : s.held) {
      h.issue = std::max(h.issue, s.t);
      s.comm_queue.push_back(h);
    }
    s.held.clear();
  }

  void issue(int i, RankState& s, const meta::CollectiveEvent& e) {
    Work& w = s.works[e.work];
    ++w.pending;
    if (!is_point_to_point(e.op)) {
      const GroupKey g = key_of(e.group);
      const IssuedCollective c{&e, s.t, g, s.group_seq[g]++};
      if (c_.collectives_overlap_compute) {
        s.comm_queue.push_back(c);
      } else {
        s.held.push_back(c);
      }
      return;
    }
    w.transfer = true;
    auto peer = index_.find(e.peer);
    if (peer == index_.end()) {  // the peer is not simulated: it is ready when we are
      const double dt = collective_seconds(c_, e, s.trace->rank);
      complete(s, e.work, s.t + dt, 0);
      count_collective(s, e, dt);
      return;
    }
    const bool send = std::string_view(e.op) == "send";
    const std::pair<int, int> link = send ? std::pair{i, peer->second} : std::pair{peer->second, i};
    (send ? sends_ : recvs_)[link].push_back({i, &e, s.t});
    match(link);
  }

  // Pairs the oldest unmatched send and recv of a (sender, receiver) link.
  void match(const std::pair<int, int>& link) {
    auto& sq = sends_[link];
    auto& rq = recvs_[link];
    while (!sq.empty() && !rq.empty()) {
      const Transfer snd = sq.front(), rcv = rq.front();
      sq.pop_front();
      rq.pop_front();
      RankState& a = states_[size_t(snd.index)];
      RankState& b = states_[size_t(rcv.index)];
      const double dt = collective_seconds(c_, *snd.e, a.trace->rank);
      const double finish = std::max(snd.issue, rcv.issue) + dt;
      complete(a, snd.e->work, finish, std::max(0.0, rcv.issue - snd.issue));
      complete(b, rcv.e->work, finish, std::max(0.0, snd.issue - rcv.issue));
      count_collective(a, *snd.e, dt);
      count_collective(b, *rcv.e, dt);
    }
  }

  // The simulated ranks in a group, as indices into states_.
  const std::vector<int>& members(const meta::CollectiveEvent& e) {
    auto [it, inserted] = members_.try_emplace(key_of(e.group));
    if (inserted) {
      for (const auto& [rank, index] : index_) {
        if (in_group(e.group, rank)) it->second.push_back(index);
      }
    }
    return it->second;
  }

  // Starts every collective at the head of all its simulated members' queues; whether any.
  bool start_collectives() {
    bool any = false;
    for (bool started = true; started;) {
      started = false;
      for (RankState& s : states_) {
        if (s.comm_queue.empty()) continue;
        const IssuedCollective head = s.comm_queue.front();
        const std::vector<int>& group = members(*head.e);
        bool ready = true;
        double start = std::max(head.issue, s.comm_free);
        for (int m : group) {
          const RankState& o = states_[size_t(m)];
          if (&o == &s) continue;
          if (o.comm_queue.empty() || o.comm_queue.front().group != head.group ||
              o.comm_queue.front().seq != head.seq) {
            ready = false;
            break;
          }
          start = std::max({start, o.comm_queue.front().issue, o.comm_free});
        }
        if (!ready) continue;
        const double dt = collective_seconds(c_, *head.e, s.trace->rank);
        auto run = [&](RankState& o) {
          const IssuedCollective mine = o.comm_queue.front();
          o.comm_queue.pop_front();
          const double ready = std::max(mine.issue, o.comm_free);
          o.comm_free = start + dt;
          complete(o, mine.e->work, start + dt, start - ready);
          count_collective(o, *mine.e, dt);
        };
        if (group.empty() ||
            std::find(group.begin(), group.end(), &s - states_.data()) == group.end()) {
          run(s);  // a group this rank is not listed in: it runs alone
        }
        for (int m : group) run(states_[size_t(m)]);
        started = any = true;
      }
    }
    return any;
  }

  void check_finished() const {
    std::string stuck;
    for (const RankState& s : states_) {
      const auto& events = s.trace->events;
      if (s.next < events.size()) {
        stuck += fmt::format("\n  rank {} waits on work {} (event {} of {})", s.trace->rank,
                             events[s.next].work, s.next, events.size());
      }
      if (!s.comm_queue.empty()) {
        const auto& e = *s.comm_queue.front().e;
        stuck += fmt::format(
            "\n  rank {}: {} on group (size {}, first {}, stride {}) never met its members",
            s.trace->rank, e.op, e.group.size, e.group.first, e.group.stride);
      }
    }
    for (const auto* q : {&sends_, &recvs_}) {
      for (const auto& [link, transfers] : *q) {
        for (const Transfer& t : transfers) {
          stuck +=
              fmt::format("\n  rank {}: {} of {} bytes with rank {} never matched",
                          states_[size_t(t.index)].trace->rank, t.e->op, t.e->bytes, t.e->peer);
        }
      }
    }
    TS_CHECK(stuck.empty(), "plan::simulate: the traces cannot finish:{}", stuck);
  }

  const ClusterSpec& c_;
  std::vector<RankState> states_;
  std::map<int, int> index_;  // job rank -> states_ index
  std::map<std::pair<int, int>, std::deque<Transfer>> sends_, recvs_;
  std::map<GroupKey, std::vector<int>> members_;
  std::map<std::string, Total> kernels_, collectives_;
};

}  // namespace

Timeline simulate(const ClusterSpec& c, const std::vector<RankTrace>& ranks) {
  return Simulator(c, ranks).run();
}

}  // namespace tessera::plan
