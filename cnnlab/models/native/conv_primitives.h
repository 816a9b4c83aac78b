// oneDNN convolution primitives for channels-last tensors, cached by geometry.
//
// Activations are (N, *spatial, C) and weights (*kernel, Cin / groups, Cout) exactly as JAX
// stores them; oneDNN reads and writes those layouts in place (no copies). Weights may instead
// be handed to oneDNN in the layout it prefers ("any"), with a cached reorder per call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cnnlab_onednn {

enum class DType { kF32, kBF16 };
enum class Pass { kForward, kBackwardData, kBackwardWeights };

// Everything that determines a primitive: one cache entry per distinct Geometry.
struct Geometry {
  DType dtype = DType::kF32;
  std::vector<int64_t> x;       // (N, *spatial, Cin)
  std::vector<int64_t> w;       // (*kernel, Cin / groups, Cout)
  std::vector<int64_t> y;       // (N, *spatial_out, Cout)
  std::vector<int64_t> strides, pad_lo, pad_hi, dilation;  // one per spatial dim
  int64_t groups = 1;
  int threads = 1;              // OpenMP team size the primitive is built and run with
  bool weights_any = false;     // let oneDNN pick the weights layout (+ reorder)
  int device = 0;               // XLA device ordinal: each device has its own worker thread

  std::string Key(Pass pass) const;
  int64_t Flops() const;        // multiply-adds x 2 of the forward pass
  // Empty when the geometry is consistent; otherwise a one-line reason.
  std::string Check() const;
};

// Runs one pass. Pointers are the JAX buffers in the layouts above:
//   kForward:         a = x,  b = w,  out = y
//   kBackwardData:    a = dy, b = w,  out = dx
//   kBackwardWeights: a = x,  b = dy, out = dw
// Throws std::exception (dnnl::error or std::runtime_error) on failure.
void Run(Pass pass, const Geometry& g, const void* a, const void* b, void* out);

// Whether this CPU's oneDNN has all three convolution passes for `dtype` (oneDNN 3.2 has no
// bfloat16 convolutions below AVX-512). Builds primitive descriptors for a tiny geometry only:
// nothing is JIT-compiled or cached.
bool Supports(DType dtype);

}  // namespace cnnlab_onednn
