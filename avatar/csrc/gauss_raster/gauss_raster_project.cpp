// Fused EWA projection + colour (SH degree 0-3 or plain colours) for the CPU kernel, forward and
// analytic backward, kLanes Gaussians per step (one per SIMD lane, gauss_raster_simd.h) within
// hc_parallel.h blocks. Spec: projection.py and sh.py; the per-Gaussian math lives in
// gauss_raster_project.h. Bound in gauss_raster.cpp.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "gauss_raster_bindings.h"
#include "hc_parallel.h"
#include "gauss_raster_project.h"

namespace {

constexpr int kMaxCoefs = 64;  // K x C of one Gaussian (SH: at most 16 x 3; colours: C <= 63)

// Gaussians per block handed to a worker (a multiple of kLanes).
constexpr int64_t kProjectGrain = 2048;
static_assert(kProjectGrain % hc_simd::kLanes == 0, "blocks of whole lane groups");

template <typename T>
hc_gauss::ProjCamera<T> make_camera(const torch::Tensor& K, const torch::Tensor& cfw, int width,
                                    int height, double near, double far, double eps2d) {
  hc_gauss::ProjCamera<T> cam;
  const T* k = K.data_ptr<T>();
  const T* m = cfw.data_ptr<T>();
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) cam.R[3 * r + c] = m[4 * r + c];
    cam.t[r] = m[4 * r + 3];
  }
  for (int c = 0; c < 3; ++c)  // camera_center: -(R^T t)
    cam.campos[c] = -(cam.R[c] * cam.t[0] + cam.R[3 + c] * cam.t[1] + cam.R[6 + c] * cam.t[2]);
  cam.fx = k[0]; cam.skew = k[1]; cam.cx = k[2]; cam.fy = k[4]; cam.cy = k[5];
  const T tan_fovx = T(0.5 * width) / cam.fx, tan_fovy = T(0.5 * height) / cam.fy;
  cam.lim_x_pos = (T(width - 0.5) - cam.cx) / cam.fx + T(0.3) * tan_fovx;
  cam.lim_x_neg = (cam.cx + T(0.5)) / cam.fx + T(0.3) * tan_fovx;
  cam.lim_y_pos = (T(height - 0.5) - cam.cy) / cam.fy + T(0.3) * tan_fovy;
  cam.lim_y_neg = (cam.cy + T(0.5)) / cam.fy + T(0.3) * tan_fovy;
  cam.near = T(near); cam.far = T(far); cam.eps2d = T(eps2d);
  cam.width = width; cam.height = height;
  return cam;
}

// Colour of kLanes Gaussians (one per lane of D): sh (K, C) coefficients -> max(SH(dir) + 0.5,
// 0), or plain colours. With g_col given, runs the backward pass instead: writes g_coef (every
// one of its K x C values) and accumulates into g_mean.
template <typename T, typename D>
void colour_lanes(const hc_gauss::ProjCamera<T>& cam, const D* mean, const D* coef, int K, int C,
                  bool is_sh, D* col, const D* g_col, D* g_coef, D* g_mean) {
  using hc_gauss::bc;
  using hc_gauss::sel;
  if (!is_sh) {
    for (int c = 0; c < C; ++c) {
      if (g_col) g_coef[c] = g_col[c]; else col[c] = coef[c];
    }
    return;
  }
  const D d[3] = {mean[0] - cam.campos[0], mean[1] - cam.campos[1], mean[2] - cam.campos[2]};
  const D nrm = hc_gauss::lsqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
  const D nc = sel(nrm > T(1e-12), nrm, bc<D>(1e-12));
  const D u[3] = {d[0] / nc, d[1] / nc, d[2] / nc};
  D basis[16];
  hc_gauss::sh_basis(K, u[0], u[1], u[2], basis);
  D raw[3];
  for (int c = 0; c < C; ++c) {
    D acc = bc<D>(0);
    for (int k = 0; k < K; ++k) acc += basis[k] * coef[k * C + c];
    raw[c] = acc + T(0.5);
    if (!g_col) col[c] = sel(raw[c] >= T(0), raw[c], bc<D>(0));
  }
  if (!g_col) return;
  D gb[16];
  for (int k = 0; k < K; ++k) gb[k] = bc<D>(0);
  for (int c = 0; c < C; ++c) {
    const D g = sel(raw[c] >= T(0), g_col[c], bc<D>(0));  // clamp_min passes where input >= 0
    for (int k = 0; k < K; ++k) {
      g_coef[k * C + c] = basis[k] * g;
      gb[k] += coef[k * C + c] * g;
    }
  }
  D gu[3];
  hc_gauss::sh_basis_backward(K, u[0], u[1], u[2], gb, gu);
  const auto pass = (nrm >= T(1e-12)) & (nrm > T(0));
  const D dot = u[0] * gu[0] + u[1] * gu[1] + u[2] * gu[2];
  for (int c = 0; c < 3; ++c)
    g_mean[c] += gu[c] / nc - sel(pass, dot * d[c] / (nc * nrm), bc<D>(0));
}

// kLanes Gaussians at a time: rows of an (N, width) array moved between row-major memory and
// lanes (lane i <- row idx[i]; the last block repeats its last row in the unused lanes).
template <typename D, typename T>
inline void gather_rows(const T* src, int width, const int64_t* idx, D* out) {
  for (int f = 0; f < width; ++f)
    for (int i = 0; i < hc_simd::kLanes; ++i) out[f][i] = src[idx[i] * width + f];
}
template <typename D, typename T>
inline void scatter_rows(const D* in, int width, int64_t first, int count, T* dst) {
  for (int i = 0; i < count; ++i)
    for (int f = 0; f < width; ++f) dst[(first + i) * width + f] = in[f][i];
}

// 64 bytes from src (64-byte aligned) to dst (64-byte aligned) past the caches.
inline void stream_line(void* dst, const void* src) {
#if defined(__AVX512F__)
  _mm512_stream_si512(static_cast<__m512i*>(dst), _mm512_load_si512(src));
#elif defined(__AVX__)
  for (int h = 0; h < 2; ++h)
    _mm256_stream_si256(static_cast<__m256i*>(dst) + h,
                        _mm256_load_si256(static_cast<const __m256i*>(src) + h));
#elif defined(__SSE2__)
  for (int h = 0; h < 4; ++h)
    _mm_stream_si128(static_cast<__m128i*>(dst) + h, _mm_load_si128(static_cast<const __m128i*>(src) + h));
#else
  std::memcpy(dst, src, 64);
#endif
}

// scatter_rows for the largest output (the SH gradients, 19 MB at 100k Gaussians of degree 3,
// written once and not read again by this kernel): a whole block of kLanes rows is laid out in
// an L1 buffer and written with non-temporal stores where it fills whole aligned cache lines,
// which saves reading every destination line into the cache first.
template <typename D, typename T>
inline void scatter_rows_stream(const D* in, int width, int64_t first, int count, T* dst) {
  constexpr int L = hc_simd::kLanes;
  T* out = dst + first * width;
  const size_t bytes = size_t(L) * width * sizeof(T);
  if (count < L || bytes % 64 != 0 || reinterpret_cast<uintptr_t>(out) % 64 != 0 ||
      bytes > sizeof(T) * L * kMaxCoefs) {
    scatter_rows(in, width, first, count, dst);
    return;
  }
  alignas(64) T buf[L * kMaxCoefs];
  for (int i = 0; i < L; ++i)
    for (int f = 0; f < width; ++f) buf[i * width + f] = in[f][i];
  for (size_t o = 0; o < bytes; o += 64)
    stream_line(reinterpret_cast<char*>(out) + o, reinterpret_cast<const char*>(buf) + o);
}

// Orders the non-temporal stores of a block before the stores of whoever reads them next.
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

void check(const std::vector<const torch::Tensor*>& ts, const torch::Tensor& like) {
  for (const auto* t : ts) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous(),
                "gauss_raster project: contiguous CPU tensors expected");
    TORCH_CHECK(t->scalar_type() == like.scalar_type(), "gauss_raster project: dtypes differ");
  }
}


template <typename T>
void forward_loop(const torch::Tensor& means, const torch::Tensor& quats,
                  const torch::Tensor& scales, const torch::Tensor& opacities,
                  const torch::Tensor& coefs, const torch::Tensor& K, const torch::Tensor& cfw,
                  int64_t width, int64_t height, double near, double far, double eps2d,
                  int64_t n_threads, bool is_sh, int C, int Kc, torch::Tensor& means2d,
                  torch::Tensor& conics, torch::Tensor& feats, torch::Tensor& extents,
                  torch::Tensor& radii) {
  using D = typename hc_simd::Vec<T>::type;
  using hc_gauss::bc;
  using hc_gauss::sel;
  constexpr int L = hc_simd::kLanes;
  const int64_t n = means.size(0);
  const auto cam = make_camera<T>(K, cfw, int(width), int(height), near, far, eps2d);
  const T *mp = means.data_ptr<T>(), *qp = quats.data_ptr<T>(), *sp = scales.data_ptr<T>(),
          *op = opacities.data_ptr<T>(), *cp = coefs.data_ptr<T>();
  T *m2 = means2d.data_ptr<T>(), *co = conics.data_ptr<T>(), *fe = feats.data_ptr<T>(),
    *ex = extents.data_ptr<T>();
  int32_t* ra = radii.data_ptr<int32_t>();
  const int KC = Kc * C;
  hc_par::parallel_for(n, int(n_threads), kProjectGrain, [&](int, int64_t i0, int64_t i1) {
  for (int64_t b = i0; b < i1; b += L) {
    const int count = int(std::min<int64_t>(L, i1 - b));
    int64_t idx[L];
    for (int i = 0; i < L; ++i) idx[i] = b + std::min(i, count - 1);
    D mean[3], quat[4], scale[3], o[1], coef[kMaxCoefs];
    gather_rows(mp, 3, idx, mean);
    gather_rows(qp, 4, idx, quat);
    gather_rows(sp, 3, idx, scale);
    gather_rows(op, 1, idx, o);
    gather_rows(cp, KC, idx, coef);
    hc_gauss::ProjState<D> s;
    D m2v[2], cov[3], fev[kMaxCoefs + 1];
    hc_gauss::project_one(cam, mean, quat, scale, s, m2v, cov);
    colour_lanes(cam, mean, coef, Kc, C, is_sh, fev, (const D*)nullptr, (D*)nullptr,
                 (D*)nullptr);
    fev[C] = s.z;
    // extents of the alpha >= 1/255 footprint, padded; culled -> 0 (projection.py)
    const D o255 = o[0] * T(255);
    D level;
    for (int i = 0; i < L; ++i) level[i] = T(2) * std::log(o255[i] > T(1) ? o255[i] : T(1));
    const D lx = level * s.sxx, ly = level * s.syy;
    const D ext_x = hc_gauss::lsqrt(sel(lx > T(0), lx, bc<D>(0))) * T(1.0 + 1e-3) + T(1e-2);
    const D ext_y = hc_gauss::lsqrt(sel(ly > T(0), ly, bc<D>(0))) * T(1.0 + 1e-3) + T(1e-2);
    const D mx = m2v[0], my = m2v[1];
    const auto on_screen = (mx + ext_x >= T(0)) & (mx - ext_x <= T(width - 1)) &
                           (my + ext_y >= T(0)) & (my - ext_y <= T(height - 1));
    // finite: x - x is 0 (NaN for inf and NaN)
    const auto keep = s.in_depth & s.ok_det & (o[0] >= T(1.0 / 255.0)) & on_screen &
                      (ext_x - ext_x == T(0)) & (ext_y - ext_y == T(0));
    D exv[2] = {sel(keep, ext_x, bc<D>(0)), sel(keep, ext_y, bc<D>(0))};
    scatter_rows(m2v, 2, b, count, m2);
    scatter_rows(cov, 3, b, count, co);
    scatter_rows(fev, C + 1, b, count, fe);
    scatter_rows(exv, 2, b, count, ex);
    for (int i = 0; i < count; ++i) {
      ra[2 * (b + i)] = int32_t(std::ceil(exv[0][i]));
      ra[2 * (b + i) + 1] = int32_t(std::ceil(exv[1][i]));
    }
  }
  });
}

template <typename T>
void backward_loop(const torch::Tensor& means, const torch::Tensor& quats,
                   const torch::Tensor& scales, const torch::Tensor& coefs,
                   const torch::Tensor& K, const torch::Tensor& cfw, int64_t width,
                   int64_t height, double near, double far, double eps2d,
                   const torch::Tensor& g_means2d, const torch::Tensor& g_conics,
                   const torch::Tensor& g_feats, int64_t n_threads, bool is_sh, int C, int Kc,
                   torch::Tensor& g_means, torch::Tensor& g_quats, torch::Tensor& g_scales,
                   torch::Tensor& g_coefs) {
  using D = typename hc_simd::Vec<T>::type;
  using hc_gauss::bc;
  constexpr int L = hc_simd::kLanes;
  const int64_t n = means.size(0);
  const auto cam = make_camera<T>(K, cfw, int(width), int(height), near, far, eps2d);
  const T *mp = means.data_ptr<T>(), *qp = quats.data_ptr<T>(), *sp = scales.data_ptr<T>(),
          *cp = coefs.data_ptr<T>(), *gm2 = g_means2d.data_ptr<T>(),
          *gco = g_conics.data_ptr<T>(), *gfe = g_feats.data_ptr<T>();
  T *gm = g_means.data_ptr<T>(), *gq = g_quats.data_ptr<T>(), *gs = g_scales.data_ptr<T>(),
    *gc = g_coefs.data_ptr<T>();
  const int KC = Kc * C;
  hc_par::parallel_for(n, int(n_threads), kProjectGrain, [&](int, int64_t i0, int64_t i1) {
  for (int64_t b = i0; b < i1; b += L) {
    const int count = int(std::min<int64_t>(L, i1 - b));
    int64_t idx[L];
    for (int i = 0; i < L; ++i) idx[i] = b + std::min(i, count - 1);
    D mean[3], quat[4], scale[3], coef[kMaxCoefs], g_m2[2], g_co[3], g_fe[kMaxCoefs + 1];
    gather_rows(mp, 3, idx, mean);
    gather_rows(qp, 4, idx, quat);
    gather_rows(sp, 3, idx, scale);
    gather_rows(cp, KC, idx, coef);
    gather_rows(gm2, 2, idx, g_m2);
    gather_rows(gco, 3, idx, g_co);
    gather_rows(gfe, C + 1, idx, g_fe);
    hc_gauss::ProjState<D> s;
    D m2v[2], cov[3];
    hc_gauss::project_one(cam, mean, quat, scale, s, m2v, cov);
    D g_mean[3] = {bc<D>(0), bc<D>(0), bc<D>(0)};
    D g_quat[4] = {bc<D>(0), bc<D>(0), bc<D>(0), bc<D>(0)};
    D g_scale[3] = {bc<D>(0), bc<D>(0), bc<D>(0)};
    D g_coef[kMaxCoefs];
    hc_gauss::project_one_backward(cam, quat, scale, s, g_m2, g_co, g_fe[C], g_mean, g_quat,
                                   g_scale);
    colour_lanes(cam, mean, coef, Kc, C, is_sh, (D*)nullptr, g_fe, g_coef, g_mean);
    scatter_rows(g_mean, 3, b, count, gm);
    scatter_rows(g_quat, 4, b, count, gq);
    scatter_rows(g_scale, 3, b, count, gs);
    scatter_rows_stream(g_coef, KC, b, count, gc);
  }
  stream_fence();
  });
}

}  // namespace

std::vector<torch::Tensor> project_forward(torch::Tensor means, torch::Tensor quats,
                                           torch::Tensor scales, torch::Tensor opacities,
                                           torch::Tensor coefs, torch::Tensor K,
                                           torch::Tensor cfw, int64_t width, int64_t height,
                                           double near, double far, double eps2d,
                                           int64_t n_threads) {
  check({&means, &quats, &scales, &opacities, &coefs, &K, &cfw}, means);
  const int64_t n = means.size(0);
  const bool is_sh = coefs.dim() == 3;
  const int C = int(is_sh ? coefs.size(2) : coefs.size(1));
  const int Kc = is_sh ? int(coefs.size(1)) : 1;
  TORCH_CHECK(Kc * C <= kMaxCoefs, "gauss_raster project: at most ", kMaxCoefs,
              " colour channels, got ", C);
  TORCH_CHECK(!is_sh || (C == 3 && (Kc == 1 || Kc == 4 || Kc == 9 || Kc == 16)),
              "gauss_raster project: sh coefficients must be (N, 1|4|9|16, 3)");
  auto means2d = torch::empty({n, 2}, means.options());
  auto conics = torch::empty({n, 3}, means.options());
  auto feats = torch::empty({n, C + 1}, means.options());
  auto extents = torch::empty({n, 2}, means.options());
  auto radii = torch::empty({n, 2}, means.options().dtype(torch::kInt32));
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "gauss_project_forward", [&] {
    forward_loop<scalar_t>(means, quats, scales, opacities, coefs, K, cfw, width, height, near,
                           far, eps2d, n_threads, is_sh, C, Kc, means2d, conics, feats, extents,
                           radii);
  });
  return {means2d, conics, feats, extents, radii};
}

std::vector<torch::Tensor> project_backward(torch::Tensor means, torch::Tensor quats,
                                            torch::Tensor scales, torch::Tensor coefs,
                                            torch::Tensor K, torch::Tensor cfw, int64_t width,
                                            int64_t height, double near, double far,
                                            double eps2d, torch::Tensor g_means2d,
                                            torch::Tensor g_conics, torch::Tensor g_feats,
                                            int64_t n_threads) {
  check({&means, &quats, &scales, &coefs, &K, &cfw, &g_means2d, &g_conics, &g_feats}, means);
  const int64_t n = means.size(0);
  const bool is_sh = coefs.dim() == 3;
  const int C = int(is_sh ? coefs.size(2) : coefs.size(1));
  const int Kc = is_sh ? int(coefs.size(1)) : 1;
  TORCH_CHECK(Kc * C <= kMaxCoefs, "gauss_raster project: at most ", kMaxCoefs,
              " colour channels, got ", C);
  // Every output value is written by backward_loop (no zero fill first).
  auto g_means = torch::empty_like(means), g_quats = torch::empty_like(quats),
       g_scales = torch::empty_like(scales), g_coefs = torch::empty_like(coefs);
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "gauss_project_backward", [&] {
    backward_loop<scalar_t>(means, quats, scales, coefs, K, cfw, width, height, near, far, eps2d,
                            g_means2d, g_conics, g_feats, n_threads, is_sh, C, Kc, g_means,
                            g_quats, g_scales, g_coefs);
  });
  return {g_means, g_quats, g_scales, g_coefs};
}
