#include "autograd/engine.h"

#include <queue>
#include <unordered_map>

#include "core/backend.h"
#include "core/meta_device.h"
#include "core/profiler.h"
#include "kernels/cpu/elementwise.h"

namespace tessera {

namespace {
thread_local bool g_grad_enabled = true;
std::atomic<uint64_t> g_next_seq{0};
}  // namespace

bool grad_enabled() {
  return g_grad_enabled;
}
void set_grad_enabled(bool on) {
  g_grad_enabled = on;
}

Node::Node(std::string name, std::vector<Edge> inputs, BackwardFn fn)
    : name_(std::move(name)), inputs_(std::move(inputs)), fn_(std::move(fn)), seq_(g_next_seq++) {}

namespace autograd {

Tensor leaf_grad_buffer(const Tensor& t) {
  if (!t.defined() || !t.requires_grad() || !t.is_leaf() || !t.impl().grad) return Tensor();
  Tensor g(t.impl().grad);
  if (g.dtype() != DType::f32 || g.device() != t.device() || g.shape() != t.shape() ||
      !g.is_contiguous())
    return Tensor();
  return g;
}

bool needs_grad(std::initializer_list<Tensor> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Tensor record(Tensor out, const char* name, std::initializer_list<Tensor> inputs, BackwardFn fn) {
  if (!needs_grad(inputs)) return out;
  std::vector<Edge> edges;
  edges.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    Edge e;
    if (t.defined() && t.requires_grad()) {
      if (t.grad_fn())
        e.node = t.grad_fn();
      else
        e.leaf = t.impl_ptr();
    }
    edges.push_back(std::move(e));
  }
  out.impl().grad_fn = std::make_shared<Node>(name, std::move(edges), std::move(fn));
  out.impl().requires_grad = true;
  return out;
}

void add_into(const Tensor& dst, const Tensor& src, int64_t n) {
  TS_CHECK(dst.device() == src.device(), "backward: gradient {} on {} added to one on {}",
           src.desc(), src.device().str(), dst.device().str());
  if (!dst.device().is_cpu()) {
    backend_for(dst.device(), "backward").add_inplace(dst.data<float>(), src.data<float>(), n);
    return;
  }
  meta::kernel_runs(Device::cpu(), meta::table_cost::add_inplace(n));
  cpu::add_inplace(dst.data<float>(), src.data<float>(), n);
}

namespace {

// Whether nothing but `t` itself can see t's buffer: no other handle, view or saved copy.
bool exclusive(const Tensor& t) {
  return t.impl_ptr().use_count() == 1 && t.impl().storage.use_count() == 1 && !t.requires_grad();
}

// The gradient of a node: dst += src. The first contribution is adopted as it is, in its own
// dtype (a bf16 gradient made for a bf16 GEMM reaches it without a round trip through f32), even
// when another edge or a saved tensor shares it (the add op hands the same gradient to both of
// its inputs). A second one makes the sum f32: added in place only into an f32 buffer nobody else
// can see, otherwise into a fresh one (never a copy followed by an add). src is moved in, so its
// count is exact.
void accumulate_node(Tensor& dst, Tensor src) {
  src = src.contiguous();
  if (!dst.defined()) {
    dst = std::move(src);
    return;
  }
  if (src.dtype() != DType::f32) src = src.to(DType::f32);
  if (dst.dtype() != DType::f32) dst = dst.to(DType::f32);  // a fresh buffer: exclusive below
  TS_CHECK(dst.shape() == src.shape(), "backward: gradient {} does not match {}", src.desc(),
           dst.desc());
  const int64_t n = dst.numel();
  if (exclusive(dst)) {
    add_into(dst, src, n);
  } else if (exclusive(src)) {
    add_into(src, dst, n);
    dst = std::move(src);
  } else {
    Tensor sum;
    if (!dst.device().is_cpu()) {  // a copy then an add in place (no out-of-place f32 add)
      sum = dst.clone();
      add_into(sum, src, n);
    } else {
      sum = Tensor::empty(dst.shape());
      cpu::add<float>(dst.data<float>(), src.data<float>(), sum.data<float>(), n, n);
    }
    dst = std::move(sum);
  }
}

// A leaf's .grad += src (f32), creating it when empty. The leaf's gradient is visible to the
// user and lives on after backward, so it must never alias another tensor.
void accumulate_leaf(Tensor& dst, Tensor src) {
  if (src.dtype() != DType::f32) src = src.to(DType::f32);
  src = src.contiguous();
  if (!dst.defined()) {
    dst = exclusive(src) ? std::move(src) : src.clone();
    return;
  }
  TS_CHECK(dst.shape() == src.shape(), "backward: gradient {} does not match {}", src.desc(),
           dst.desc());
  add_into(dst, src, dst.numel());
}

struct BySequence {
  bool operator()(const Node* a, const Node* b) const { return a->sequence() < b->sequence(); }
};

}  // namespace

void backward(const Tensor& root, const Tensor& grad_root, LeafHooks hooks) {
  // Kernels called inside charge their own families; this is the engine's own time.
  prof::Scope prof_scope(prof::Family::autograd, "engine");
  TS_CHECK(root.requires_grad(), "backward: tensor {} does not require grad", root.desc());
  Tensor g = grad_root;
  if (!g.defined()) {
    TS_CHECK(root.numel() == 1, "backward: root {} is not a scalar; pass its gradient",
             root.desc());
    g = Tensor::ones(root.shape(), DType::f32, root.device());
  }
  TS_CHECK(g.shape() == root.shape(), "backward: gradient {} for root {}", g.desc(), root.desc());
  NoGradGuard no_grad;

  if (root.is_leaf()) {
    Tensor acc = root.grad();
    accumulate_leaf(acc, g);
    root.impl().grad = acc.impl_ptr();
    if (hooks == LeafHooks::fire)
      for (auto& h : root.impl().grad_ready_hooks) h(acc);
    return;
  }

  // Pass 1: count, for every node and leaf reachable from root, how many edges lead into it.
  std::unordered_map<Node*, int> pending;
  std::unordered_map<TensorImpl*, int> leaf_pending;
  std::vector<Node*> stack{root.grad_fn().get()};
  pending[root.grad_fn().get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    TS_CHECK(!n->released(),
             "backward: the graph through '{}' was already used by an earlier backward", n->name());
    for (const Edge& e : n->inputs()) {
      if (e.node) {
        auto [it, fresh] = pending.try_emplace(e.node.get(), 0);
        it->second++;
        if (fresh) stack.push_back(e.node.get());
      } else if (e.leaf) {
        leaf_pending[e.leaf.get()]++;
      }
    }
  }

  // Pass 2: run nodes newest-first once all their consumers have contributed.
  std::unordered_map<Node*, Tensor> grads;
  grads[root.grad_fn().get()] = g;
  std::priority_queue<Node*, std::vector<Node*>, BySequence> ready;
  ready.push(root.grad_fn().get());
  std::vector<std::shared_ptr<Node>> keep_alive{root.grad_fn()};
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    Tensor gout = std::move(grads[n]);
    grads.erase(n);
    std::vector<Tensor> gin =
        gout.defined() ? n->apply(gout) : std::vector<Tensor>(n->inputs().size());
    gout = Tensor();  // drop our handle: the accumulation below counts who else holds a buffer
    TS_ASSERT(gin.size() == n->inputs().size());
    for (size_t i = 0; i < gin.size(); ++i) {
      const Edge& e = n->inputs()[i];
      if (e.node) {
        keep_alive.push_back(e.node);
        if (gin[i].defined()) accumulate_node(grads[e.node.get()], std::move(gin[i]));
        if (--pending[e.node.get()] == 0) {
          ready.push(e.node.get());  // even with no gradient: its inputs' counts must drop
        }
      } else if (e.leaf) {
        TensorImpl* leaf = e.leaf.get();
        if (gin[i].defined()) {
          Tensor acc(leaf->grad);
          accumulate_leaf(acc, std::move(gin[i]));
          leaf->grad = acc.impl_ptr();
        }
        if (--leaf_pending[leaf] == 0 && leaf->grad && hooks == LeafHooks::fire) {
          Tensor acc(leaf->grad);
          for (auto& h : leaf->grad_ready_hooks) h(acc);
        }
      }
    }
    n->release();
  }
}

}  // namespace autograd
}  // namespace tessera
