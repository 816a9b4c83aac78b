// oneDNN convolution forward / backward-data / backward-weights on JAX's channels-last buffers.
#include "conv_primitives.h"
#include "runtime.h"

#include <omp.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"

namespace cnnlab_onednn {
namespace {

using dnnl::memory;
using Dims = memory::dims;

memory::data_type DnnlType(DType t) {
  return t == DType::kBF16 ? memory::data_type::bf16 : memory::data_type::f32;
}

// (N, *spatial, C) in JAX order -> oneDNN's logical (N, C, *spatial) in a channels-last tag.
memory::desc ActivationDesc(const std::vector<int64_t>& shape, DType t) {
  const size_t rank = shape.size();
  Dims dims = {shape[0], shape[rank - 1]};
  for (size_t i = 1; i + 1 < rank; ++i) dims.push_back(shape[i]);
  static const memory::format_tag kTags[] = {memory::format_tag::nwc, memory::format_tag::nhwc,
                                             memory::format_tag::ndhwc};
  return memory::desc(dims, DnnlType(t), kTags[rank - 3]);
}

// (*kernel, Cin/G, Cout) in JAX order -> oneDNN's (O, I, *k) or (G, O/G, I/G, *k) with the
// strides that address JAX's buffer directly (output channel o = g * O/G + oc).
memory::desc WeightsDesc(const Geometry& g, bool any) {
  const size_t nk = g.w.size() - 2;
  const int64_t ic = g.w[nk], oc = g.w[nk + 1], ocg = oc / g.groups;
  Dims dims, strides;
  if (g.groups > 1) {
    dims = {g.groups, ocg, ic};
    strides = {ocg, 1, oc};
  } else {
    dims = {oc, ic};
    strides = {1, oc};
  }
  for (size_t i = 0; i < nk; ++i) {
    int64_t stride = ic * oc;
    for (size_t j = i + 1; j < nk; ++j) stride *= g.w[j];
    dims.push_back(g.w[i]);
    strides.push_back(stride);
  }
  if (any) return memory::desc(dims, DnnlType(g.dtype), memory::format_tag::any);
  return memory::desc(dims, DnnlType(g.dtype), strides);
}

struct ConvParams {
  Dims strides, dilation, pad_lo, pad_hi;
};

ConvParams Params(const Geometry& g) {
  ConvParams p{Dims(g.strides.begin(), g.strides.end()), {},
               Dims(g.pad_lo.begin(), g.pad_lo.end()), Dims(g.pad_hi.begin(), g.pad_hi.end())};
  for (int64_t d : g.dilation) p.dilation.push_back(d - 1);  // oneDNN counts extra gaps
  return p;
}

// A created primitive plus what Run needs to bind JAX's buffers to it.
struct Entry {
  dnnl::primitive prim;
  memory::desc a_md, b_md, out_md;  // the JAX buffers' descriptors
  memory::desc weights_md;          // weights layout the primitive uses
  bool reorder_weights = false;
  dnnl::reorder weights_reorder;    // JAX -> primitive (fwd, bwd-data) or back (bwd-weights)
};

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g, bool any) {
  const ConvParams p = Params(g);
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      ActivationDesc(g.x, g.dtype), WeightsDesc(g, any), ActivationDesc(g.y, g.dtype),
      p.strides, p.dilation, p.pad_lo, p.pad_hi);
}

dnnl::convolution_backward_data::primitive_desc BackwardDataDesc(
    const Geometry& g, const dnnl::convolution_forward::primitive_desc& hint) {
  const ConvParams p = Params(g);
  return dnnl::convolution_backward_data::primitive_desc(
      Engine(), dnnl::algorithm::convolution_direct, ActivationDesc(g.x, g.dtype),
      WeightsDesc(g, g.weights_any), ActivationDesc(g.y, g.dtype), p.strides, p.dilation,
      p.pad_lo, p.pad_hi, hint);
}

dnnl::convolution_backward_weights::primitive_desc BackwardWeightsDesc(
    const Geometry& g, const dnnl::convolution_forward::primitive_desc& hint) {
  const ConvParams p = Params(g);
  return dnnl::convolution_backward_weights::primitive_desc(
      Engine(), dnnl::algorithm::convolution_direct, ActivationDesc(g.x, g.dtype),
      WeightsDesc(g, g.weights_any), ActivationDesc(g.y, g.dtype), p.strides, p.dilation,
      p.pad_lo, p.pad_hi, hint);
}

std::shared_ptr<Entry> Create(Pass pass, const Geometry& g) {
  auto e = std::make_shared<Entry>();
  const memory::desc x_md = ActivationDesc(g.x, g.dtype), y_md = ActivationDesc(g.y, g.dtype);
  const memory::desc w_user = WeightsDesc(g, false);
  const auto hint = ForwardDesc(g, g.weights_any);
  if (pass == Pass::kForward) {
    e->prim = dnnl::convolution_forward(hint);
    e->a_md = x_md, e->b_md = w_user, e->out_md = y_md, e->weights_md = hint.weights_desc();
  } else if (pass == Pass::kBackwardData) {
    const auto pd = BackwardDataDesc(g, hint);
    e->prim = dnnl::convolution_backward_data(pd);
    e->a_md = y_md, e->b_md = w_user, e->out_md = x_md, e->weights_md = pd.weights_desc();
  } else {
    const auto pd = BackwardWeightsDesc(g, hint);
    e->prim = dnnl::convolution_backward_weights(pd);
    e->a_md = x_md, e->b_md = y_md, e->out_md = w_user, e->weights_md = pd.diff_weights_desc();
  }
  e->reorder_weights = e->weights_md != w_user;
  if (e->reorder_weights) {
    e->weights_reorder = pass == Pass::kBackwardWeights
                             ? dnnl::reorder(dnnl::reorder::primitive_desc(
                                   Engine(), e->weights_md, Engine(), w_user))
                             : dnnl::reorder(dnnl::reorder::primitive_desc(
                                   Engine(), w_user, Engine(), e->weights_md));
  }
  CountCreated(1);
  return e;
}

std::shared_ptr<Entry> Lookup(Pass pass, const Geometry& g) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::shared_ptr<Entry>> cache;
  const std::string key = g.Key(pass);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto entry = Create(pass, g);
  cache.emplace(key, entry);
  return entry;
}

// Per-thread, 64-byte-aligned scratch for weights in oneDNN's preferred layout.
void* WeightsScratch(size_t bytes) {
  thread_local std::unique_ptr<void, decltype(&std::free)> buf(nullptr, &std::free);
  thread_local size_t capacity = 0;
  if (bytes > capacity) {
    const size_t rounded = (bytes + 63) / 64 * 64;
    buf.reset(std::aligned_alloc(64, rounded));
    if (!buf) throw std::runtime_error("out of memory for oneDNN weights scratch");
    capacity = rounded;
  }
  return buf.get();
}

// Weights are small: a parallel reorder costs more in OpenMP synchronisation than it saves
// (on a loaded machine each team waits for a time slice: 30 ms measured for 1,152 floats).
void Reorder(dnnl::reorder& r, dnnl::stream& stream, memory& from, memory& to,
             const Geometry& g) {
  constexpr size_t kParallelBytes = size_t{4} << 20;
  omp_set_num_threads(from.get_desc().get_size() < kParallelBytes ? 1 : g.threads);
  r.execute(stream, from, to);
  omp_set_num_threads(g.threads);
}

}  // namespace

int64_t Geometry::Flops() const {
  int64_t flops = 2 * y[0] * y[y.size() - 1] * x[x.size() - 1] / groups;
  for (size_t i = 1; i + 1 < y.size(); ++i) flops *= y[i] * w[i - 1];
  return flops;
}

std::string Geometry::Key(Pass pass) const {
  std::ostringstream s;
  s << static_cast<int>(pass) << '|' << static_cast<int>(dtype) << '|' << groups << '|'
    << threads << '|' << weights_any << '|' << device;
  for (const auto* v : {&x, &w, &y, &strides, &pad_lo, &pad_hi, &dilation}) {
    s << '|';
    for (int64_t d : *v) s << d << ',';
  }
  return s.str();
}

std::string Geometry::Check() const {
  const size_t rank = x.size();
  if (rank < 3 || rank > 5) return "rank must be 3, 4 or 5 (1-3 spatial dims)";
  const size_t nsp = rank - 2;
  if (w.size() != rank || y.size() != rank || strides.size() != nsp || pad_lo.size() != nsp ||
      pad_hi.size() != nsp || dilation.size() != nsp)
    return "inconsistent ranks between operands and attributes";
  if (groups < 1 || x[rank - 1] != w[nsp] * groups || w[nsp + 1] % groups != 0)
    return "channel counts do not match groups";
  if (y[0] != x[0] || y[rank - 1] != w[nsp + 1]) return "output batch/channels mismatch";
  for (size_t i = 0; i < nsp; ++i) {
    if (strides[i] < 1 || dilation[i] < 1 || pad_lo[i] < 0 || pad_hi[i] < 0)
      return "strides and dilation must be >= 1 and padding >= 0";
    const int64_t span = (w[i] - 1) * dilation[i] + 1;
    if ((x[i + 1] + pad_lo[i] + pad_hi[i] - span) / strides[i] + 1 != y[i + 1])
      return "output spatial size does not match the convolution";
  }
  return "";
}

void RunHere(Pass pass, const Geometry& g, const void* a, const void* b, void* out) {
  omp_set_num_threads(g.threads);  // this thread's OpenMP team size (creation and execution)
  const std::shared_ptr<Entry> e = Lookup(pass, g);
  dnnl::stream& stream = ThreadStream();
  memory a_mem(e->a_md, Engine(), const_cast<void*>(a));
  memory b_mem(e->b_md, Engine(), const_cast<void*>(b));
  memory out_mem(e->out_md, Engine(), out);
  if (pass == Pass::kBackwardWeights) {
    memory dw = out_mem;
    if (e->reorder_weights)
      dw = memory(e->weights_md, Engine(), WeightsScratch(e->weights_md.get_size()));
    e->prim.execute(stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_DIFF_DST, b_mem},
                             {DNNL_ARG_DIFF_WEIGHTS, dw}});
    if (e->reorder_weights) Reorder(e->weights_reorder, stream, dw, out_mem, g);
  } else {
    memory w = b_mem;
    if (e->reorder_weights) {
      w = memory(e->weights_md, Engine(), WeightsScratch(e->weights_md.get_size()));
      Reorder(e->weights_reorder, stream, b_mem, w, g);
    }
    if (pass == Pass::kForward)
      e->prim.execute(stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, w},
                               {DNNL_ARG_DST, out_mem}});
    else
      e->prim.execute(stream, {{DNNL_ARG_DIFF_DST, a_mem}, {DNNL_ARG_WEIGHTS, w},
                               {DNNL_ARG_DIFF_SRC, out_mem}});
  }
  stream.wait();
}

void Run(Pass pass, const Geometry& g, const void* a, const void* b, void* out) {
  RunOnDeviceWorker(g.device, [&] { RunHere(pass, g, a, b, out); });
}

bool Supports(DType dtype) {
  Geometry g;
  g.dtype = dtype;
  g.x = {1, 4, 4, 2};
  g.w = {3, 3, 2, 2};
  g.y = {1, 4, 4, 2};
  g.strides = g.dilation = {1, 1};
  g.pad_lo = g.pad_hi = {1, 1};
  g.weights_any = true;
  try {
    const auto hint = ForwardDesc(g, g.weights_any);
    BackwardDataDesc(g, hint);
    BackwardWeightsDesc(g, hint);
  } catch (const dnnl::error&) {
    return false;
  }
  return true;
}

}  // namespace cnnlab_onednn
