// Tile binning for the CPU Gaussian rasterizer (gauss_raster.cpp): exact footprints to 16 px
// tiles, one stable radix sort by depth, tile lists filled in parallel. Each tile's list comes
// out in (depth, id) order, as reference.py sorts (torch.argsort(depths, stable=True)). The fill
// also lists every Gaussian's entries (Bins::pos), so that the backward pass can sum each
// Gaussian's per-tile gradients in a fixed order.
#pragma once

#include "hc_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace hc_gauss_bin {

// The arrays live in storage the caller hands out once the entry count is known (see
// bin_gaussians: the kernel's returned tensors, so nothing is copied afterwards).
struct Bins {
  int64_t n_tiles = 0, entries = 0;
  int64_t* offsets = nullptr;  // (tiles + 1)
  int32_t* ids = nullptr;      // (entries) Gaussian ids per tile, front to back
  // Gaussian-major listing of the same entries, Gaussians in depth order: order[e] is the
  // Gaussian of depth rank e (the binned ones front to back, then the others by index), its
  // entries (its tiles in row-major order) are numbered first[e] .. first[e + 1] - 1, and
  // number j sits at ids[pos[j]]. Numbering in depth order makes the fill below write pos
  // sequentially.
  int64_t* first = nullptr;  // (N + 1)
  int64_t* order = nullptr;  // (N)
  int64_t* pos = nullptr;    // (entries)
};

// Order-preserving unsigned keys of finite floats / doubles (-0 folded onto +0, which
// compares equal to it).
inline uint32_t depth_key(float d) {
  if (d == 0.0f) d = 0.0f;
  uint32_t bits;
  std::memcpy(&bits, &d, sizeof(bits));
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}
inline uint64_t depth_key(double d) {
  if (d == 0.0) d = 0.0;
  uint64_t bits;
  std::memcpy(&bits, &d, sizeof(bits));
  return (bits >> 63) ? ~bits : (bits | (uint64_t(1) << 63));
}

// Ids of the binned Gaussians (rect >= 0) sorted by (depth, id): a stable LSD radix sort of
// ids taken in increasing order, so ties keep the reference's index order.
template <typename T>
std::vector<int32_t> depth_order(const T* depths, const std::vector<int32_t>& rect, int64_t n) {
  using Key = decltype(depth_key(T(0)));
  std::vector<Key> keys, keys_tmp;
  std::vector<int32_t> ids, ids_tmp;
  keys.reserve(n);
  ids.reserve(n);
  for (int64_t i = 0; i < n; ++i)
    if (rect[4 * i] >= 0) {
      keys.push_back(depth_key(depths[i]));
      ids.push_back(int32_t(i));
    }
  const size_t m = ids.size();
  keys_tmp.resize(m);
  ids_tmp.resize(m);
  for (int shift = 0; shift < int(8 * sizeof(Key)); shift += 8) {
    size_t start[257] = {0};
    for (const Key k : keys) ++start[((k >> shift) & 255) + 1];
    if (std::any_of(start + 1, start + 257, [m](size_t c) { return c == m; })) continue;
    for (int b = 0; b < 256; ++b) start[b + 1] += start[b];
    for (size_t j = 0; j < m; ++j) {
      const size_t pos = start[(keys[j] >> shift) & 255]++;
      keys_tmp[pos] = keys[j];
      ids_tmp[pos] = ids[j];
    }
    keys.swap(keys_tmp);
    ids.swap(ids_tmp);
  }
  return ids;
}

// Gaussians to tiles through their exact alpha >= 1/255 extents; each tile's list comes out in
// (depth, id) order because Gaussians are visited in that order. alloc(entries, bins) sets
// bins' five array pointers to storage of the sizes given there.
template <typename T, typename Alloc>
Bins bin_gaussians(const T* means2d, const T* extents, const T* depths, int64_t n, int width,
                   int height, int tile, int n_threads, Alloc&& alloc) {
  const int tiles_x = (width + tile - 1) / tile;
  const int tiles_y = (height + tile - 1) / tile;
  std::vector<int32_t> rect(4 * n, -1);
  hc_par::parallel_for(n, n_threads, 4096, [&](int, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const T ex = extents[2 * i], ey = extents[2 * i + 1];
    if (!(ex > T(0)) || !(ey > T(0))) continue;
    const T mx = means2d[2 * i], my = means2d[2 * i + 1];
    const double c0 = std::max(0.0, std::ceil(double(mx - ex)));
    const double c1 = std::min(double(width - 1), std::floor(double(mx + ex)));
    const double r0 = std::max(0.0, std::ceil(double(my - ey)));
    const double r1 = std::min(double(height - 1), std::floor(double(my + ey)));
    if (!(c0 <= c1) || !(r0 <= r1)) continue;
    rect[4 * i + 0] = int32_t(c0) / tile;
    rect[4 * i + 1] = int32_t(c1) / tile;
    rect[4 * i + 2] = int32_t(r0) / tile;
    rect[4 * i + 3] = int32_t(r1) / tile;
  }
  });
  const std::vector<int32_t> order = depth_order(depths, rect, n);
  const int64_t m = int64_t(order.size());
  const int64_t n_tiles = int64_t(tiles_x) * tiles_y;
  Bins bins;
  bins.n_tiles = n_tiles;
  for (int64_t e = 0; e < m; ++e) {
    const int32_t* r = &rect[4 * order[e]];
    bins.entries += int64_t(r[1] - r[0] + 1) * (r[3] - r[2] + 1);
  }
  alloc(bins.entries, bins);
  bins.first[0] = 0;
  std::vector<int32_t> srect(4 * m);
  for (int64_t e = 0; e < m; ++e) {
    const int64_t g = order[e];
    const int32_t* r = &rect[4 * g];
    std::memcpy(&srect[4 * e], r, 4 * sizeof(int32_t));
    bins.order[e] = g;
    bins.first[e + 1] = bins.first[e] + int64_t(r[1] - r[0] + 1) * (r[3] - r[2] + 1);
  }
  // The Gaussians that cover no tile, after the others (no entries).
  for (int64_t g = 0, e = m; g < n; ++g)
    if (rect[4 * g] < 0) {
      bins.order[e] = g;
      bins.first[e + 1] = bins.first[e];
      ++e;
    }

  // Count and fill in parallel over contiguous chunks of `order`; each chunk writes its own
  // slice of every tile list, so the lists come out exactly as a sequential pass makes them
  // (whichever worker runs a chunk). Twice as many chunks as threads: a worker that runs late
  // leaves its second chunk to the others.
  const int chunks = std::max(1, 2 * n_threads);
  std::vector<int64_t> counts(chunks * n_tiles, 0);
  hc_par::parallel_for(chunks, n_threads, 1, [&](int, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t* cnt = &counts[c * n_tiles];
      for (int64_t e = m * c / chunks; e < m * (c + 1) / chunks; ++e) {
        const int32_t* r = &srect[4 * e];
        for (int ty = r[2]; ty <= r[3]; ++ty)
          for (int tx = r[0]; tx <= r[1]; ++tx) ++cnt[int64_t(ty) * tiles_x + tx];
      }
    }
  });
  int64_t running = 0;
  for (int64_t t = 0; t < n_tiles; ++t) {
    bins.offsets[t] = running;
    for (int c = 0; c < chunks; ++c) {
      const int64_t here = counts[c * n_tiles + t];
      counts[c * n_tiles + t] = running;  // becomes the chunk's write cursor
      running += here;
    }
  }
  bins.offsets[n_tiles] = running;  // == bins.entries
  hc_par::parallel_for(chunks, n_threads, 1, [&](int, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t* cursor = &counts[c * n_tiles];
      for (int64_t e = m * c / chunks; e < m * (c + 1) / chunks; ++e) {
        const int32_t g = order[e];
        const int32_t* r = &srect[4 * e];
        int64_t mine = bins.first[e];
        for (int ty = r[2]; ty <= r[3]; ++ty)
          for (int tx = r[0]; tx <= r[1]; ++tx) {
            const int64_t at = cursor[int64_t(ty) * tiles_x + tx]++;
            bins.ids[at] = g;
            bins.pos[mine++] = at;
          }
      }
    }
  });
  return bins;
}

}  // namespace hc_gauss_bin
