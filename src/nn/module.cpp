#include "nn/module.h"

#include <memory>
#include <unordered_map>

namespace tessera::nn {

bool Module::has_entry(const std::string& name) const {
  for (const Entry& e : entries_)
    if (e.name == name) return true;
  return false;
}

Tensor& Module::register_parameter(const std::string& name, Tensor& t) {
  TS_CHECK(!name.empty() && name.find('.') == std::string::npos,
           "Module::register_parameter: name '{}' must be non-empty and without dots", name);
  TS_CHECK(!has_entry(name), "Module::register_parameter: '{}' is already registered", name);
  TS_CHECK(t.defined() && t.dtype() == DType::f32,
           "Module::register_parameter: '{}' is {}, expected an f32 tensor", name, t.desc());
  TS_CHECK(t.is_leaf(), "Module::register_parameter: '{}' is the output of an op, expected a leaf",
           name);
  t.set_requires_grad(true);
  t.set_name(name);
  entries_.push_back({name, &t, nullptr});
  return t;
}

void Module::register_module(const std::string& name, Module& child) {
  TS_CHECK(!name.empty(), "Module::register_module: empty name");
  TS_CHECK(!has_entry(name), "Module::register_module: '{}' is already registered", name);
  TS_CHECK(&child != this, "Module::register_module: '{}' is the module itself", name);
  child.prefix_names(name + ".");
  child.train(training_);
  entries_.push_back({name, nullptr, &child});
}

void Module::unregister(const std::string& name) {
  TS_CHECK(has_entry(name), "Module::unregister: '{}' is not registered", name);
  std::erase_if(entries_, [&](const Entry& e) { return e.name == name; });
}

void Module::prefix_names(const std::string& prefix) {
  for (Entry& e : entries_) {
    if (e.param)
      e.param->set_name(prefix + e.param->name());
    else
      e.child->prefix_names(prefix);
  }
}

void Module::collect(const std::string& prefix, NamedTensors* out) const {
  for (const Entry& e : entries_) {
    if (e.param)
      out->emplace_back(prefix + e.name, *e.param);
    else
      e.child->collect(prefix + e.name + ".", out);
  }
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", &out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const Tensor& t : parameters()) n += t.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (Entry& e : entries_)
    if (e.child) e.child->train(on);
}

void Module::zero_grad() {
  for (Tensor t : parameters()) t.zero_grad();
}

void Module::to(Device device) {
  // Parameters sharing one storage keep sharing it: each storage is copied once.
  std::unordered_map<const Storage*, std::shared_ptr<Storage>> moved;
  for (Tensor p : parameters()) {
    TensorImpl& impl = p.impl();
    if (impl.storage->device == device) continue;
    TS_CHECK(p.is_contiguous(), "Module::to({}): parameter '{}' ({}) is not contiguous",
             device.str(), p.name(), p.desc());
    const Storage* old = impl.storage.get();
    auto it = moved.find(old);
    if (it == moved.end()) {
      // The whole storage (a parameter may be a view at an offset into a shared buffer).
      const int64_t elems = int64_t(old->nbytes / dtype_size(p.dtype()));
      auto whole = std::make_shared<TensorImpl>();
      whole->storage = impl.storage;
      whole->shape = Shape{elems};
      whole->strides = contiguous_strides(whole->shape);
      whole->dtype = p.dtype();
      it = moved.emplace(old, Tensor(whole).to(device).impl().storage).first;
    }
    impl.storage = it->second;
    if (impl.grad) impl.grad = Tensor(impl.grad).to(device).impl_ptr();
  }
}

}  // namespace tessera::nn
