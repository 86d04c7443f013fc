// Per-Gaussian EWA projection + spherical-harmonics colour, forward and analytic backward.
// The specification is avatar/gaussians/projection.py::project_gaussians and
// avatar/gaussians/sh.py::sh_to_color; each step below names the torch expression it mirrors,
// and the backward pass reproduces torch autograd's rules at the non-smooth points (clamps,
// torch.where on culled Gaussians, minimum/maximum ties split in half).
//
// Every function is generic over the lane type D: one value (T) or a vector of kLanes values
// (gauss_raster_simd.h), one Gaussian per lane; gauss_raster_project.cpp runs kLanes Gaussians
// at a time. Branches are selects (sel), so each lane computes what the one-value form computes.
#pragma once

#include <cmath>

#include "gauss_raster_math.h"
#include "gauss_raster_simd.h"

namespace hc_gauss {

// T and the comparison result M of a lane type D.
template <typename D> struct LaneOf { using T = D; using M = bool; };
template <> struct LaneOf<hc_simd::f8> { using T = float; using M = hc_simd::i8; };
template <> struct LaneOf<hc_simd::d8> { using T = double; using M = hc_simd::l8; };

// x in every lane.
template <typename D, typename T>
inline D bc(T x) {
  return D{} + typename LaneOf<D>::T(x);
}
// m ? a : b per lane.
template <typename M, typename D>
inline D sel(const M& m, const D& a, const D& b) {
  return m ? a : b;
}
inline float lsqrt(float x) { return std::sqrt(x); }
inline double lsqrt(double x) { return std::sqrt(x); }
inline hc_simd::f8 lsqrt(hc_simd::f8 x) { return hc_simd::sqrt_lanes(x); }
inline hc_simd::d8 lsqrt(hc_simd::d8 x) {
  for (int i = 0; i < hc_simd::kLanes; ++i) x[i] = std::sqrt(x[i]);
  return x;
}

// Camera constants shared by all Gaussians (row-major R (3x3) and t of cam_from_world).
template <typename T>
struct ProjCamera {
  T R[9], t[3], fx, fy, skew, cx, cy, campos[3];
  T lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg, near, far, eps2d;
  int width, height;
};

// quats (w, x, y, z) normalised -> R (row-major), as projection.quat_to_rotmat.
template <typename D>
inline void quat_rotmat(const D* q, D* R) {
  using T = typename LaneOf<D>::T;
  const D w = q[0], x = q[1], y = q[2], z = q[3];
  R[0] = T(1) - T(2) * (y * y + z * z); R[1] = T(2) * (x * y - w * z); R[2] = T(2) * (x * z + w * y);
  R[3] = T(2) * (x * y + w * z); R[4] = T(1) - T(2) * (x * x + z * z); R[5] = T(2) * (y * z - w * x);
  R[6] = T(2) * (x * z - w * y); R[7] = T(2) * (y * z + w * x); R[8] = T(1) - T(2) * (x * x + y * y);
}

// Intermediates of one Gaussian's projection, kept for the backward pass.
template <typename D>
struct ProjState {
  using M = typename LaneOf<D>::M;
  D nrm, qn[4], Rq[9], W[9], V[6], z, zs, u, v, J[6], sxx, sxy, syy, det, det_s;
  M in_depth, ok_det;
};

// torch.minimum(u, hi) then torch.maximum(., -lo): value, and the autograd factor for u.
template <typename T, typename D>
inline D clamp_tie(D u, T lo, T hi, D& factor) {
  const D m = sel(u < hi, u, bc<D>(hi));
  const D f_min = sel(u < hi, bc<D>(1), sel(u == hi, bc<D>(0.5), bc<D>(0)));
  const D r = sel(m > -lo, m, bc<D>(-lo));
  const D f_max = sel(m > -lo, bc<D>(1), sel(m == -lo, bc<D>(0.5), bc<D>(0)));
  factor = f_min * f_max;
  return r;
}

template <typename T, typename D>
inline void project_one(const ProjCamera<T>& cam, const D* mean, const D* quat, const D* scale,
                        ProjState<D>& s, D* means2d, D* conic) {
  s.nrm = lsqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]);
  const D nc = sel(s.nrm > T(1e-12), s.nrm, bc<D>(1e-12));
  for (int i = 0; i < 4; ++i) s.qn[i] = quat[i] / nc;
  quat_rotmat(s.qn, s.Rq);
  // W = R_cam R_q diag(s): the camera-space covariance is W W^T.
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c)
      s.W[3 * r + c] = (cam.R[3 * r] * s.Rq[c] + cam.R[3 * r + 1] * s.Rq[3 + c] +
                        cam.R[3 * r + 2] * s.Rq[6 + c]) * scale[c];
  // V packed (00, 01, 02, 11, 12, 22)
  const int vi[6][2] = {{0, 0}, {0, 1}, {0, 2}, {1, 1}, {1, 2}, {2, 2}};
  for (int k = 0; k < 6; ++k) {
    const D* a = &s.W[3 * vi[k][0]];
    const D* b = &s.W[3 * vi[k][1]];
    s.V[k] = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  }
  D p[3];
  for (int r = 0; r < 3; ++r)
    p[r] = cam.R[3 * r] * mean[0] + cam.R[3 * r + 1] * mean[1] + cam.R[3 * r + 2] * mean[2] +
           cam.t[r];
  s.z = p[2];
  s.in_depth = (s.z > cam.near) & (s.z < cam.far);
  s.zs = sel(s.in_depth, s.z, bc<D>(1));
  s.u = p[0] / s.zs;
  s.v = p[1] / s.zs;
  means2d[0] = cam.fx * s.u + cam.skew * s.v + cam.cx;
  means2d[1] = cam.fy * s.v + cam.cy;
  D fu, fv;
  const D uc = clamp_tie(s.u, cam.lim_x_neg, cam.lim_x_pos, fu);
  const D vc = clamp_tie(s.v, cam.lim_y_neg, cam.lim_y_pos, fv);
  s.J[0] = cam.fx / s.zs; s.J[1] = cam.skew / s.zs; s.J[2] = -(cam.fx * uc + cam.skew * vc) / s.zs;
  s.J[3] = bc<D>(0);      s.J[4] = cam.fy / s.zs;   s.J[5] = -cam.fy * vc / s.zs;
  // JV rows, then cov2d = J V J^T + eps I
  const D* V = s.V;
  const D Vm[9] = {V[0], V[1], V[2], V[1], V[3], V[4], V[2], V[4], V[5]};
  D JV[6];
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c)
      JV[3 * r + c] = s.J[3 * r] * Vm[c] + s.J[3 * r + 1] * Vm[3 + c] + s.J[3 * r + 2] * Vm[6 + c];
  s.sxx = JV[0] * s.J[0] + JV[1] * s.J[1] + JV[2] * s.J[2] + cam.eps2d;
  s.sxy = JV[0] * s.J[3] + JV[1] * s.J[4] + JV[2] * s.J[5];
  s.syy = JV[3] * s.J[3] + JV[4] * s.J[4] + JV[5] * s.J[5] + cam.eps2d;
  s.det = s.sxx * s.syy - s.sxy * s.sxy;
  s.ok_det = s.det > T(0);
  s.det_s = sel(s.ok_det, s.det, bc<D>(1));
  conic[0] = s.syy / s.det_s;
  conic[1] = -s.sxy / s.det_s;
  conic[2] = s.sxx / s.det_s;
}

// g_m2d (2), g_conic (3), g_depth -> accumulates g_mean (3), g_quat (4), g_scale (3).
template <typename T, typename D>
inline void project_one_backward(const ProjCamera<T>& cam, const D* quat, const D* scale,
                                 const ProjState<D>& s, const D* g_m2d, const D* g_conic,
                                 D g_depth, D* g_mean, D* g_quat, D* g_scale) {
  using M = typename LaneOf<D>::M;
  // conics = (syy, -sxy, sxx) / det_s
  const D ds = s.det_s;
  D g_sxx = g_conic[2] / ds, g_syy = g_conic[0] / ds, g_sxy = -g_conic[1] / ds;
  // Through det where det > 0 (det_s = 1, a constant, elsewhere).
  const D g_det = -(g_conic[0] * s.syy - g_conic[1] * s.sxy + g_conic[2] * s.sxx) / (ds * ds);
  g_sxx = sel(s.ok_det, g_sxx + g_det * s.syy, g_sxx);
  g_syy = sel(s.ok_det, g_syy + g_det * s.sxx, g_syy);
  g_sxy = sel(s.ok_det, g_sxy + T(-2) * s.sxy * g_det, g_sxy);
  // G = d/d cov2d (symmetric; sxy = (c01 + c10) / 2)
  const D G[4] = {g_sxx, T(0.5) * g_sxy, T(0.5) * g_sxy, g_syy};
  const D* V = s.V;
  const D Vm[9] = {V[0], V[1], V[2], V[1], V[3], V[4], V[2], V[4], V[5]};
  const D* J = s.J;
  // g_J = 2 G J V ; g_V = J^T G J
  D GJ[6];
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c) GJ[3 * r + c] = G[2 * r] * J[c] + G[2 * r + 1] * J[3 + c];
  D gJ[6];
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c)
      gJ[3 * r + c] = T(2) * (GJ[3 * r] * Vm[c] + GJ[3 * r + 1] * Vm[3 + c] + GJ[3 * r + 2] * Vm[6 + c]);
  D gV[9];
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) gV[3 * r + c] = J[r] * GJ[c] + J[3 + r] * GJ[3 + c];
  // V = W W^T -> g_W = (gV + gV^T) W ; W = Rc Rq diag(s)
  D gW[9];
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) {
      D acc = bc<D>(0);
      for (int k = 0; k < 3; ++k) acc += (gV[3 * r + k] + gV[3 * k + r]) * s.W[3 * k + c];
      gW[3 * r + c] = acc;
    }
  D gR[9];  // d/d Rq
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) {
      const D gm = cam.R[r] * gW[c] + cam.R[3 + r] * gW[3 + c] + cam.R[6 + r] * gW[6 + c];
      gR[3 * r + c] = gm * scale[c];
      g_scale[c] += gm * s.Rq[3 * r + c];
    }
  const D w = s.qn[0], x = s.qn[1], y = s.qn[2], z = s.qn[3];
  const D gq[4] = {
      T(2) * (-gR[1] * z + gR[2] * y + gR[3] * z - gR[5] * x - gR[6] * y + gR[7] * x),
      T(2) * (gR[1] * y + gR[2] * z + gR[3] * y - T(2) * gR[4] * x - gR[5] * w + gR[6] * z +
              gR[7] * w - T(2) * gR[8] * x),
      T(2) * (T(-2) * gR[0] * y + gR[1] * x + gR[2] * w + gR[3] * x + gR[5] * z - gR[6] * w +
              gR[7] * z - T(2) * gR[8] * y),
      T(2) * (T(-2) * gR[0] * z - gR[1] * w + gR[2] * x + gR[3] * w - T(2) * gR[4] * z +
              gR[5] * y + gR[6] * x + gR[7] * y)};
  // qn = q / clamp_min(|q|, 1e-12)
  const D nc = sel(s.nrm > T(1e-12), s.nrm, bc<D>(1e-12));
  D dot = bc<D>(0);
  for (int i = 0; i < 4; ++i) dot += quat[i] * gq[i];
  const M pass = (s.nrm >= T(1e-12)) & (s.nrm > T(0));
  for (int i = 0; i < 4; ++i)
    g_quat[i] += gq[i] / nc - sel(pass, dot / (nc * nc) * quat[i] / s.nrm, bc<D>(0));
  // J (all entries are numerator / zs) and the clamped direction
  D fu, fv;
  clamp_tie(s.u, cam.lim_x_neg, cam.lim_x_pos, fu);
  clamp_tie(s.v, cam.lim_y_neg, cam.lim_y_pos, fv);
  D g_zs = -(gJ[0] * J[0] + gJ[1] * J[1] + gJ[2] * J[2] + gJ[4] * J[4] + gJ[5] * J[5]) / s.zs;
  const D g_uc = -gJ[2] * cam.fx / s.zs;
  const D g_vc = -gJ[2] * cam.skew / s.zs - gJ[5] * cam.fy / s.zs;
  const D g_u = g_uc * fu + g_m2d[0] * cam.fx;
  const D g_v = g_vc * fv + g_m2d[0] * cam.skew + g_m2d[1] * cam.fy;
  g_zs += -(g_u * s.u + g_v * s.v) / s.zs;
  const D gp[3] = {g_u / s.zs, g_v / s.zs, g_depth + sel(s.in_depth, g_zs, bc<D>(0))};
  for (int c = 0; c < 3; ++c)
    g_mean[c] += cam.R[c] * gp[0] + cam.R[3 + c] * gp[1] + cam.R[6 + c] * gp[2];
}

constexpr double kShC0 = 0.28209479177387814, kShC1 = 0.4886025119029199;
constexpr double kShC2[5] = {1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
                             -1.0925484305920792, 0.5462742152960396};
constexpr double kShC3[7] = {-0.5900435899266435, 2.890611442640554, -0.4570457994644658,
                             0.3731763325901154, -0.4570457994644658, 1.445305721320277,
                             -0.5900435899266435};

// SH basis (K = (degree + 1)^2 values) at a unit direction, as sh.sh_basis.
template <typename D>
inline void sh_basis(int K, D x, D y, D z, D* b) {
  using T = typename LaneOf<D>::T;
  b[0] = bc<D>(T(kShC0));
  if (K < 4) return;
  b[1] = T(-kShC1) * y; b[2] = T(kShC1) * z; b[3] = T(-kShC1) * x;
  if (K < 9) return;
  const D xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
  b[4] = T(kShC2[0]) * xy; b[5] = T(kShC2[1]) * yz; b[6] = T(kShC2[2]) * (T(2) * zz - xx - yy);
  b[7] = T(kShC2[3]) * xz; b[8] = T(kShC2[4]) * (xx - yy);
  if (K < 16) return;
  b[9] = T(kShC3[0]) * y * (T(3) * xx - yy);
  b[10] = T(kShC3[1]) * xy * z;
  b[11] = T(kShC3[2]) * y * (T(4) * zz - xx - yy);
  b[12] = T(kShC3[3]) * z * (T(2) * zz - T(3) * xx - T(3) * yy);
  b[13] = T(kShC3[4]) * x * (T(4) * zz - xx - yy);
  b[14] = T(kShC3[5]) * z * (xx - yy);
  b[15] = T(kShC3[6]) * x * (xx - T(3) * yy);
}

// d basis / d (x, y, z) contracted with gb (K values) -> g (3).
template <typename D>
inline void sh_basis_backward(int K, D x, D y, D z, const D* gb, D* g) {
  using T = typename LaneOf<D>::T;
  g[0] = g[1] = g[2] = bc<D>(0);
  if (K < 4) return;
  g[1] += T(-kShC1) * gb[1]; g[2] += T(kShC1) * gb[2]; g[0] += T(-kShC1) * gb[3];
  if (K < 9) return;
  const D xx = x * x, yy = y * y, zz = z * z;
  g[0] += T(kShC2[0]) * y * gb[4]; g[1] += T(kShC2[0]) * x * gb[4];
  g[1] += T(kShC2[1]) * z * gb[5]; g[2] += T(kShC2[1]) * y * gb[5];
  g[0] += T(kShC2[2]) * T(-2) * x * gb[6]; g[1] += T(kShC2[2]) * T(-2) * y * gb[6];
  g[2] += T(kShC2[2]) * T(4) * z * gb[6];
  g[0] += T(kShC2[3]) * z * gb[7]; g[2] += T(kShC2[3]) * x * gb[7];
  g[0] += T(kShC2[4]) * T(2) * x * gb[8]; g[1] += T(kShC2[4]) * T(-2) * y * gb[8];
  if (K < 16) return;
  const D c0 = T(kShC3[0]) * gb[9], c1 = T(kShC3[1]) * gb[10], c2 = T(kShC3[2]) * gb[11],
          c3 = T(kShC3[3]) * gb[12], c4 = T(kShC3[4]) * gb[13], c5 = T(kShC3[5]) * gb[14],
          c6 = T(kShC3[6]) * gb[15];
  g[0] += c0 * T(6) * x * y + c1 * y * z + c2 * T(-2) * x * y + c3 * T(-6) * x * z +
          c4 * (T(4) * zz - T(3) * xx - yy) + c5 * T(2) * x * z + c6 * T(3) * (xx - yy);
  g[1] += c0 * T(3) * (xx - yy) + c1 * x * z + c2 * (T(4) * zz - xx - T(3) * yy) +
          c3 * T(-6) * y * z + c4 * T(-2) * x * y + c5 * T(-2) * y * z + c6 * T(-6) * x * y;
  g[2] += c1 * x * y + c2 * T(8) * y * z + c3 * (T(6) * zz - T(3) * xx - T(3) * yy) +
          c4 * T(8) * x * z + c5 * (xx - yy);
}

}  // namespace hc_gauss
