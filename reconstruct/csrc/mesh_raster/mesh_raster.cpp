// Z-buffer triangle rasterizer (CPU, OpenMP): triangle id + perspective-correct barycentrics.
//
// The per-pixel math (edge functions, inside test, perspective-correct depth and barycentrics)
// is written with exactly the same operations, in the same order, as the pure-torch reference
// `reconstruct.rasterize_mesh.rasterize_reference`, so that in float64 both agree bit for bit
// except where IEEE evaluation order differs (ties in depth are then the only disagreement).
//
// Parallel scheme: triangles are set up in parallel, binned serially (in increasing id order,
// which keeps the result deterministic) into horizontal bands of rows, and each band is
// rasterized by one thread with its own z-buffer, so no atomics are needed. Threads come from
// core/csrc/hc_parallel.h (bands handed out from a shared counter, passive waits), not OpenMP,
// so that a busy machine does not stall the threads at barriers.
#include <torch/extension.h>

#include <atomic>

#include "hc_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kBandRows = 8;

struct TriSetup {
  double x[3], y[3], z[3];
  double area;
  int64_t x0, x1, y0, y1;
  bool valid;
};

inline double edge_fn(double ax, double ay, double bx, double by, double px, double py) {
  return (bx - ax) * (py - ay) - (by - ay) * (px - ax);
}

// Inside test and perspective-correct depth of pixel (px, py) for a set-up triangle.
// Returns false when the pixel centre is outside. Edges are inclusive: a centre exactly on a
// shared edge is claimed by both triangles and the z-buffer (then the lower id) decides.
inline bool eval_pixel(const TriSetup& t, double px, double py, double* bary, double* depth) {
  const double w0 = edge_fn(t.x[1], t.y[1], t.x[2], t.y[2], px, py);
  const double w1 = edge_fn(t.x[2], t.y[2], t.x[0], t.y[0], px, py);
  const double w2 = edge_fn(t.x[0], t.y[0], t.x[1], t.y[1], px, py);
  if (t.area > 0) {
    if (w0 < 0 || w1 < 0 || w2 < 0) return false;
  } else {
    if (w0 > 0 || w1 > 0 || w2 > 0) return false;
  }
  const double q0 = (w0 / t.area) / t.z[0];
  const double q1 = (w1 / t.area) / t.z[1];
  const double q2 = (w2 / t.area) / t.z[2];
  const double s = q0 + q1 + q2;
  *depth = 1.0 / s;
  if (bary != nullptr) {
    bary[0] = q0 / s;
    bary[1] = q1 / s;
    bary[2] = q2 / s;
  }
  return true;
}

template <typename scalar_t>
void rasterize_impl(const double* verts, int64_t num_verts, const int64_t* faces, int64_t num_faces,
                    int64_t H, int64_t W, double near, bool cull_backfaces, int64_t* tid_out,
                    scalar_t* bary_out, scalar_t* depth_out, int n_threads) {
  std::vector<TriSetup> tris(num_faces);
  hc_par::parallel_for(num_faces, n_threads, 4096, [&](int, int64_t f0, int64_t f1) {
  for (int64_t f = f0; f < f1; ++f) {
    TriSetup& t = tris[f];
    t.valid = false;
    bool ok = true;
    for (int k = 0; k < 3; ++k) {
      const int64_t v = faces[f * 3 + k];
      if (v < 0 || v >= num_verts) { ok = false; break; }
      t.x[k] = verts[v * 3 + 0];
      t.y[k] = verts[v * 3 + 1];
      t.z[k] = verts[v * 3 + 2];
      if (!std::isfinite(t.x[k]) || !std::isfinite(t.y[k]) || !std::isfinite(t.z[k]) || !(t.z[k] > near)) {
        ok = false;
        break;
      }
    }
    if (!ok) continue;
    t.area = edge_fn(t.x[0], t.y[0], t.x[1], t.y[1], t.x[2], t.y[2]);
    if (t.area == 0 || !std::isfinite(t.area)) continue;
    if (cull_backfaces && t.area > 0) continue;
    const double xmin = std::min({t.x[0], t.x[1], t.x[2]});
    const double xmax = std::max({t.x[0], t.x[1], t.x[2]});
    const double ymin = std::min({t.y[0], t.y[1], t.y[2]});
    const double ymax = std::max({t.y[0], t.y[1], t.y[2]});
    // clamp in double before the integer cast: far-off (e.g. strongly distorted) vertices are finite but huge
    const double x0 = std::max(0.0, std::ceil(xmin));
    const double x1 = std::min(static_cast<double>(W - 1), std::floor(xmax));
    const double y0 = std::max(0.0, std::ceil(ymin));
    const double y1 = std::min(static_cast<double>(H - 1), std::floor(ymax));
    if (x0 > x1 || y0 > y1) continue;
    t.x0 = static_cast<int64_t>(x0);
    t.x1 = static_cast<int64_t>(x1);
    t.y0 = static_cast<int64_t>(y0);
    t.y1 = static_cast<int64_t>(y1);
    t.valid = true;
  }
  });

  const int64_t num_bands = (H + kBandRows - 1) / kBandRows;
  std::vector<int64_t> counts(num_bands + 1, 0);
  for (int64_t f = 0; f < num_faces; ++f) {
    const TriSetup& t = tris[f];
    if (!t.valid) continue;
    for (int64_t b = t.y0 / kBandRows; b <= t.y1 / kBandRows; ++b) counts[b + 1] += 1;
  }
  for (int64_t b = 0; b < num_bands; ++b) counts[b + 1] += counts[b];
  std::vector<int32_t> bins(counts[num_bands]);
  std::vector<int64_t> cursor(counts.begin(), counts.end() - 1);
  for (int64_t f = 0; f < num_faces; ++f) {
    const TriSetup& t = tris[f];
    if (!t.valid) continue;
    for (int64_t b = t.y0 / kBandRows; b <= t.y1 / kBandRows; ++b) bins[cursor[b]++] = static_cast<int32_t>(f);
  }

  const double inf = std::numeric_limits<double>::infinity();
  std::atomic<int64_t> next_band{0};
  hc_par::run_workers(int(std::min<int64_t>(n_threads, num_bands)), [&](int) {
    std::vector<double> zbuf(kBandRows * W);
    std::vector<int64_t> tbuf(kBandRows * W);
    for (int64_t b; (b = next_band.fetch_add(1, std::memory_order_relaxed)) < num_bands;) {
      const int64_t row0 = b * kBandRows;
      const int64_t row1 = std::min(H, row0 + kBandRows);
      std::fill(zbuf.begin(), zbuf.end(), inf);
      std::fill(tbuf.begin(), tbuf.end(), int64_t(-1));
      for (int64_t i = counts[b]; i < counts[b + 1]; ++i) {
        const int64_t f = bins[i];
        const TriSetup& t = tris[f];
        const int64_t ya = std::max(t.y0, row0);
        const int64_t yb = std::min(t.y1, row1 - 1);
        for (int64_t y = ya; y <= yb; ++y) {
          double* zrow = zbuf.data() + (y - row0) * W;
          int64_t* trow = tbuf.data() + (y - row0) * W;
          const double py = static_cast<double>(y);
          for (int64_t x = t.x0; x <= t.x1; ++x) {
            double depth;
            if (!eval_pixel(t, static_cast<double>(x), py, nullptr, &depth)) continue;
            // strict '<' with triangles visited in increasing id keeps the lowest id on exact ties
            if (depth < zrow[x]) {
              zrow[x] = depth;
              trow[x] = f;
            }
          }
        }
      }
      for (int64_t y = row0; y < row1; ++y) {
        for (int64_t x = 0; x < W; ++x) {
          const int64_t local = (y - row0) * W + x;
          const int64_t pix = y * W + x;
          const int64_t f = tbuf[local];
          tid_out[pix] = f;
          if (f < 0) {
            bary_out[pix * 3 + 0] = 0;
            bary_out[pix * 3 + 1] = 0;
            bary_out[pix * 3 + 2] = 0;
            depth_out[pix] = static_cast<scalar_t>(inf);
            continue;
          }
          double bary[3];
          double depth;
          eval_pixel(tris[f], static_cast<double>(x), static_cast<double>(y), bary, &depth);
          bary_out[pix * 3 + 0] = static_cast<scalar_t>(bary[0]);
          bary_out[pix * 3 + 1] = static_cast<scalar_t>(bary[1]);
          bary_out[pix * 3 + 2] = static_cast<scalar_t>(bary[2]);
          depth_out[pix] = static_cast<scalar_t>(depth);
        }
      }
    }
  });
}

}  // namespace

// verts: [V, 3] float64 (x_pix, y_pix, z_cam); faces: [F, 3] int64.
// Returns (triangle_id [H, W] int64, bary [H, W, 3], depth [H, W]) with bary/depth in out_dtype.
std::vector<torch::Tensor> rasterize_forward(torch::Tensor verts, torch::Tensor faces, int64_t height,
                                             int64_t width, double near, bool cull_backfaces,
                                             bool out_double, int64_t n_threads) {
  TORCH_CHECK(verts.device().is_cpu() && faces.device().is_cpu(), "mesh_raster: CPU tensors expected");
  TORCH_CHECK(verts.scalar_type() == torch::kFloat64 && verts.is_contiguous() && verts.dim() == 2 &&
                  verts.size(1) == 3,
              "mesh_raster: verts must be contiguous float64 [V, 3]");
  TORCH_CHECK(faces.scalar_type() == torch::kInt64 && faces.is_contiguous() && faces.dim() == 2 &&
                  faces.size(1) == 3,
              "mesh_raster: faces must be contiguous int64 [F, 3]");
  TORCH_CHECK(height > 0 && width > 0, "mesh_raster: height and width must be positive");
  const int threads = int(std::max<int64_t>(1, n_threads));
  auto dtype = out_double ? torch::kFloat64 : torch::kFloat32;
  auto tid = torch::empty({height, width}, torch::dtype(torch::kInt64));
  auto bary = torch::empty({height, width, 3}, torch::dtype(dtype));
  auto depth = torch::empty({height, width}, torch::dtype(dtype));
  if (out_double) {
    rasterize_impl<double>(verts.data_ptr<double>(), verts.size(0), faces.data_ptr<int64_t>(), faces.size(0),
                           height, width, near, cull_backfaces, tid.data_ptr<int64_t>(),
                           bary.data_ptr<double>(), depth.data_ptr<double>(), threads);
  } else {
    rasterize_impl<float>(verts.data_ptr<double>(), verts.size(0), faces.data_ptr<int64_t>(), faces.size(0),
                          height, width, near, cull_backfaces, tid.data_ptr<int64_t>(),
                          bary.data_ptr<float>(), depth.data_ptr<float>(), threads);
  }
  return {tid, bary, depth};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rasterize_forward", &rasterize_forward, "Z-buffer rasterization to triangle id + barycentrics (CPU)",
        py::arg("verts"), py::arg("faces"), py::arg("height"), py::arg("width"), py::arg("near"),
        py::arg("cull_backfaces"), py::arg("out_double"), py::arg("n_threads") = 1);
}
