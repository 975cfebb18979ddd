#include "autograd/checkpoint.h"

#include <unordered_set>
#include <utility>

#include "autograd/engine.h"
#include "ops/autocast.h"

namespace tessera::autograd {

namespace {

// Grad recording on (the recompute runs inside a backward closure, where it is off).
class GradOnGuard {
 public:
  GradOnGuard() : prev_(grad_enabled()) { set_grad_enabled(true); }
  ~GradOnGuard() { set_grad_enabled(prev_); }
  GradOnGuard(const GradOnGuard&) = delete;
  GradOnGuard& operator=(const GradOnGuard&) = delete;

 private:
  bool prev_;
};

struct GeneratorState {
  uint64_t seed = 0, offset = 0;
};

std::vector<GeneratorState> states_of(const std::vector<Generator*>& gens) {
  std::vector<GeneratorState> out;
  out.reserve(gens.size());
  for (const Generator* g : gens) out.push_back({g->seed(), g->offset()});
  return out;
}

// Sets the generators to the states they had before the forward; puts back, on leaving, the
// states they have now (the backward must not change what later forwards draw).
class GeneratorReplay {
 public:
  GeneratorReplay(const std::vector<Generator*>& gens, const std::vector<GeneratorState>& then)
      : gens_(gens), now_(states_of(gens)) {
    for (size_t i = 0; i < gens_.size(); ++i) gens_[i]->set_state(then[i].seed, then[i].offset);
  }
  ~GeneratorReplay() {
    for (size_t i = 0; i < gens_.size(); ++i) gens_[i]->set_state(now_[i].seed, now_[i].offset);
  }
  GeneratorReplay(const GeneratorReplay&) = delete;
  GeneratorReplay& operator=(const GeneratorReplay&) = delete;

 private:
  const std::vector<Generator*>& gens_;
  std::vector<GeneratorState> now_;
};

// Everything the recompute needs, captured by the node's closure.
struct Saved {
  const char* name;
  CheckpointFn fn;
  Tensor x;  // a detached alias of the input: the only activation kept
  bool x_requires_grad;
  std::vector<Tensor> params;
  std::vector<Generator*> gens;
  std::vector<GeneratorState> gens_before, gens_after;
  DType autocast;
  Shape y_shape;
  DType y_dtype;
};

// The recomputed graph must be fn's own: nodes recorded after `probe` and leaves that are the
// input or listed parameters. A node from before would run a second time (the outer backward
// also runs it) and a leaf not listed would get its hooks fired before its gradient is final.
void check_private_graph(const Saved& s, const Tensor& y, const Node& probe, const Tensor& xd) {
  std::unordered_set<const TensorImpl*> leaves{&xd.impl()};
  for (const Tensor& p : s.params) leaves.insert(&p.impl());
  std::unordered_set<const Node*> seen{y.grad_fn().get()};
  std::vector<const Node*> stack{y.grad_fn().get()};
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    TS_CHECK(n->sequence() > probe.sequence(),
             "{}: the function reads a tensor computed outside it (through op '{}'); pass it as "
             "the checkpoint's input, or compute it inside",
             s.name, n->name());
    for (const Edge& e : n->inputs()) {
      if (e.node && seen.insert(e.node.get()).second) stack.push_back(e.node.get());
      if (e.leaf)
        TS_CHECK(leaves.count(e.leaf.get()),
                 "{}: op '{}' reads a tensor {} that requires grad but is neither the input nor "
                 "one of the {} listed parameters; list it",
                 s.name, n->name(), Tensor(e.leaf).desc(), s.params.size());
    }
  }
}

std::vector<Tensor> recompute_backward(const Saved& s, const Tensor& grad_out) {
  std::vector<Tensor> grads(1 + s.params.size());  // only x's is returned: see checkpoint.h
  Tensor xd = s.x.detach();
  if (s.x_requires_grad) xd.set_requires_grad(true);
  Tensor y;
  const Node probe("checkpoint_probe", {}, nullptr);  // nodes recorded from here on are fn's
  {
    GeneratorReplay replay(s.gens, s.gens_before);
    GradOnGuard grad_on;
    AutocastGuard autocast(s.autocast);
    y = s.fn(xd);
    const std::vector<GeneratorState> after = states_of(s.gens);
    for (size_t i = 0; i < after.size(); ++i)
      TS_CHECK(after[i].seed == s.gens_after[i].seed && after[i].offset == s.gens_after[i].offset,
               "{}: the recompute drew from generator #{} up to offset {}, the forward up to {}: "
               "the function must draw the same numbers (same training mode, same shapes)",
               s.name, i, after[i].offset, s.gens_after[i].offset);
  }
  TS_CHECK(y.defined() && y.shape() == s.y_shape && y.dtype() == s.y_dtype,
           "{}: the recompute returned {}, the forward {}{}", s.name,
           y.defined() ? y.desc() : std::string("nothing"), dtype_name(s.y_dtype), s.y_shape.str());
  if (!y.requires_grad()) return grads;
  if (y.grad_fn()) check_private_graph(s, y, probe, xd);
  backward(y, grad_out, LeafHooks::skip);
  if (s.x_requires_grad && xd.impl().grad) grads[0] = Tensor(xd.impl().grad);
  return grads;
}

}  // namespace

Tensor checkpoint(const char* name, CheckpointFn fn, const Tensor& x,
                  const std::vector<Tensor>& params, const std::vector<Generator*>& generators) {
  TS_CHECK(x.defined(), "{}: the input is undefined", name);
  bool any = x.requires_grad();
  for (const Tensor& p : params) {
    TS_CHECK(p.defined(), "{}: a listed parameter is undefined", name);
    TS_CHECK(!p.requires_grad() || p.is_leaf(),
             "{}: listed parameter {} was computed by op '{}'; only leaves can be parameters "
             "(pass a computed tensor as the input)",
             name, p.desc(), p.grad_fn()->name());
    any = any || p.requires_grad();
  }
  if (!grad_enabled() || !any) return fn(x);
  for (const Generator* g : generators) TS_CHECK(g, "{}: a listed generator is null", name);

  auto s = std::make_shared<Saved>();
  s->name = name;
  s->x = x.detach();
  s->x_requires_grad = x.requires_grad();
  s->params = params;
  s->gens = generators;
  s->gens_before = states_of(generators);
  s->autocast = autocast_dtype();
  Tensor y;
  {
    NoGradGuard no_grad;  // nothing inside is recorded, so nothing inside is kept
    y = fn(x);
  }
  TS_CHECK(y.defined(), "{}: the function returned an undefined tensor", name);
  s->gens_after = states_of(generators);
  s->y_shape = y.shape();
  s->y_dtype = y.dtype();
  if (!is_floating(y.dtype())) return y;
  // A fresh handle: fn may have returned x itself or a view sharing its TensorImpl.
  Tensor out = y.detach();

  std::vector<Edge> edges;
  edges.reserve(1 + params.size());
  auto edge_to = [](const Tensor& t) {
    Edge e;
    if (t.requires_grad()) {
      if (t.grad_fn())
        e.node = t.grad_fn();
      else
        e.leaf = t.impl_ptr();
    }
    return e;
  };
  edges.push_back(edge_to(x));
  for (const Tensor& p : params) edges.push_back(edge_to(p));
  s->fn = std::move(fn);
  out.impl().grad_fn = std::make_shared<Node>(
      name, std::move(edges), [s](const Tensor& g) { return recompute_backward(*s, g); });
  out.impl().requires_grad = true;
  return out;
}

}  // namespace tessera::autograd
