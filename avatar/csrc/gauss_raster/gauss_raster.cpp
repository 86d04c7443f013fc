// CPU Gaussian splat rasterizer: tile binning (radix depth sort, parallel list fill), front-to-
// back compositing with early termination, and the analytic backward pass. It takes screen-
// space Gaussians (means2d, conics, opacities, features) and composites features with pixel
// centres at integer coordinates; projection + colour run in gauss_raster_project.cpp (bound
// here too). The spec is avatar/gaussians/reference.py::rasterize_reference.
#include <torch/extension.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "gauss_raster_bin.h"
#include "gauss_raster_bindings.h"
#include "gauss_raster_math.h"
#include "gauss_raster_simd.h"

namespace {

using hc_gauss::min_transmittance;

constexpr int kMaxChannels = 64;
// Packed per-Gaussian record: mx, my, a, b, c, opacity, power cut, then the C features.
constexpr int kHeader = 7;

using hc_gauss_bin::Bins;
using hc_gauss_bin::bin_gaussians;

// Packs one Gaussian's record (see kHeader) into p.
template <typename T>
inline void pack_record(int64_t g, const T* means2d, const T* conics, const T* opacities,
                        const T* feats, int channels, T* p) {
  p[0] = means2d[2 * g];
  p[1] = means2d[2 * g + 1];
  p[2] = conics[3 * g];
  p[3] = conics[3 * g + 1];
  p[4] = conics[3 * g + 2];
  p[5] = opacities[g];
  // Below this power alpha < 1/255 for certain: the 1e-3 margin dwarfs exp() rounding.
  p[6] = -std::log(T(255) * p[5]) - T(1e-3);
  for (int c = 0; c < channels; ++c) p[kHeader + c] = feats[g * channels + c];
}
// Pixels of one tile row that a Gaussian can reach: the x interval where its power stays at or
// above the cut, a dx^2 + 2 b dy dx + c dy^2 + 2 cut <= 0, solved in double and widened by
// 1e-6 px. The cut sits 1e-3 below the true 1/255 level, so the interval is a strict superset of
// the pixels hc_gauss::counts accepts: skipping the others changes no result, only saves work.
// Per Gaussian (double): mx, my, b / a, -2 cut / a, (a c - b^2) / a^2, half height in rows.
constexpr int kSpan = 6;

template <typename T>
inline void pack_span(const T* p, double* s) {
  const double a = p[2], b = p[3], c = p[4], cut = p[6];
  s[0] = p[0];
  s[1] = p[1];
  s[2] = b / a;
  s[3] = -2.0 * cut / a;
  s[4] = (a * c - b * b) / (a * a);
  s[5] = s[4] > 0.0 ? std::sqrt(std::max(0.0, s[3] / s[4])) + 1e-6 : 0.0;
}

// Records and spans of every binned Gaussian, computed once per pass; each tile then gathers
// its Gaussians' copies into contiguous buffers so that its loops stay in cache.
template <typename T>
struct Packed {
  std::vector<T> rec;        // (N, kHeader + C)
  std::vector<double> span;  // (N, kSpan)
};

template <typename T>
void pack_all(int64_t n, const T* means2d, const T* conics, const T* opacities, const T* feats,
              const T* extents, int channels, int n_threads, Packed<T>& pk) {
  const int stride = kHeader + channels;
  pk.rec.assign(n * stride, T(0));
  pk.span.assign(n * kSpan, 0.0);
#pragma omp parallel for num_threads(n_threads) schedule(static)
  for (int64_t g = 0; g < n; ++g) {
    if (!(extents[2 * g] > T(0)) || !(extents[2 * g + 1] > T(0))) continue;  // never binned
    pack_record(g, means2d, conics, opacities, feats, channels, &pk.rec[g * stride]);
    pack_span(&pk.rec[g * stride], &pk.span[g * kSpan]);
  }
}

// Copies the tile's records and spans; with the channel count known at compile time (CT) the
// per-record copies are fixed-size moves, not library memmove calls.
template <typename T, int CT>
void gather_tile(const int32_t* ids, int64_t count, const Packed<T>& pk, int stride,
                 std::vector<T>& buf, std::vector<double>& spans) {
  buf.resize(count * stride);
  spans.resize(count * kSpan);
  for (int64_t k = 0; k < count; ++k) {
    const int64_t g = ids[k];
    if (CT > 0)
      std::memcpy(&buf[k * stride], &pk.rec[g * stride], sizeof(T) * (kHeader + CT));
    else
      std::copy_n(&pk.rec[g * stride], stride, &buf[k * stride]);
    std::memcpy(&spans[k * kSpan], &pk.span[g * kSpan], sizeof(double) * kSpan);
  }
}

// Returns false when the row is missed; otherwise [j0, j1] within [0, row_width).
inline bool row_interval(const double* s, int py, int x0, int row_width, int& j0, int& j1) {
  const double dy = double(py) - s[1];
  const double rad = s[3] - s[4] * dy * dy;
  if (!(rad >= 0.0)) return false;
  const double half = std::sqrt(rad);
  const double centre = s[0] - s[2] * dy - x0;
  const double lo = centre - half - 1e-6, hi = centre + half + 1e-6;
  if (hi < 0.0 || lo > double(row_width - 1)) return false;
  j0 = lo <= 0.0 ? 0 : int(std::ceil(lo));
  j1 = hi >= double(row_width - 1) ? row_width - 1 : int(std::floor(hi));
  return j0 <= j1;
}

// A Gaussian's row span is processed in windows of kLanes pixels, each one SIMD vector
// (gauss_raster_simd.h): no scalar remainder loop, which for spans shorter than a vector is
// the whole loop. A window starts at s = min(lo, row_stride - kLanes) and its lanes outside
// [lo, hi] are masked out: lo is the first pixel of the span not yet visited, hi the span's
// last pixel (< row_width). Per-tile buffers use rows of row_stride pixels (a multiple of
// kLanes, >= tile) so that a window never leaves them.
using hc_simd::kLanes;

inline int row_stride_for(int tile) {
  return std::max(kLanes, (tile + kLanes - 1) / kLanes * kLanes);
}

// eval_alpha on the kLanes pixels x0 + s + i of a row, dy below the mean: dx, exp(power), the
// unclamped alpha (raw) and alpha; returns the int32 mask of lanes where the Gaussian counts
// (power <= 0 and alpha >= 1/255). exp sees the power clamped to [-87, 0] (fast_expf's range;
// a positive power is rounding on a thin ellipse): that only changes lanes that never count,
// and keeps their values finite, so that multiplying them by a zero gradient gives zero.
template <typename T, typename V = typename hc_simd::Vec<T>::type>
inline hc_simd::i8 window_alpha(const T* p, int x0, int s, T dy, V& dx, V& gauss, V& raw,
                                V& alpha) {
  using hc_simd::splat;
  dx = (hc_simd::iota<T>() + T(x0 + s)) - p[0];
  const V power = hc_gauss::gauss_power(p[2], p[3], p[4], dx, dy);
  const V low = power >= T(-87) ? power : splat<V>(T(-87));
  gauss = hc_simd::exp_lanes(low <= T(0) ? low : splat<V>(T(0)));
  raw = p[5] * gauss;
  alpha = raw <= hc_gauss::max_alpha<T>() ? raw : splat<V>(hc_gauss::max_alpha<T>());
  return hc_simd::to_int_mask((power <= T(0)) & (alpha >= hc_gauss::min_alpha<T>()));
}

// Lanes s..s + kLanes - 1 that lie in [lo, hi], as an int32 mask.
inline hc_simd::i8 lane_range(int s, int lo, int hi) {
  const hc_simd::i8 j = hc_simd::iota_int() + s;
  return (j >= lo) & (j <= hi);
}

// Rows of the tile [y0, y1) that a Gaussian's cut ellipse reaches, as [r0, r1]; false if none.
inline bool row_range(const double* s, int y0, int y1, int& r0, int& r1) {
  const double lo = s[1] - s[5], hi = s[1] + s[5];
  if (hi < double(y0) || lo > double(y1 - 1)) return false;
  r0 = lo <= double(y0) ? y0 : int(std::ceil(lo));
  r1 = hi >= double(y1 - 1) ? y1 - 1 : int(std::floor(hi));
  return r0 <= r1;
}

// One forward window: same arithmetic as the per-pixel loop in reference.py, written with
// selects; a pixel whose transmittance would drop to 1e-4 is done and ignores the rest.
// Row buffers (tr, nu, dn, acc) are indexed by the pixel's column in the tile. Returns the
// number of pixels that became done.
template <typename T, int CT>
inline int32_t forward_window(const T* p, int C, int x0, T dy, int s, int lo, int hi,
                              int32_t used_mark, T* tr, int32_t* nu, int32_t* dn, T* acc,
                              int64_t plane) {
  using namespace hc_simd;
  using V = typename Vec<T>::type;
  using M = typename Vec<T>::mask;
  V dx, gauss, raw, alpha;
  const i8 counts = window_alpha(p, x0, s, dy, dx, gauss, raw, alpha);
  const i8 dn_v = load<i8>(dn + s);
  const i8 valid_i = counts & (dn_v == 0) & lane_range(s, lo, hi);
  const M valid = from_int_mask<M>(valid_i);
  const V tr_v = load<V>(tr + s);
  const V next = tr_v * (T(1) - alpha);
  const M term = valid & (next <= min_transmittance<T>());
  const M use = valid & ~term;
  const V weight = use ? alpha * tr_v : splat<V>(T(0));
  store(tr + s, use ? next : tr_v);
  const i8 term_i = to_int_mask(term);
  store(nu + s, to_int_mask(use) ? splat<i8>(used_mark) : load<i8>(nu + s));
  store(dn + s, term_i ? splat<i8>(1) : dn_v);
  const int channels = CT > 0 ? CT : C;
  for (int c = 0; c < channels; ++c) {
    T* a = acc + c * plane + s;
    store(a, load<V>(a) + weight * p[kHeader + c]);  // exact: +0 where unused
  }
  return count_set(term_i);
}

// Splat order: the tile's Gaussians are visited front to back, each touching only the pixels
// its ellipse reaches; every pixel keeps its own transmittance and stops (done) exactly where
// a per-pixel loop would break.
template <typename T, int CT>
void forward_tiles(const Bins& bins, int64_t n, const T* means2d, const T* conics,
                   const T* opacities, const T* feats, const T* extents, int channels, int width,
                   int height, int tile, int n_threads, T* out, T* final_t, int32_t* last) {
  const int C = CT > 0 ? CT : channels;
  const int stride = kHeader + C;
  Packed<T> pk;
  pack_all(n, means2d, conics, opacities, feats, extents, C, n_threads, pk);
  const int tiles_x = (width + tile - 1) / tile;
  const int64_t n_tiles = int64_t(bins.offsets.size()) - 1;
  const int rs = row_stride_for(tile);
  const int64_t area = int64_t(rs) * tile;
#pragma omp parallel num_threads(n_threads)
  {
    // Per-tile pixel state, channels planar so the windows vectorise over pixels.
    std::vector<T> buf, trans(area), acc(area * C);
    std::vector<int32_t> n_used(area), done(area), row_active(tile);
    std::vector<double> spans;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < n_tiles; ++t) {
      const int64_t begin = bins.offsets[t], count = bins.offsets[t + 1] - begin;
      if (count == 0) continue;
      gather_tile<T, CT>(&bins.ids[begin], count, pk, stride, buf, spans);
      const int x0 = int(t % tiles_x) * tile, y0 = int(t / tiles_x) * tile;
      const int x1 = std::min(width, x0 + tile), y1 = std::min(height, y0 + tile);
      const int row_width = x1 - x0;
      std::fill(trans.begin(), trans.end(), T(1));
      std::fill(acc.begin(), acc.end(), T(0));
      std::fill(n_used.begin(), n_used.end(), 0);
      std::fill(done.begin(), done.end(), 0);
      int64_t active = int64_t(row_width) * (y1 - y0);
      // Pixels still compositing per tile row: a row whose pixels are all done is skipped.
      std::fill(row_active.begin(), row_active.end(), row_width);
      for (int64_t k = 0; k < count && active > 0; ++k) {
        const T* p = &buf[k * stride];
        const double* sp = &spans[k * kSpan];
        int r0, r1;
        if (!row_range(sp, y0, y1, r0, r1)) continue;
        const int32_t used_mark = int32_t(k + 1);
        for (int py = r0; py <= r1; ++py) {
          int j0, j1;
          if (row_active[py - y0] == 0 || !row_interval(sp, py, x0, row_width, j0, j1)) continue;
          const T dy = T(py) - p[1];
          const int64_t lrow = int64_t(py - y0) * rs;
          int32_t n_term = 0;
          for (int lo = j0; lo <= j1; lo += kLanes)
            n_term += forward_window<T, CT>(p, C, x0, dy, std::min(lo, rs - kLanes), lo, j1,
                                            used_mark, &trans[lrow], &n_used[lrow],
                                            &done[lrow], &acc[lrow], area);
          active -= n_term;
          row_active[py - y0] -= n_term;
        }
      }
      for (int py = y0; py < y1; ++py) {
        for (int j = 0; j < row_width; ++j) {
          const int64_t l = int64_t(py - y0) * rs + j;
          const int64_t pix = int64_t(py) * width + x0 + j;
          for (int c = 0; c < C; ++c) out[pix * C + c] = acc[c * area + l];
          final_t[pix] = trans[l];
          last[pix] = n_used[l];
        }
      }
    }
  }
}

// One backward window of Gaussian k (its record p) over one tile row: undoes its compositing
// step at each pixel that used it and accumulates its gradients into the lane sums g
// (6 + C vectors: mean x, y, conic a, b, c, opacity, features).
template <typename T, int CT, typename V = typename hc_simd::Vec<T>::type>
inline void backward_window(const T* p, int C, int x0, T dy, int s, int lo, int hi, int32_t k32,
                            T* tr, const int32_t* lu, const T* gt, T* behind, const T* g_pix,
                            int64_t plane, V* g) {
  using namespace hc_simd;
  using M = typename Vec<T>::mask;
  V dx, gauss, raw, alpha;
  const i8 counts = window_alpha(p, x0, s, dy, dx, gauss, raw, alpha);
  const M use = from_int_mask<M>(counts & (k32 < load<i8>(lu + s)) & lane_range(s, lo, hi));
  // alpha = opacity * exp(power) while unclamped; zero gradient where clamped.
  const M grad_on = use & (raw <= hc_gauss::max_alpha<T>());
  const V inv = T(1) / (T(1) - alpha);
  const V tr_v = load<V>(tr + s);
  const V t_before = tr_v * inv;
  const V weight = use ? alpha * t_before : splat<V>(T(0));
  V g_alpha = load<V>(gt + s) * inv;
  const int channels = CT > 0 ? CT : C;
  for (int c = 0; c < channels; ++c) {
    const T f = p[kHeader + c];
    T* bh = behind + c * plane + s;
    const V go = load<V>(g_pix + c * plane + s);
    const V bh_v = load<V>(bh);
    g_alpha += go * (f * t_before - bh_v * inv);
    g[6 + c] += use ? go * weight : splat<V>(T(0));  // a NaN gradient elsewhere stays there
    store(bh, bh_v + f * weight);  // exact: adds +0 where unused
  }
  const V ga = grad_on ? g_alpha : splat<V>(T(0));
  hc_gauss::alpha_backward_add(p[2], p[3], p[4], p[5], dx, dy, gauss, ga, g, g + 2, g + 5);
  store(tr + s, use ? t_before : tr_v);
}

template <typename T, int CT>
void backward_tiles(const int64_t* offsets, const int32_t* ids, int64_t n_tiles, int64_t n,
                    const T* means2d, const T* conics, const T* opacities, const T* feats,
                    const T* extents, int channels, int width, int height, int tile,
                    int n_threads, const T* final_t, const int32_t* last, const T* g_out,
                    const T* g_alpha_out, T* thread_grads) {
  const int C = CT > 0 ? CT : channels;
  const int stride = kHeader + C;
  Packed<T> pk;
  pack_all(n, means2d, conics, opacities, feats, extents, C, n_threads, pk);
  // Gradient record per Gaussian: 2 mean, 3 conic, 1 opacity, C features. Each thread owns a
  // full (N, 6 + C) buffer, summed afterwards: no atomics in the hot loop.
  const int gstride = 6 + C;
  const int tiles_x = (width + tile - 1) / tile;
  const int rs = row_stride_for(tile);
  const int64_t area = int64_t(rs) * tile;
#pragma omp parallel num_threads(n_threads)
  {
    // Zero-initialised: lanes past a partial tile's row width are read (and masked) only.
    std::vector<T> buf, trans(area), behind(area * C), g_pix(area * C), g_t(area);
    using V = typename hc_simd::Vec<T>::type;
    V local[6 + kMaxChannels];
    std::vector<int32_t> last_l(area), row_end(tile);
    std::vector<double> spans;
    T* tg = thread_grads + int64_t(omp_get_thread_num()) * n * gstride;
    // Round-robin tiles, not dynamic: each thread's buffer then sums the same tiles in the same
    // order every run, so gradients are bit-reproducible for a given thread count.
#pragma omp for schedule(static, 1)
    for (int64_t t = 0; t < n_tiles; ++t) {
      const int64_t begin = offsets[t], count = offsets[t + 1] - begin;
      if (count == 0) continue;
      const int x0 = int(t % tiles_x) * tile, y0 = int(t / tiles_x) * tile;
      const int x1 = std::min(width, x0 + tile), y1 = std::min(height, y0 + tile);
      const int row_width = x1 - x0;
      int32_t k_end = 0;
      // Per tile row, the end of the longest pixel list: rows ending before k are skipped.
      std::fill(row_end.begin(), row_end.end(), 0);
      for (int py = y0; py < y1; ++py) {
        for (int j = 0; j < row_width; ++j) {
          const int64_t pix = int64_t(py) * width + x0 + j;
          const int64_t l = int64_t(py - y0) * rs + j;
          trans[l] = final_t[pix];
          last_l[l] = last[pix];
          // d alpha_out / d alpha_i = T_final / (1 - alpha_i): the numerator per pixel.
          g_t[l] = g_alpha_out[pix] * final_t[pix];
          for (int c = 0; c < C; ++c) g_pix[c * area + l] = g_out[pix * C + c];
          k_end = std::max(k_end, last[pix]);
          row_end[py - y0] = std::max(row_end[py - y0], last[pix]);
        }
      }
      if (k_end == 0) continue;
      gather_tile<T, CT>(&ids[begin], k_end, pk, stride, buf, spans);
      std::fill(behind.begin(), behind.end(), T(0));
      // Back to front: each pixel sees exactly the Gaussians it composited, in reverse.
      for (int64_t k = int64_t(k_end) - 1; k >= 0; --k) {
        const T* p = &buf[k * stride];
        const double* sp = &spans[k * kSpan];
        int r0, r1;
        if (!row_range(sp, y0, y1, r0, r1)) continue;
        std::fill(local, local + gstride, V{});
        bool touched = false;
        const int32_t k32 = int32_t(k);  // 32-bit compare keeps the loop vectorisable
        for (int py = r0; py <= r1; ++py) {
          int j0, j1;
          if (int64_t(row_end[py - y0]) <= k || !row_interval(sp, py, x0, row_width, j0, j1))
            continue;
          touched = true;
          const T dy = T(py) - p[1];
          const int64_t lrow = int64_t(py - y0) * rs;
          for (int lo = j0; lo <= j1; lo += kLanes)
            backward_window<T, CT>(p, C, x0, dy, std::min(lo, rs - kLanes), lo, j1, k32,
                                   &trans[lrow], &last_l[lrow], &g_t[lrow], &behind[lrow],
                                   &g_pix[lrow], area, local);
        }
        if (touched) {
          T* gk = &tg[int64_t(ids[begin + k]) * gstride];
          for (int i = 0; i < gstride; ++i) gk[i] += hc_simd::hsum(local[i]);
        }
      }
    }
  }
}

void check_inputs(const torch::Tensor& means2d, const torch::Tensor& conics,
                  const torch::Tensor& opacities, const torch::Tensor& feats,
                  const torch::Tensor& depths, const torch::Tensor& extents, int tile) {
  const auto n = means2d.size(0);
  for (const auto* t : {&means2d, &conics, &opacities, &feats, &depths, &extents}) {
    TORCH_CHECK(t->device().is_cpu(), "gauss_raster: CPU tensors expected");
    TORCH_CHECK(t->is_contiguous(), "gauss_raster: contiguous tensors expected");
    TORCH_CHECK(t->scalar_type() == means2d.scalar_type(), "gauss_raster: dtypes differ");
    TORCH_CHECK(t->size(0) == n, "gauss_raster: Gaussian counts differ");
  }
  TORCH_CHECK(feats.dim() == 2 && feats.size(1) >= 1 && feats.size(1) <= kMaxChannels,
              "gauss_raster: features must be (N, C) with 1 <= C <= 64");
  TORCH_CHECK(tile >= 1, "gauss_raster: tile size must be positive");
}

#define HC_DISPATCH_CHANNELS(C, FN, ...)        \
  if ((C) == 4) {                               \
    FN<scalar_t, 4>(__VA_ARGS__);               \
  } else if ((C) == 3) {                        \
    FN<scalar_t, 3>(__VA_ARGS__);               \
  } else {                                      \
    FN<scalar_t, 0>(__VA_ARGS__);               \
  }

std::vector<torch::Tensor> rasterize_forward(torch::Tensor means2d, torch::Tensor conics,
                                             torch::Tensor opacities, torch::Tensor feats,
                                             torch::Tensor depths, torch::Tensor extents,
                                             int64_t width, int64_t height, int64_t tile,
                                             int64_t n_threads) {
  check_inputs(means2d, conics, opacities, feats, depths, extents, int(tile));
  const int C = int(feats.size(1));
  auto out = torch::zeros({height, width, C}, feats.options());
  auto final_t = torch::ones({height, width}, feats.options());
  auto last = torch::zeros({height, width}, feats.options().dtype(torch::kInt32));
  torch::Tensor offsets, ids;
  AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "gauss_raster_forward", [&] {
    Bins bins = bin_gaussians(means2d.data_ptr<scalar_t>(), extents.data_ptr<scalar_t>(),
                              depths.data_ptr<scalar_t>(), means2d.size(0), int(width),
                              int(height), int(tile), int(n_threads));
    HC_DISPATCH_CHANNELS(C, forward_tiles, bins, means2d.size(0), means2d.data_ptr<scalar_t>(),
                         conics.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(),
                         feats.data_ptr<scalar_t>(), extents.data_ptr<scalar_t>(), C,
                         int(width), int(height), int(tile),
                         int(n_threads),
                         out.data_ptr<scalar_t>(), final_t.data_ptr<scalar_t>(),
                         last.data_ptr<int32_t>());
    // The backward pass reuses the tile lists instead of binning again.
    offsets = torch::from_blob(bins.offsets.data(), {int64_t(bins.offsets.size())},
                               torch::kInt64).clone();
    ids = torch::from_blob(bins.ids.data(), {int64_t(bins.ids.size())}, torch::kInt32).clone();
  });
  return {out, final_t, last, offsets, ids};
}

std::vector<torch::Tensor> rasterize_backward(torch::Tensor means2d, torch::Tensor conics,
                                              torch::Tensor opacities, torch::Tensor feats,
                                              torch::Tensor extents, torch::Tensor offsets,
                                              torch::Tensor ids, torch::Tensor final_t,
                                              torch::Tensor last, torch::Tensor grad_out,
                                              torch::Tensor grad_alpha, int64_t width,
                                              int64_t height, int64_t tile, int64_t n_threads) {
  check_inputs(means2d, conics, opacities, feats, extents, extents, int(tile));
  for (const auto* t : {&offsets, &ids, &final_t, &last, &grad_out, &grad_alpha})
    TORCH_CHECK(t->is_contiguous() && t->device().is_cpu(),
                "gauss_raster: contiguous CPU tensors expected in backward");
  TORCH_CHECK(offsets.scalar_type() == torch::kInt64 && ids.scalar_type() == torch::kInt32,
              "gauss_raster: tile lists must be int64 offsets and int32 ids");
  TORCH_CHECK(offsets.numel() == ((width + tile - 1) / tile) * ((height + tile - 1) / tile) + 1,
              "gauss_raster: tile offsets do not match the image size");
  const int C = int(feats.size(1));
  const int64_t n = means2d.size(0);
  const int threads = int(std::max<int64_t>(1, n_threads));
  auto thread_grads = torch::zeros({threads, n, 6 + C}, feats.options());
  AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "gauss_raster_backward", [&] {
    HC_DISPATCH_CHANNELS(C, backward_tiles, offsets.data_ptr<int64_t>(),
                         ids.data_ptr<int32_t>(), offsets.numel() - 1, n,
                         means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                         opacities.data_ptr<scalar_t>(), feats.data_ptr<scalar_t>(),
                         extents.data_ptr<scalar_t>(), C, int(width), int(height), int(tile),
                         threads, final_t.data_ptr<scalar_t>(), last.data_ptr<int32_t>(),
                         grad_out.data_ptr<scalar_t>(), grad_alpha.data_ptr<scalar_t>(),
                         thread_grads.data_ptr<scalar_t>());
  });
  auto grads = threads == 1 ? thread_grads[0] : thread_grads.sum(0);
  return {grads.slice(1, 0, 2).contiguous(), grads.slice(1, 2, 5).contiguous(),
          grads.select(1, 5).contiguous(), grads.slice(1, 6, 6 + C).contiguous()};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rasterize_forward", &rasterize_forward,
        "Composite screen-space Gaussians: -> features (H,W,C), final T (H,W), n_used (H,W), "
        "tile offsets (tiles+1), tile ids");
  m.def("rasterize_backward", &rasterize_backward,
        "Gradients for means2d, conics, opacities, features");
  m.def("project_forward", &project_forward,
        "EWA projection + colour: -> means2d, conics, feats (colour, depth), extents, radii");
  m.def("project_backward", &project_backward,
        "Gradients for means, quats, scales, colours / SH coefficients");
}
