// Per-Gaussian / per-pixel math shared by the C++ CPU kernel (gauss_raster.cpp) and the CUDA
// source (gauss_raster.cu). The Python reference (avatar/gaussians/reference.py) is the
// specification; every expression here is written in the same order so both round alike.
// The CPU kernel uses the branch-free pieces (gauss_power, clamped_alpha, counts) inside
// vectorised row loops and spells alpha_backward's chain rule out there as reductions.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define HC_HD __host__ __device__ inline
#else
#define HC_HD inline
#endif

namespace hc_gauss {

template <typename T> HC_HD T min_alpha() { return T(1.0 / 255.0); }
template <typename T> HC_HD T max_alpha() { return T(0.999); }
template <typename T> HC_HD T min_transmittance() { return T(1e-4); }

#ifndef __CUDA_ARCH__
// Branch-free expf (Cephes: Cody-Waite reduction + degree-6 polynomial, ~1 ulp on the range
// used here) so that the CPU compiler can vectorise the per-row alpha loops; std::exp is an
// opaque libm call. Valid for -87 <= x <= 0; callers only pass powers inside a Gaussian's
// 1/255 ellipse, which are >= -ln(255) - 1e-3 for opacities <= 1 (no clamp: it would stop GCC
// from vectorising).
inline float fast_expf(float x) {
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float poly = 1.9875691500e-4f;
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  poly = poly * r * r + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return poly * scale;
}
#endif

HC_HD float hc_exp(float x) {
#ifdef __CUDA_ARCH__
  return expf(x);
#else
  return fast_expf(x);
#endif
}
HC_HD double hc_exp(double x) {
#ifdef __CUDA_ARCH__
  return ::exp(x);
#else
  return std::exp(x);
#endif
}

// One Gaussian seen from one pixel: dx = px - mean_x, dy = py - mean_y.
// Returns false when the Gaussian does not contribute (power > 0 or alpha < 1/255).
// `unclamped` tells the backward pass whether the 0.999 clamp was active (zero gradient then).
template <typename T>
HC_HD T gauss_power(T a, T b, T c, T dx, T dy) {
  return T(-0.5) * (a * dx * dx + c * dy * dy) - b * dx * dy;
}

// Branch-free pieces of eval_alpha, for vectorised loops: the clamped alpha and whether the
// Gaussian counts at this pixel.
template <typename T>
HC_HD T clamped_alpha(T opacity, T gauss) {
  const T raw = opacity * gauss;
  return raw <= max_alpha<T>() ? raw : max_alpha<T>();
}
template <typename T>
HC_HD bool counts(T power, T alpha) {
  return (power <= T(0)) & (alpha >= min_alpha<T>());
}

template <typename T>
HC_HD bool eval_alpha(T a, T b, T c, T opacity, T dx, T dy, T& alpha, T& gauss,
                      bool& unclamped) {
  const T power = gauss_power(a, b, c, dx, dy);
  if (power > T(0)) return false;
  gauss = hc_exp(power);
  const T raw = opacity * gauss;
  unclamped = raw <= max_alpha<T>();
  alpha = unclamped ? raw : max_alpha<T>();
  return alpha >= min_alpha<T>();
}

// Chain rule from dL/dalpha to the Gaussian's 2D mean, conic and opacity (accumulated).
template <typename T>
HC_HD void alpha_backward(T a, T b, T c, T opacity, T dx, T dy, T gauss, bool unclamped,
                          T g_alpha, T* g_mean, T* g_conic, T* g_opacity) {
  if (!unclamped) return;
  *g_opacity += gauss * g_alpha;
  const T g_power = opacity * gauss * g_alpha;
  g_conic[0] += T(-0.5) * dx * dx * g_power;
  g_conic[1] += -dx * dy * g_power;
  g_conic[2] += T(-0.5) * dy * dy * g_power;
  // d power / d mean = -(d power / d dx)
  g_mean[0] += (a * dx + b * dy) * g_power;
  g_mean[1] += (b * dx + c * dy) * g_power;
}

}  // namespace hc_gauss
