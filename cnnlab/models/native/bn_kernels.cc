// Train-mode BatchNorm kernels (bn_kernels.h). Rows are split into one contiguous range per
// OpenMP thread; each thread sums its rows per channel in float over short blocks and adds the
// blocks into double accumulators; the row loops are compiled for AVX-512, AVX2 + FMA and
// baseline x86-64, chosen at load time by the CPU.
#include "bn_kernels.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace cnnlab_onednn {
namespace {

#if defined(__x86_64__) && !defined(__clang__)
#define CNNLAB_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CNNLAB_CLONES
#endif

constexpr int64_t kBlockRows = 32;  // float partial sums cover at most this many rows

// Per channel: s1 += sum of v, s2 += sum of v * (b - b_shift), where v = a - a_shift, zeroed
// where y <= 0 if kMask. Shifts near the mean keep the float partial sums accurate.
template <bool kMask>
inline __attribute__((always_inline)) void SumRowsT(
    const float* __restrict a, const float* __restrict a_shift, const float* __restrict b,
    const float* __restrict b_shift, const float* __restrict y, int64_t rows, int64_t c,
    double* __restrict s1, double* __restrict s2, float* __restrict p1,
    float* __restrict p2) {
  for (int64_t r0 = 0; r0 < rows; r0 += kBlockRows) {
    const int64_t r1 = std::min(rows, r0 + kBlockRows);
    for (int64_t k = 0; k < c; ++k) p1[k] = 0.0f, p2[k] = 0.0f;
    for (int64_t r = r0; r < r1; ++r) {
      const float* __restrict ar = a + r * c;
      const float* __restrict br = b + r * c;
      const float* __restrict yr = kMask ? y + r * c : nullptr;
      for (int64_t k = 0; k < c; ++k) {
        float v = ar[k] - a_shift[k];
        if (kMask) v = yr[k] > 0.0f ? v : 0.0f;
        p1[k] += v;
        p2[k] += v * (br[k] - b_shift[k]);
      }
    }
    for (int64_t k = 0; k < c; ++k) s1[k] += p1[k], s2[k] += p2[k];
  }
}

CNNLAB_CLONES void SumRows(const float* a, const float* a_shift, const float* b,
                           const float* b_shift, const float* y, bool mask, int64_t rows,
                           int64_t c, double* s1, double* s2, float* p1, float* p2) {
  if (mask)
    SumRowsT<true>(a, a_shift, b, b_shift, y, rows, c, s1, s2, p1, p2);
  else
    SumRowsT<false>(a, a_shift, b, b_shift, y, rows, c, s1, s2, p1, p2);
}

// y = [relu]((x - mean) * a + b [+ residual]) per channel.
template <bool kRelu, bool kResidual>
inline __attribute__((always_inline)) void NormalizeRowsT(
    const float* __restrict x, const float* __restrict residual, const float* __restrict mean,
    const float* __restrict a, const float* __restrict b, int64_t rows, int64_t c,
    float* __restrict y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict xr = x + r * c;
    const float* __restrict rr = kResidual ? residual + r * c : nullptr;
    float* __restrict yr = y + r * c;
    for (int64_t k = 0; k < c; ++k) {
      float v = (xr[k] - mean[k]) * a[k] + b[k];
      if (kResidual) v += rr[k];
      yr[k] = kRelu ? (v > 0.0f ? v : 0.0f) : v;
    }
  }
}

CNNLAB_CLONES void NormalizeRows(const float* x, const float* residual, const float* mean,
                                 const float* a, const float* b, bool relu, int64_t rows,
                                 int64_t c, float* y) {
  if (relu && residual) return NormalizeRowsT<true, true>(x, residual, mean, a, b, rows, c, y);
  if (relu) return NormalizeRowsT<true, false>(x, residual, mean, a, b, rows, c, y);
  if (residual) return NormalizeRowsT<false, true>(x, residual, mean, a, b, rows, c, y);
  NormalizeRowsT<false, false>(x, residual, mean, a, b, rows, c, y);
}

// g = dy masked by y > 0 (relu); dx = g * a + (x - mean) * b + c0; d_residual = g.
template <bool kRelu, bool kResidual>
inline __attribute__((always_inline)) void GradRowsT(
    const float* __restrict x, const float* __restrict y, const float* __restrict dy,
    const float* __restrict mean, const float* __restrict a, const float* __restrict b,
    const float* __restrict c0, int64_t rows, int64_t c, float* __restrict dx,
    float* __restrict d_residual) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict xr = x + r * c;
    const float* __restrict yr = kRelu ? y + r * c : nullptr;
    const float* __restrict dyr = dy + r * c;
    float* __restrict dxr = dx + r * c;
    float* __restrict drr = kResidual ? d_residual + r * c : nullptr;
    for (int64_t k = 0; k < c; ++k) {
      const float g = kRelu ? (yr[k] > 0.0f ? dyr[k] : 0.0f) : dyr[k];
      dxr[k] = g * a[k] + (xr[k] - mean[k]) * b[k] + c0[k];
      if (kResidual) drr[k] = g;
    }
  }
}

CNNLAB_CLONES void GradRows(const float* x, const float* y, const float* dy, const float* mean,
                            const float* a, const float* b, const float* c0, bool relu,
                            int64_t rows, int64_t c, float* dx, float* d_residual) {
  if (relu && d_residual)
    return GradRowsT<true, true>(x, y, dy, mean, a, b, c0, rows, c, dx, d_residual);
  if (relu) return GradRowsT<true, false>(x, y, dy, mean, a, b, c0, rows, c, dx, d_residual);
  if (d_residual)
    return GradRowsT<false, true>(x, y, dy, mean, a, b, c0, rows, c, dx, d_residual);
  GradRowsT<false, false>(x, y, dy, mean, a, b, c0, rows, c, dx, d_residual);
}

// SumRows over all rows, split across the team.
void ChannelSums(const BnShape& s, const float* a, const float* a_shift, const float* b,
                 const float* b_shift, const float* y, bool mask, std::vector<double>& s1,
                 std::vector<double>& s2) {
  const int64_t c = s.channels;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(s.threads, s.rows)));
  std::vector<double> part(2 * c * threads, 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    const int64_t r0 = s.rows * t / n, r1 = s.rows * (t + 1) / n;
    std::vector<float> p(2 * c);
    SumRows(a + r0 * c, a_shift, b + r0 * c, b_shift, y ? y + r0 * c : nullptr, mask, r1 - r0, c,
            part.data() + 2 * c * t, part.data() + 2 * c * t + c, p.data(), p.data() + c);
  }
  s1.assign(c, 0.0), s2.assign(c, 0.0);
  for (int t = 0; t < threads; ++t)
    for (int64_t k = 0; k < c; ++k) s1[k] += part[2 * c * t + k], s2[k] += part[2 * c * t + c + k];
}

template <typename Fn>
void ForRows(const BnShape& s, Fn fn) {
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(s.threads, s.rows)));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    const int64_t r0 = s.rows * t / n, r1 = s.rows * (t + 1) / n;
    fn(r0, r1 - r0);
  }
}

}  // namespace

void BnKernelForward(const BnShape& s, const float* x, const float* scale, const float* bias,
                     const float* residual, float* y, float* mean, float* var) {
  const int64_t c = s.channels;
  std::vector<double> s1, s2;
  ChannelSums(s, x, x, x, x, nullptr, false, s1, s2);  // shifted by the first row
  std::vector<float> a(c);
  for (int64_t k = 0; k < c; ++k) {
    const double d = s1[k] / s.rows, v = std::max(0.0, s2[k] / s.rows - d * d);
    mean[k] = static_cast<float>(x[k] + d), var[k] = static_cast<float>(v);
    a[k] = static_cast<float>(scale[k] / std::sqrt(static_cast<double>(var[k]) + s.eps));
  }
  ForRows(s, [&](int64_t r0, int64_t n) {
    NormalizeRows(x + r0 * c, residual ? residual + r0 * c : nullptr, mean, a.data(), bias,
                  s.relu, n, c, y + r0 * c);
  });
}

void BnKernelBackward(const BnShape& s, const float* x, const float* y, const float* dy,
                      const float* scale, const float* mean, const float* var, float* dx,
                      float* d_scale, float* d_bias, float* d_residual) {
  const int64_t c = s.channels;
  std::vector<double> sg, sgx;
  const std::vector<float> zeros(c, 0.0f);
  ChannelSums(s, dy, zeros.data(), x, mean, y, s.relu, sg, sgx);  // sum g, sum g * (x - mean)
  std::vector<float> a(c), b(c), c0(c);
  for (int64_t k = 0; k < c; ++k) {
    const double rstd = 1.0 / std::sqrt(static_cast<double>(var[k]) + s.eps);
    const double db = sg[k], ds = sgx[k] * rstd;  // sum g, sum g * xhat
    d_bias[k] = static_cast<float>(db), d_scale[k] = static_cast<float>(ds);
    const double aa = scale[k] * rstd;
    a[k] = static_cast<float>(aa), b[k] = static_cast<float>(-aa * rstd * ds / s.rows);
    c0[k] = static_cast<float>(-aa * db / s.rows);
  }
  ForRows(s, [&](int64_t r0, int64_t n) {
    GradRows(x + r0 * c, s.relu ? y + r0 * c : nullptr, dy + r0 * c, mean, a.data(), b.data(),
             c0.data(), s.relu, n, c, dx + r0 * c, d_residual ? d_residual + r0 * c : nullptr);
  });
}

}  // namespace cnnlab_onednn
