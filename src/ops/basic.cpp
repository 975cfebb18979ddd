// Shape, type, element-wise and reduction ops.
#include "autograd/engine.h"
#include "kernels/cpu/cast.h"
#include "kernels/cpu/elementwise.h"
#include "ops/check.h"
#include "ops/cost.h"
#include "ops/cuda_scratch.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace tessera::ops {

Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined("reshape", "x", x);
  TS_CHECK(shape.numel() == x.numel(), "reshape: cannot reshape {} ({} elements) to {}", x.desc(),
           x.numel(), shape.str());
  Tensor y = x.contiguous().view(shape);
  Shape in = x.shape();
  return autograd::record(y, "reshape", {x}, [in](const Tensor& g) {
    return std::vector<Tensor>{g.contiguous().view(in)};
  });
}

Tensor transpose(const Tensor& x, int a, int b) {
  check_defined("transpose", "x", x);
  Tensor y = x.transpose_view(a, b).contiguous();
  if (y.same(x)) y = x.clone();  // a no-op transpose still returns a fresh tensor
  return autograd::record(y, "transpose", {x}, [a, b](const Tensor& g) {
    return std::vector<Tensor>{g.transpose_view(a, b).contiguous()};
  });
}

Tensor cast(const Tensor& x, DType dtype) {
  check_float("cast", "x", x);
  TS_CHECK(is_floating(dtype), "cast: target dtype {} is not a float type", dtype_name(dtype));
  Tensor y = x.dtype() == dtype ? x.clone() : x.to(dtype);
  DType from = x.dtype();
  return autograd::record(y, "cast", {x},
                          [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
}

namespace {

enum class Binary { add, mul };

// y = a (op) b, b repeating every nb elements of a; on the tensors' device. `op` names the
// kernel in the cost trace (a string literal).
template <class T>
void binary_kernel(Binary kind, Device dev, const char* op, const T* a, const T* b, T* y, int64_t n,
                   int64_t nb) {
  if (n == 0) return;
  const DType t = dtype_of<T>::value;  // a and y read / written whole, b once
  const double bytes = cost::bytes_of(2 * n + nb, t);
  if (!meta::kernel_runs(dev, cost::in_dtype(meta::memory_bound_cost(op, n, bytes), t))) return;
  if (is_cuda(dev)) {
    if (kind == Binary::add)
      device_kernels<T>(op, dev).add(a, b, y, n, nb);
    else
      device_kernels<T>(op, dev).mul(a, b, y, n, nb);
  } else if (kind == Binary::add) {
    cpu::add<T>(a, b, y, n, nb);
  } else {
    cpu::mul<T>(a, b, y, n, nb);
  }
}

Tensor binary(Binary kind, const char* op, const Tensor& a0, const Tensor& b0) {
  check_float(op, "a", a0);
  check_float(op, "b", b0);
  const Device dev = common_device(op, {{"a", a0}, {"b", b0}});
  TS_CHECK(a0.dtype() == b0.dtype(), "{}: dtypes differ: {} and {}", op, a0.desc(), b0.desc());
  check_suffix_shape(op, a0, b0);
  Tensor a = a0.contiguous(), b = b0.contiguous();
  Tensor y = Tensor::empty(a.shape(), a.dtype(), dev);
  const int64_t n = a.numel(), nb = b.numel();
  dispatch_float(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    binary_kernel<T>(kind, dev, op, a.data<T>(), b.data<T>(), y.data<T>(), n, nb);
  });
  const bool broadcast = nb != n;
  // Reduces a gradient shaped like a to b's shape (sum over the broadcast leading dims).
  auto reduce_to_b = [broadcast, n, nb, dev, bshape = b.shape(), bt = b.dtype()](const Tensor& g) {
    if (!broadcast) return g;
    Tensor r = Tensor::zeros(bshape, DType::f32, dev);
    Tensor gc = g.contiguous();
    dispatch_float(gc.dtype(), "reduce", [&](auto tag) {
      using T = decltype(tag);
      // g read, r (f32 [nb]) read and written
      const double bytes = cost::io_bytes({gc}) + 2 * cost::bytes_of(nb, DType::f32);
      meta::scratch(dev, {cuda_scratch::sum_rows(n / nb, nb)});
      if (meta::kernel_runs(dev, meta::memory_bound_cost("broadcast_grad_sum", n, bytes))) {
        if (is_cuda(dev))
          device_kernels<T>("add_backward", dev)
              .sum_rows_acc(gc.data<T>(), r.data<float>(), n / nb, nb);
        else
          cpu::sum_rows_acc<T>(gc.data<T>(), r.data<float>(), n / nb, nb);
      }
    });
    return r.to(bt);
  };
  if (kind == Binary::add) {
    return autograd::record(y, op, {a0, b0}, [reduce_to_b](const Tensor& g) {
      return std::vector<Tensor>{g, reduce_to_b(g)};
    });
  }
  bool need_a = a0.requires_grad(), need_b = b0.requires_grad();
  return autograd::record(y, op, {a0, b0}, [=](const Tensor& g0) {
    Tensor g = g0.contiguous();
    Tensor ga, gb;
    if (need_a) {  // dL/da = g * b (b broadcast)
      ga = Tensor::empty(g.shape(), g.dtype(), dev);
      dispatch_float(g.dtype(), "mul_backward", [&](auto tag) {
        using T = decltype(tag);
        Tensor bb = b.to(g.dtype());
        binary_kernel<T>(Binary::mul, dev, "mul_backward", g.data<T>(), bb.data<T>(), ga.data<T>(),
                         n, nb);
      });
    }
    if (need_b) {  // dL/db = sum over broadcast dims of g * a
      Tensor ga2 = Tensor::empty(g.shape(), g.dtype(), dev);
      dispatch_float(g.dtype(), "mul_backward", [&](auto tag) {
        using T = decltype(tag);
        Tensor aa = a.to(g.dtype());
        binary_kernel<T>(Binary::mul, dev, "mul_backward", g.data<T>(), aa.data<T>(), ga2.data<T>(),
                         n, n);
      });
      gb = reduce_to_b(ga2);
    }
    return std::vector<Tensor>{ga, gb};
  });
}

// y = s * x on x's device.
Tensor scaled(const char* op, const Tensor& x, float s) {
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (meta::kernel_runs(x.device(), cost::pass(op, x.numel(), {x, y}))) {
      if (is_cuda(x.device()))
        device_kernels<T>(op, x.device()).scale(x.data<T>(), y.data<T>(), s, x.numel());
      else
        cpu::scale<T>(x.data<T>(), y.data<T>(), s, x.numel());
    }
  });
  return y;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  return binary(Binary::add, "add", a, b);
}
Tensor mul(const Tensor& a, const Tensor& b) {
  return binary(Binary::mul, "mul", a, b);
}

Tensor scale(const Tensor& x0, float s) {
  check_float("scale", "x", x0);
  Tensor y = scaled("scale", x0.contiguous(), s);
  return autograd::record(y, "scale", {x0}, [s](const Tensor& g) {
    return std::vector<Tensor>{scaled("scale_backward", g.contiguous(), s)};
  });
}

namespace {
Tensor reduce_all(const Tensor& x0, const char* op, bool average) {
  check_float(op, "x", x0);
  const Device dev = x0.device();
  Tensor x = x0.to(DType::f32).contiguous();
  const int64_t n = x.numel();
  TS_CHECK(!average || n > 0, "{}: mean of an empty tensor {}", op, x0.desc());
  double s = 0;  // on the meta device: nothing summed, 0
  meta::scratch(dev, {cuda_scratch::sum(n)});
  if (meta::kernel_runs(dev, cost::pass(average ? "mean" : "sum", n, {x}))) {
    if (is_cuda(dev))  // f64 in a fixed order like the CPU's; returns to the host
      s = device_kernels(op, dev).sum(x.data<float>(), n);
    else
      s = cpu::sum(x.data<float>(), n);
  }
  const float k = average ? 1.f / float(n) : 1.f;
  Tensor y = Tensor::full(Shape{}, s * k, DType::f32, dev);
  Shape in = x0.shape();
  DType t = x0.dtype();
  return autograd::record(y, op, {x0}, [in, t, k, dev](const Tensor& g) {
    const double gk = dev.is_meta() ? 0.0 : double(g.item()) * k;  // meta: no value to read
    return std::vector<Tensor>{Tensor::full(in, gk, t, dev)};
  });
}
}  // namespace

Tensor sum(const Tensor& x) {
  return reduce_all(x, "sum", false);
}
Tensor mean(const Tensor& x) {
  return reduce_all(x, "mean", true);
}

}  // namespace tessera::ops
