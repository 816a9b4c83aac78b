// XLA FFI handlers (custom-call targets) for cnnlab's oneDNN convolution (ffi_bn.cc: BatchNorm).
//
// Three targets share one signature: two operands, one result, and the convolution's
// attributes. Thread count: XLA's intra-op pool size, capped by `max_threads` (> 0), which the
// Python side sets to the CPUs this process may use divided by the local CPU devices.
#include <exception>
#include <string>
#include <vector>

#include "conv_primitives.h"
#include "runtime.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using cnnlab_onednn::DType;
using cnnlab_onednn::Geometry;
using cnnlab_onednn::Pass;

namespace {

// Below this much work (~0.1 ms on one core) a convolution runs on one thread: an OpenMP
// team's synchronisation would cost more, and far more when other processes share the cores.
constexpr int64_t kParallelFlops = 10'000'000;

std::vector<int64_t> ToVector(ffi::Span<const int64_t> s) { return {s.begin(), s.end()}; }

ffi::Error Convolve(Pass pass, ffi::ThreadPool pool, int32_t device, ffi::AnyBuffer a,
                    ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                    ffi::Span<const int64_t> strides, ffi::Span<const int64_t> pad_lo,
                    ffi::Span<const int64_t> pad_hi, ffi::Span<const int64_t> dilation,
                    int64_t groups, int64_t max_threads, bool weights_any) {
  const ffi::DataType t = a.element_type();
  if (b.element_type() != t || out->element_type() != t ||
      (t != ffi::DataType::F32 && t != ffi::DataType::BF16))
    return ffi::Error::InvalidArgument("cnnlab oneDNN conv: operands must all be f32 or bf16");
  // Map the pass's operands back to (x, w, y) shapes.
  const ffi::AnyBuffer::Dimensions o = out->dimensions();
  std::vector<int64_t> a_dims = ToVector(a.dimensions()), b_dims = ToVector(b.dimensions()),
                       o_dims(o.begin(), o.end());
  Geometry g;
  g.dtype = t == ffi::DataType::BF16 ? DType::kBF16 : DType::kF32;
  if (pass == Pass::kForward) g.x = a_dims, g.w = b_dims, g.y = o_dims;
  if (pass == Pass::kBackwardData) g.y = a_dims, g.w = b_dims, g.x = o_dims;
  if (pass == Pass::kBackwardWeights) g.x = a_dims, g.y = b_dims, g.w = o_dims;
  g.strides = ToVector(strides), g.pad_lo = ToVector(pad_lo), g.pad_hi = ToVector(pad_hi);
  g.dilation = ToVector(dilation), g.groups = groups, g.weights_any = weights_any;
  g.device = device;
  const std::string bad = g.Check();
  if (!bad.empty()) return ffi::Error::InvalidArgument("cnnlab oneDNN conv: " + bad);
  int64_t threads = pool.num_threads();
  if (threads < 1) threads = 1;
  if (max_threads > 0 && threads > max_threads) threads = max_threads;
  if (g.Flops() < kParallelFlops) threads = 1;
  g.threads = static_cast<int>(threads);
  try {
    cnnlab_onednn::Run(pass, g, a.untyped_data(), b.untyped_data(), out->untyped_data());
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("cnnlab oneDNN conv: ") + e.what() +
                                " (dnnl status " + std::to_string(e.status) + ", pass " +
                                std::to_string(static_cast<int>(pass)) + ", threads " +
                                std::to_string(g.threads) + ")");
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("cnnlab oneDNN conv: ") + e.what());
  }
  return ffi::Error::Success();
}

template <Pass kPass>
ffi::Error Handler(ffi::ThreadPool pool, int32_t device, ffi::AnyBuffer a,
                   ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> pad_lo,
                   ffi::Span<const int64_t> pad_hi, ffi::Span<const int64_t> dilation,
                   int64_t groups, int64_t max_threads, bool weights_any) {
  return Convolve(kPass, pool, device, a, b, out, strides, pad_lo, pad_hi, dilation, groups,
                  max_threads, weights_any);
}

auto Binding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Ctx<ffi::DeviceOrdinal>()
      .Arg<ffi::AnyBuffer>()
      .Arg<ffi::AnyBuffer>()
      .Ret<ffi::AnyBuffer>()
      .Attr<ffi::Span<const int64_t>>("strides")
      .Attr<ffi::Span<const int64_t>>("pad_lo")
      .Attr<ffi::Span<const int64_t>>("pad_hi")
      .Attr<ffi::Span<const int64_t>>("dilation")
      .Attr<int64_t>("groups")
      .Attr<int64_t>("max_threads")
      .Attr<bool>("weights_any");
}

}  // namespace

// Built with -fvisibility=hidden: only these entry points are exported.
#define CNNLAB_EXPORT extern "C" __attribute__((visibility("default")))
CNNLAB_EXPORT XLA_FFI_Error* CnnlabOnednnConvFwd(XLA_FFI_CallFrame*);
CNNLAB_EXPORT XLA_FFI_Error* CnnlabOnednnConvBwdData(XLA_FFI_CallFrame*);
CNNLAB_EXPORT XLA_FFI_Error* CnnlabOnednnConvBwdWeights(XLA_FFI_CallFrame*);
CNNLAB_EXPORT int64_t cnnlab_onednn_primitives_created();
CNNLAB_EXPORT int cnnlab_onednn_supports_bf16();

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnlabOnednnConvFwd, Handler<Pass::kForward>, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnlabOnednnConvBwdData, Handler<Pass::kBackwardData>, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnlabOnednnConvBwdWeights, Handler<Pass::kBackwardWeights>,
                              Binding());

int64_t cnnlab_onednn_primitives_created() {
  return cnnlab_onednn::PrimitivesCreated();
}

int cnnlab_onednn_supports_bf16() { return cnnlab_onednn::Supports(DType::kBF16) ? 1 : 0; }
