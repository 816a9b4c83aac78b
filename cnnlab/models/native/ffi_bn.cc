// XLA FFI handlers for cnnlab's train-mode BatchNorm kernels (bn_kernels.h), float32.
//
// Forward:  (x, scale, bias, residual) -> (y, mean, var)
// Backward: (x, y, dy, scale, mean, var) -> (dx, d_scale, d_bias, d_residual)
// x / y / dy / dx / residual / d_residual: (N, *spatial, C); the per-channel operands: (C).
// Without a residual the Python side passes x in its place and receives an empty d_residual.
// Thread count: XLA's intra-op pool size capped by `max_threads`, one thread for small tensors;
// the kernels run on the device's worker thread, like the convolutions.
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <string>

#include "bn_kernels.h"
#include "runtime.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using cnnlab_onednn::BnShape;

namespace {

// Below this many elements a pass runs on one thread (~0.1 ms of memory traffic).
constexpr int64_t kParallelElements = 64 * 1024;

using F32 = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;

// The kernels' shape for x, or an error message in `bad`.
BnShape Shape(F32 x, float eps, bool relu, ffi::ThreadPool pool, int64_t max_threads,
              std::string& bad) {
  BnShape s;
  const auto dims = x.dimensions();
  if (dims.size() < 2) {
    bad = "x must have a batch and a channel axis";
    return s;
  }
  s.channels = dims[dims.size() - 1];
  s.rows = s.channels > 0 ? x.element_count() / s.channels : 0;
  s.eps = eps, s.relu = relu;
  int64_t threads = pool.num_threads();
  if (threads < 1) threads = 1;
  if (max_threads > 0 && threads > max_threads) threads = max_threads;
  if (x.element_count() < kParallelElements) threads = 1;
  s.threads = static_cast<int>(threads);
  return s;
}

bool PerChannel(const BnShape& s, std::initializer_list<const F32*> buffers) {
  for (const F32* b : buffers)
    if (b->element_count() != s.channels) return false;
  return true;
}

template <typename Fn>
ffi::Error Run(int32_t device, Fn fn) {
  try {
    cnnlab_onednn::RunOnDeviceWorker(device, fn);
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("cnnlab BatchNorm: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, int32_t device, F32 x, F32 scale, F32 bias,
                   F32 residual, F32Result y, F32Result mean, F32Result var, float eps,
                   bool relu, bool has_residual, int64_t max_threads) {
  std::string bad;
  const BnShape s = Shape(x, eps, relu, pool, max_threads, bad);
  if (bad.empty() && !PerChannel(s, {&scale, &bias}))
    bad = "scale and bias must have one value per channel";
  if (bad.empty() && residual.element_count() != x.element_count())
    bad = "the residual must have x's shape";
  if (!bad.empty()) return ffi::Error::InvalidArgument("cnnlab BatchNorm: " + bad);
  return Run(device, [&] {
    cnnlab_onednn::BnKernelForward(s, x.typed_data(), scale.typed_data(), bias.typed_data(),
                                   has_residual ? residual.typed_data() : nullptr,
                                   y->typed_data(), mean->typed_data(), var->typed_data());
  });
}

ffi::Error Backward(ffi::ThreadPool pool, int32_t device, F32 x, F32 y, F32 dy, F32 scale,
                    F32 mean, F32 var, F32Result dx, F32Result d_scale, F32Result d_bias,
                    F32Result d_residual, float eps, bool relu, bool has_residual,
                    int64_t max_threads) {
  std::string bad;
  const BnShape s = Shape(x, eps, relu, pool, max_threads, bad);
  if (bad.empty() && !PerChannel(s, {&scale, &mean, &var}))
    bad = "scale, mean and var must have one value per channel";
  if (bad.empty() && (y.element_count() != x.element_count() ||
                      dy.element_count() != x.element_count() ||
                      d_residual->element_count() != (has_residual ? x.element_count() : 0)))
    bad = "x, y, dy (and d_residual) must share a shape";
  if (!bad.empty()) return ffi::Error::InvalidArgument("cnnlab BatchNorm: " + bad);
  return Run(device, [&] {
    cnnlab_onednn::BnKernelBackward(s, x.typed_data(), y.typed_data(), dy.typed_data(),
                                    scale.typed_data(), mean.typed_data(), var.typed_data(),
                                    dx->typed_data(), d_scale->typed_data(),
                                    d_bias->typed_data(),
                                    has_residual ? d_residual->typed_data() : nullptr);
  });
}

}  // namespace

#define CNNLAB_EXPORT extern "C" __attribute__((visibility("default")))
CNNLAB_EXPORT XLA_FFI_Error* CnnlabBnFwd(XLA_FFI_CallFrame*);
CNNLAB_EXPORT XLA_FFI_Error* CnnlabBnBwd(XLA_FFI_CallFrame*);

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnlabBnFwd, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Ctx<ffi::DeviceOrdinal>()
                                  .Arg<F32>()  // x
                                  .Arg<F32>()  // scale
                                  .Arg<F32>()  // bias
                                  .Arg<F32>()  // residual
                                  .Ret<F32>()  // y
                                  .Ret<F32>()  // mean
                                  .Ret<F32>()  // var
                                  .Attr<float>("eps")
                                  .Attr<bool>("relu")
                                  .Attr<bool>("residual")
                                  .Attr<int64_t>("max_threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnlabBnBwd, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Ctx<ffi::DeviceOrdinal>()
                                  .Arg<F32>()  // x
                                  .Arg<F32>()  // y
                                  .Arg<F32>()  // dy
                                  .Arg<F32>()  // scale
                                  .Arg<F32>()  // mean
                                  .Arg<F32>()  // var
                                  .Ret<F32>()  // dx
                                  .Ret<F32>()  // d_scale
                                  .Ret<F32>()  // d_bias
                                  .Ret<F32>()  // d_residual
                                  .Attr<float>("eps")
                                  .Attr<bool>("relu")
                                  .Attr<bool>("residual")
                                  .Attr<int64_t>("max_threads"));
