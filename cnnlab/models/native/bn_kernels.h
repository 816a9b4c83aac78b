// cnnlab's own train-mode BatchNorm kernels for channels-last float32 tensors, with the
// residual add and ReLU that follow BatchNorm in a ResNet fused in: y = relu(bn(x) + residual).
//
// x is (M, C) as JAX stores (N, *spatial, C): M = N * prod(spatial) rows of C channels.
// Forward: two passes over x (per-channel sums, then y); backward: two passes over x, y, dy
// (per-channel sums, then dx and d_residual), the ReLU's mask read back from y > 0.
// Statistics: float32 mean and biased variance, accumulated in double.
#pragma once

#include <cstdint>

namespace cnnlab_onednn {

struct BnShape {
  int64_t rows = 0, channels = 0;
  float eps = 1e-5f;
  bool relu = false;
  int threads = 1;
};

void BnKernelForward(const BnShape& s, const float* x, const float* scale, const float* bias,
                     const float* residual, float* y, float* mean, float* var);

// d_residual may be null (no residual); y is only read when s.relu.
void BnKernelBackward(const BnShape& s, const float* x, const float* y, const float* dy,
                      const float* scale, const float* mean, const float* var, float* dx,
                      float* d_scale, float* d_bias, float* d_residual);

}  // namespace cnnlab_onednn
