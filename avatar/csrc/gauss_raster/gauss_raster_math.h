// Per-Gaussian / per-pixel math shared by the C++ CPU kernel (gauss_raster.cpp) and the CUDA
// source (gauss_raster.cu). The Python reference (avatar/gaussians/reference.py) is the
// specification; every expression here is written in the same order so both round alike.
// eval_alpha / alpha_backward are the scalar per-pixel steps the CUDA kernels call. The CPU
// kernel's SIMD windows (gauss_raster.cpp window_alpha_n, gauss_raster_simd.h exp_lanes_n)
// evaluate gauss_power and the float exp with the row's terms folded and two instructions
// fewer, within ~1 ulp of these.
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
// used here) so that the CPU kernel can run it on SIMD lanes; std::exp is an opaque libm call.
// expf_core returns the polynomial at the reduced argument and n = round(x / ln 2); the caller
// scales by 2^n (fast_expf). Valid for -87 <= x <= 0.
template <typename D>
inline D expf_core(D x, D& n) {
  n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const D r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  D poly = r * 1.9875691500e-4f + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  return poly * r * r + r + 1.0f;
}

// Callers only pass powers inside a Gaussian's 1/255 ellipse, which are >= -ln(255) - 1e-3
// for opacities <= 1.
inline float fast_expf(float x) {
  float n;
  const float poly = expf_core(x, n);
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

// One Gaussian seen from one pixel: dx = px - mean_x, dy = py - mean_y; D is T or a vector of
// T (one pixel per lane).
template <typename T, typename D>
HC_HD D gauss_power(T a, T b, T c, D dx, T dy) {
  return T(-0.5) * (a * dx * dx + c * dy * dy) - b * dx * dy;
}

// Returns false when the Gaussian does not contribute (power > 0 or alpha < 1/255).
// `unclamped` tells the backward pass whether the 0.999 clamp was active (zero gradient then).
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

// Chain rule from dL/dalpha (g_alpha, zero where the 0.999 clamp is active) to the Gaussian's
// 2D mean, conic and opacity, accumulated; D is T or a vector of T, as in gauss_power.
template <typename T, typename D>
HC_HD void alpha_backward_add(T a, T b, T c, T opacity, D dx, T dy, D gauss, D g_alpha,
                              D* g_mean, D* g_conic, D* g_opacity) {
  *g_opacity += gauss * g_alpha;
  const D g_power = opacity * gauss * g_alpha;
  g_conic[0] += T(-0.5) * dx * dx * g_power;
  g_conic[1] += -dx * dy * g_power;
  g_conic[2] += T(-0.5) * dy * dy * g_power;
  // d power / d mean = -(d power / d dx)
  g_mean[0] += (a * dx + b * dy) * g_power;
  g_mean[1] += (b * dx + c * dy) * g_power;
}

template <typename T>
HC_HD void alpha_backward(T a, T b, T c, T opacity, T dx, T dy, T gauss, bool unclamped,
                          T g_alpha, T* g_mean, T* g_conic, T* g_opacity) {
  if (unclamped) alpha_backward_add(a, b, c, opacity, dx, dy, gauss, g_alpha, g_mean, g_conic,
                                    g_opacity);
}

}  // namespace hc_gauss
