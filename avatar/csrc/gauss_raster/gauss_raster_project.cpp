// Fused EWA projection + colour (SH degree 0-3 or plain colours) for the CPU kernel, forward and
// analytic backward, one Gaussian per loop iteration (hc_parallel.h blocks). Spec: projection.py and sh.py;
// the per-Gaussian math lives in gauss_raster_project.h. Bound in gauss_raster.cpp.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "gauss_raster_bindings.h"
#include "hc_parallel.h"
#include "gauss_raster_project.h"

namespace {

// Gaussians per block handed to a worker (a block takes ~0.1-0.5 ms).
constexpr int64_t kProjectGrain = 2048;

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

// Colour of one Gaussian: sh (K, C) coefficients -> max(SH(dir) + 0.5, 0), or plain colours.
// With g_col given, runs the backward pass instead: writes g_coef (every one of its K x C
// values, so the caller need not zero it) and accumulates into g_mean.
template <typename T>
void colour_one(const hc_gauss::ProjCamera<T>& cam, const T* mean, const T* coef, int K, int C,
                bool is_sh, T* col, const T* g_col, T* g_coef, T* g_mean) {
  if (!is_sh) {
    for (int c = 0; c < C; ++c) {
      if (g_col) g_coef[c] = g_col[c]; else col[c] = coef[c];
    }
    return;
  }
  const T d[3] = {mean[0] - cam.campos[0], mean[1] - cam.campos[1], mean[2] - cam.campos[2]};
  const T nrm = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
  const T nc = nrm > T(1e-12) ? nrm : T(1e-12);
  const T u[3] = {d[0] / nc, d[1] / nc, d[2] / nc};
  T basis[16];
  hc_gauss::sh_basis(K, u[0], u[1], u[2], basis);
  T raw[3];
  for (int c = 0; c < C; ++c) {
    T acc = T(0);
    for (int k = 0; k < K; ++k) acc += basis[k] * coef[k * C + c];
    raw[c] = acc + T(0.5);
    if (!g_col) col[c] = raw[c] >= T(0) ? raw[c] : T(0);
  }
  if (!g_col) return;
  T gb[16];
  for (int k = 0; k < K; ++k) gb[k] = T(0);
  for (int c = 0; c < C; ++c) {
    const T g = raw[c] >= T(0) ? g_col[c] : T(0);  // clamp_min passes where input >= 0
    for (int k = 0; k < K; ++k) {
      g_coef[k * C + c] = basis[k] * g;
      gb[k] += coef[k * C + c] * g;
    }
  }
  T gu[3];
  hc_gauss::sh_basis_backward(K, u[0], u[1], u[2], gb, gu);
  const bool pass = nrm >= T(1e-12) && nrm > T(0);
  const T dot = u[0] * gu[0] + u[1] * gu[1] + u[2] * gu[2];
  for (int c = 0; c < 3; ++c)
    g_mean[c] += gu[c] / nc - (pass ? dot * d[c] / (nc * nrm) : T(0));
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
  const int64_t n = means.size(0);
  const auto cam = make_camera<T>(K, cfw, int(width), int(height), near, far, eps2d);
  const T *mp = means.data_ptr<T>(), *qp = quats.data_ptr<T>(), *sp = scales.data_ptr<T>(),
          *op = opacities.data_ptr<T>(), *cp = coefs.data_ptr<T>();
  T *m2 = means2d.data_ptr<T>(), *co = conics.data_ptr<T>(), *fe = feats.data_ptr<T>(),
    *ex = extents.data_ptr<T>();
  int32_t* ra = radii.data_ptr<int32_t>();
  hc_par::parallel_for(n, int(n_threads), kProjectGrain, [&](int, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    hc_gauss::ProjState<T> s;
    hc_gauss::project_one(cam, mp + 3 * i, qp + 4 * i, sp + 3 * i, s, m2 + 2 * i, co + 3 * i);
    colour_one(cam, mp + 3 * i, cp + int64_t(i) * Kc * C, Kc, C, is_sh, fe + (C + 1) * i,
               (const T*)nullptr, (T*)nullptr, (T*)nullptr);
    fe[(C + 1) * i + C] = s.z;
    // extents of the alpha >= 1/255 footprint, padded; culled -> 0 (projection.py)
    const T o = op[i];
    const T o255 = o * T(255);
    const T level = T(2) * std::log(o255 > T(1) ? o255 : T(1));
    const T lx = level * s.sxx, ly = level * s.syy;
    const T ext_x = std::sqrt(lx > T(0) ? lx : T(0)) * T(1.0 + 1e-3) + T(1e-2);
    const T ext_y = std::sqrt(ly > T(0) ? ly : T(0)) * T(1.0 + 1e-3) + T(1e-2);
    const T mx = m2[2 * i], my = m2[2 * i + 1];
    const bool on_screen = (mx + ext_x >= T(0)) & (mx - ext_x <= T(width - 1)) &
                           (my + ext_y >= T(0)) & (my - ext_y <= T(height - 1));
    const bool keep = s.in_depth & s.ok_det & (o >= T(1.0 / 255.0)) & on_screen &
                      std::isfinite(ext_x) & std::isfinite(ext_y);
    ex[2 * i] = keep ? ext_x : T(0);
    ex[2 * i + 1] = keep ? ext_y : T(0);
    ra[2 * i] = int32_t(std::ceil(ex[2 * i]));
    ra[2 * i + 1] = int32_t(std::ceil(ex[2 * i + 1]));
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
  const int64_t n = means.size(0);
  const auto cam = make_camera<T>(K, cfw, int(width), int(height), near, far, eps2d);
  const T *mp = means.data_ptr<T>(), *qp = quats.data_ptr<T>(), *sp = scales.data_ptr<T>(),
          *cp = coefs.data_ptr<T>(), *gm2 = g_means2d.data_ptr<T>(),
          *gco = g_conics.data_ptr<T>(), *gfe = g_feats.data_ptr<T>();
  T *gm = g_means.data_ptr<T>(), *gq = g_quats.data_ptr<T>(), *gs = g_scales.data_ptr<T>(),
    *gc = g_coefs.data_ptr<T>();
  hc_par::parallel_for(n, int(n_threads), kProjectGrain, [&](int, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    hc_gauss::ProjState<T> s;
    T m2[2], co[3];
    hc_gauss::project_one(cam, mp + 3 * i, qp + 4 * i, sp + 3 * i, s, m2, co);
    hc_gauss::project_one_backward(cam, qp + 4 * i, sp + 3 * i, s, gm2 + 2 * i, gco + 3 * i,
                                   gfe[(C + 1) * i + C], gm + 3 * i, gq + 4 * i, gs + 3 * i);
    colour_one(cam, mp + 3 * i, cp + int64_t(i) * Kc * C, Kc, C, is_sh, (T*)nullptr,
               gfe + (C + 1) * i, gc + int64_t(i) * Kc * C, gm + 3 * i);
  }
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
  // g_coefs (N x 48 values with SH degree 3, the largest output) is written in full by
  // colour_one, so it is not zeroed first; the others accumulate.
  auto g_means = torch::zeros_like(means), g_quats = torch::zeros_like(quats),
       g_scales = torch::zeros_like(scales), g_coefs = torch::empty_like(coefs);
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "gauss_project_backward", [&] {
    backward_loop<scalar_t>(means, quats, scales, coefs, K, cfw, width, height, near, far, eps2d,
                            g_means2d, g_conics, g_feats, n_threads, is_sh, C, Kc, g_means,
                            g_quats, g_scales, g_coefs);
  });
  return {g_means, g_quats, g_scales, g_coefs};
}
