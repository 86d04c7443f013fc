// CUDA compositing kernels sharing gauss_raster_math.h with the CPU kernel.
//
// Status: compile-checked with nvcc (tests/avatar/test_gaussians_edge.py) but not bound to
// Python; on a GPU headcap renders through gsplat. Inputs are already binned: tile_offsets
// (tiles + 1) and ids (front to back per tile), exactly as gauss_raster.cpp produces them, so
// a binding only has to move the binning arrays to the device. Raw pointers + cuda_runtime.h
// only, because CPU torch wheels ship no ATen/cuda headers.
#include <cuda_runtime.h>

#include <cstdint>

#include "gauss_raster_math.h"

namespace hc_gauss {

template <typename T, int C>
__global__ void composite_forward(const int64_t* __restrict__ tile_offsets,
                                  const int32_t* __restrict__ ids,
                                  const T* __restrict__ means2d, const T* __restrict__ conics,
                                  const T* __restrict__ opacities, const T* __restrict__ feats,
                                  int width, int height, int tile, int tiles_x, T* out,
                                  T* final_t, int32_t* last) {
  const int64_t t = blockIdx.x;
  const int px = int(t % tiles_x) * tile + threadIdx.x;
  const int py = int(t / tiles_x) * tile + threadIdx.y;
  if (px >= width || py >= height) return;
  const int64_t begin = tile_offsets[t], count = tile_offsets[t + 1] - begin;
  T acc[C];
  for (int c = 0; c < C; ++c) acc[c] = T(0);
  T trans = T(1);
  int32_t n_used = 0;
  for (int64_t k = 0; k < count; ++k) {
    const int64_t g = ids[begin + k];
    const T dx = T(px) - means2d[2 * g], dy = T(py) - means2d[2 * g + 1];
    T alpha, gauss;
    bool unclamped;
    if (!eval_alpha(conics[3 * g], conics[3 * g + 1], conics[3 * g + 2], opacities[g], dx, dy,
                    alpha, gauss, unclamped))
      continue;
    const T next = trans * (T(1) - alpha);
    if (next <= min_transmittance<T>()) break;
    const T w = alpha * trans;
    for (int c = 0; c < C; ++c) acc[c] += w * feats[g * C + c];
    trans = next;
    n_used = int32_t(k + 1);
  }
  const int64_t pix = int64_t(py) * width + px;
  for (int c = 0; c < C; ++c) out[pix * C + c] = acc[c];
  final_t[pix] = trans;
  last[pix] = n_used;
}

template <typename T, int C>
__global__ void composite_backward(const int64_t* __restrict__ tile_offsets,
                                   const int32_t* __restrict__ ids,
                                   const T* __restrict__ means2d, const T* __restrict__ conics,
                                   const T* __restrict__ opacities, const T* __restrict__ feats,
                                   int width, int height, int tile, int tiles_x,
                                   const T* __restrict__ final_t, const int32_t* __restrict__ last,
                                   const T* __restrict__ g_out, const T* __restrict__ g_alpha_out,
                                   T* g_means2d, T* g_conics, T* g_opacities, T* g_feats) {
  const int64_t t = blockIdx.x;
  const int px = int(t % tiles_x) * tile + threadIdx.x;
  const int py = int(t / tiles_x) * tile + threadIdx.y;
  if (px >= width || py >= height) return;
  const int64_t begin = tile_offsets[t];
  const int64_t pix = int64_t(py) * width + px;
  const int32_t n_used = last[pix];
  const T t_final = final_t[pix];
  const T ga_term = g_alpha_out[pix] * t_final;
  T behind[C];
  for (int c = 0; c < C; ++c) behind[c] = T(0);
  T trans = t_final;
  for (int64_t k = int64_t(n_used) - 1; k >= 0; --k) {
    const int64_t g = ids[begin + k];
    const T a = conics[3 * g], b = conics[3 * g + 1], cc = conics[3 * g + 2];
    const T o = opacities[g];
    const T dx = T(px) - means2d[2 * g], dy = T(py) - means2d[2 * g + 1];
    T alpha, gauss;
    bool unclamped;
    if (!eval_alpha(a, b, cc, o, dx, dy, alpha, gauss, unclamped)) continue;
    const T one_minus = T(1) - alpha;
    const T t_before = trans / one_minus;
    const T w = alpha * t_before;
    T g_alpha = ga_term / one_minus;
    for (int c = 0; c < C; ++c) {
      const T f = feats[g * C + c];
      const T go = g_out[pix * C + c];
      g_alpha += go * (f * t_before - behind[c] / one_minus);
      atomicAdd(&g_feats[g * C + c], go * w);
      behind[c] += f * w;
    }
    T gm[2] = {T(0), T(0)}, gc[3] = {T(0), T(0), T(0)}, gopa = T(0);
    alpha_backward(a, b, cc, o, dx, dy, gauss, unclamped, g_alpha, gm, gc, &gopa);
    atomicAdd(&g_means2d[2 * g], gm[0]);
    atomicAdd(&g_means2d[2 * g + 1], gm[1]);
    for (int j = 0; j < 3; ++j) atomicAdd(&g_conics[3 * g + j], gc[j]);
    atomicAdd(&g_opacities[g], gopa);
    trans = t_before;
  }
}

}  // namespace hc_gauss

// C entry points for a future binding; all pointers are device pointers, 4 channels
// (RGB + depth) as rasterize_gaussians composites them.
extern "C" cudaError_t hc_gauss_composite_forward_f32(
    const int64_t* tile_offsets, const int32_t* ids, const float* means2d, const float* conics,
    const float* opacities, const float* feats, int width, int height, int tile, float* out,
    float* final_t, int32_t* last, cudaStream_t stream) {
  const int tiles_x = (width + tile - 1) / tile, tiles_y = (height + tile - 1) / tile;
  if (tiles_x * tiles_y == 0) return cudaSuccess;
  hc_gauss::composite_forward<float, 4><<<tiles_x * tiles_y, dim3(tile, tile), 0, stream>>>(
      tile_offsets, ids, means2d, conics, opacities, feats, width, height, tile, tiles_x, out,
      final_t, last);
  return cudaGetLastError();
}

extern "C" cudaError_t hc_gauss_composite_backward_f32(
    const int64_t* tile_offsets, const int32_t* ids, const float* means2d, const float* conics,
    const float* opacities, const float* feats, int width, int height, int tile,
    const float* final_t, const int32_t* last, const float* g_out, const float* g_alpha_out,
    float* g_means2d, float* g_conics, float* g_opacities, float* g_feats, cudaStream_t stream) {
  const int tiles_x = (width + tile - 1) / tile, tiles_y = (height + tile - 1) / tile;
  if (tiles_x * tiles_y == 0) return cudaSuccess;
  hc_gauss::composite_backward<float, 4><<<tiles_x * tiles_y, dim3(tile, tile), 0, stream>>>(
      tile_offsets, ids, means2d, conics, opacities, feats, width, height, tile, tiles_x,
      final_t, last, g_out, g_alpha_out, g_means2d, g_conics, g_opacities, g_feats);
  return cudaGetLastError();
}
