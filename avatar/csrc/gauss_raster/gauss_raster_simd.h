// Fixed-width vectors for the CPU rasterizer's per-row windows (gauss_raster.cpp), written with
// the GCC/Clang vector extensions so that the window code is SIMD whatever the auto-vectoriser
// decides: a fixed-width pixel loop is fully unrolled before GCC's loop vectoriser sees it, and
// its basic-block vectoriser gives up on the selects. A window is one float register: 16 lanes
// where AVX-512 is enabled (headcap.avatar.gaussians.cpu adds -mavx512f ... when torch reports
// an AVX512 CPU: one 16-pixel tile row per window, ~1.3x faster than two 8-lane windows on
// Zen 4, where a 512-bit op costs two 256-bit ones but one instruction), 8 where AVX is
// (headcap.core.extension adds -mavx2 -mfma for an AVX2 CPU), else 4 (SSE2, NEON). Every lane
// computes what hc_gauss's scalar functions compute to within ~1 ulp (FMA contraction, and the
// shorter float exp of exp_lanes_n).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "gauss_raster_math.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#if !defined(__GNUC__) && !defined(__clang__)
#error "headcap's CPU Gaussian kernel needs GCC or Clang (vector extensions)"
#endif

namespace hc_simd {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
// log2(kLanes): pixel column -> window column.
constexpr int kLaneShift = kLanes == 16 ? 4 : kLanes == 8 ? 3 : 2;

// Named for their role, not their width: f8 holds kLanes floats, l8 kLanes int64 ...
typedef float f8 __attribute__((vector_size(4 * kLanes)));
typedef int32_t i8 __attribute__((vector_size(4 * kLanes)));
typedef uint32_t u8 __attribute__((vector_size(4 * kLanes)));
typedef double d8 __attribute__((vector_size(8 * kLanes)));
typedef int64_t l8 __attribute__((vector_size(8 * kLanes)));

// Vec<T>::type: kLanes lanes of T; Vec<T>::mask: the comparison result (lanes all-ones or zero).
template <typename T> struct Vec;
template <> struct Vec<float> { using type = f8; using mask = i8; };
template <> struct Vec<double> { using type = d8; using mask = l8; };

template <typename V, typename T>
inline V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
inline void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}
template <typename V, typename T>
inline V splat(T x) {
  return V{} + x;
}

// Lane masks between the int32 domain (pixel flags) and a value type's mask.
inline i8 to_int_mask(const i8& m) { return m; }
inline i8 to_int_mask(const l8& m) { return __builtin_convertvector(m, i8); }
template <typename M> inline M from_int_mask(const i8& m);
template <> inline i8 from_int_mask<i8>(const i8& m) { return m; }
template <> inline l8 from_int_mask<l8>(const i8& m) { return __builtin_convertvector(m, l8); }

// 0, 1, ..., kLanes - 1 as T.
template <typename T, typename V = typename Vec<T>::type>
inline V iota() {
  V v;
  for (int i = 0; i < kLanes; ++i) v[i] = T(i);
  return v;
}
inline i8 iota_int() { return iota<int32_t, i8>(); }

// double: libm's exp per lane, as hc_gauss::hc_exp(double).
inline d8 exp_lanes(d8 x) {
  d8 out;
  for (int i = 0; i < kLanes; ++i) out[i] = std::exp(x[i]);
  return out;
}

// exp on N float vectors at once, step by step across them (independent chains side by side).
template <int N>
inline void exp_lanes_n(const f8* x, f8* out) {
  // hc_gauss::expf_core's polynomial with two instructions fewer, within ~1 ulp of it on the
  // range that matters (-ln 255 - 1e-3 <= x <= 0, |n| <= 8; lanes further out never count):
  // one FMA for the reduction (ln 2 rounded to float is 1.9e-9 off, at most 1.5e-8 in r for
  // |n| <= 8, a quarter ulp of exp) and the last two terms in Horner form.
  f8 n[N], r[N], poly[N];
  for (int j = 0; j < N; ++j) n[j] = (x[j] * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  for (int j = 0; j < N; ++j) r[j] = x[j] - n[j] * 0.693147182464599609375f;
  for (int j = 0; j < N; ++j) poly[j] = r[j] * 1.9875691500e-4f + 1.3981999507e-3f;
  for (int j = 0; j < N; ++j) poly[j] = poly[j] * r[j] + 8.3334519073e-3f;
  for (int j = 0; j < N; ++j) poly[j] = poly[j] * r[j] + 4.1665795894e-2f;
  for (int j = 0; j < N; ++j) poly[j] = poly[j] * r[j] + 1.6666665459e-1f;
  for (int j = 0; j < N; ++j) poly[j] = poly[j] * r[j] + 5.0000001201e-1f;
  for (int j = 0; j < N; ++j) poly[j] = poly[j] * r[j] + 1.0f;
  for (int j = 0; j < N; ++j) poly[j] = poly[j] * r[j] + 1.0f;
  for (int j = 0; j < N; ++j) {
#if defined(__AVX512F__)
    // poly * 2^n in one instruction (vscalefps; n is integral): the same correctly rounded
    // product as multiplying by the power of two built from n's bits below.
    out[j] = (f8)_mm512_scalef_ps((__m512)poly[j], (__m512)n[j]);
#else
    const i8 bits = (__builtin_convertvector(n[j], i8) + 127) << 23;
    f8 scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    out[j] = poly[j] * scale;
#endif
  }
}
template <int N>
inline void exp_lanes_n(const d8* x, d8* out) {
  for (int j = 0; j < N; ++j) out[j] = exp_lanes(x[j]);
}

// sqrt on every lane (inputs >= 0): one instruction where the ISA has it.
inline f8 sqrt_lanes(f8 x) {
#if defined(__AVX512F__)
  return (f8)_mm512_sqrt_ps((__m512)x);
#elif defined(__AVX__)
  return __builtin_ia32_sqrtps256(x);
#elif defined(__SSE2__)
  return __builtin_ia32_sqrtps(x);
#else
  f8 out;
  for (int i = 0; i < kLanes; ++i) out[i] = __builtin_sqrtf(x[i]);
  return out;
#endif
}

template <typename V>
inline auto hsum(const V& v) -> decltype(v[0] + v[0]) {
  decltype(v[0] + v[0]) s = 0;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// Number of set lanes in an int32 mask.
inline int32_t count_set(const i8& m) { return -hsum(m); }

// Whether every lane of an int32 mask (lanes 0 or -1) is set: one movemask where the ISA has it.
inline bool all_set(const i8& m) {
#if defined(__AVX512F__)
  return _mm512_test_epi32_mask((__m512i)m, (__m512i)m) == 0xFFFF;
#elif defined(__AVX__)
  return __builtin_ia32_movmskps256((f8)m) == 0xFF;
#elif defined(__SSE2__)
  return __builtin_ia32_movmskps((f8)m) == 0xF;
#else
  for (int i = 0; i < kLanes; ++i)
    if (m[i] == 0) return false;
  return true;
#endif
}

// Bitwise OR of the lanes.
inline uint32_t or_lanes(const u8& v) {
#if defined(__AVX512F__)
  return uint32_t(_mm512_reduce_or_epi32((__m512i)v));
#endif
  uint32_t m = 0;
  for (int i = 0; i < kLanes; ++i) m |= v[i];
  return m;
}

// out[i] = hsum(v[i]) for i < n (any fixed order of the lane sums; the same on every call).
template <typename V, typename T>
inline void hsum_many(const V* v, int n, T* out) {
  for (int i = 0; i < n; ++i) out[i] = hsum(v[i]);
}
#if defined(__AVX512F__)
// float with AVX-512: each 16-lane vector folded to 8 lanes (lane i + lane i + 8), then eight of
// those at a time through the AVX horizontal-add tree below.
typedef float f8h __attribute__((vector_size(32)));
inline f8h fold_half(const f8& v) {
  return (f8h)_mm512_castps512_ps256((__m512)v) + (f8h)_mm512_extractf64x4_pd((__m512d)v, 1);
}
inline float hsum_half(const f8h& v) {
  float s = 0;
  for (int i = 0; i < 8; ++i) s += v[i];
  return s;
}
inline void hsum_many(const f8* v, int n, float* out) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    f8h h[8];
    for (int j = 0; j < 8; ++j) h[j] = fold_half(v[i + j]);
    const f8h h01 = __builtin_ia32_haddps256(h[0], h[1]);
    const f8h h23 = __builtin_ia32_haddps256(h[2], h[3]);
    const f8h h45 = __builtin_ia32_haddps256(h[4], h[5]);
    const f8h h67 = __builtin_ia32_haddps256(h[6], h[7]);
    const f8h a = __builtin_ia32_haddps256(h01, h23);
    const f8h b = __builtin_ia32_haddps256(h45, h67);
    const f8h sum = __builtin_ia32_vperm2f128_ps256(a, b, 0x20) +
                    __builtin_ia32_vperm2f128_ps256(a, b, 0x31);
    std::memcpy(out + i, &sum, sizeof(sum));
  }
  for (; i < n; ++i) out[i] = hsum_half(fold_half(v[i]));
}
#elif defined(__AVX__)
// float with AVX: eight vectors at a time through a horizontal-add tree (7 instructions for 8
// sums instead of 8 x 7 scalar adds).
inline void hsum_many(const f8* v, int n, float* out) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const f8 h01 = __builtin_ia32_haddps256(v[i], v[i + 1]);
    const f8 h23 = __builtin_ia32_haddps256(v[i + 2], v[i + 3]);
    const f8 h45 = __builtin_ia32_haddps256(v[i + 4], v[i + 5]);
    const f8 h67 = __builtin_ia32_haddps256(v[i + 6], v[i + 7]);
    const f8 a = __builtin_ia32_haddps256(h01, h23);  // lanes 0-3: v0..v3 low halves, 4-7: high
    const f8 b = __builtin_ia32_haddps256(h45, h67);
    const f8 sum = __builtin_ia32_vperm2f128_ps256(a, b, 0x20) +
                   __builtin_ia32_vperm2f128_ps256(a, b, 0x31);
    std::memcpy(out + i, &sum, sizeof(sum));
  }
  for (; i < n; ++i) out[i] = hsum(v[i]);
}
#endif

}  // namespace hc_simd
