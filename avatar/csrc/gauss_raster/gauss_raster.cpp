// CPU Gaussian splat rasterizer: tile binning (radix depth sort, parallel list fill), front-to-
// back compositing with early termination, and the analytic backward pass. It takes screen-
// space Gaussians (means2d, conics, opacities, features) and composites features with pixel
// centres at integer coordinates; projection + colour run in gauss_raster_project.cpp (bound
// here too). The spec is avatar/gaussians/reference.py::rasterize_reference.
#include <torch/extension.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include <type_traits>
#include <utility>
#include <vector>

#include "gauss_raster_bin.h"
#include "gauss_raster_bindings.h"
#include "gauss_raster_math.h"
#include "gauss_raster_simd.h"
#include "hc_parallel.h"

namespace {

using hc_gauss::min_transmittance;

constexpr int kMaxChannels = 64;
// Packed per-Gaussian record: mx, my, a, b, c, opacity, power cut, the span constants b / a,
// -2 cut / a, (a c - b^2) / a^2 and the half height in rows (see pack_span), then the C features.
constexpr int kHeader = 11;

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

// The span constants in the record (p[7..10], in T) for the float row intervals; the half
// height is widened by 1e-5 relative + 1e-3 rows so that row_range stays a superset in float.
template <typename T>
inline void pack_span_record(const double* s, T* p) {
  p[7] = T(s[2]);
  p[8] = T(s[3]);
  p[9] = T(s[4]);
  p[10] = T(s[5] * (1.0 + 1e-5) + 1e-3);
}

// Floats (doubles) from one record to the next: the record rounded up to whole cache lines.
template <typename T>
inline int rec_stride(int channels) {
  constexpr int line = int(64 / sizeof(T));
  return (kHeader + channels + line - 1) / line * line;
}

// A buffer of a few MB or more read at random (the records, read in depth order per tile; the
// backward's per-entry gradients, summed Gaussian by Gaussian): mapped once per calling thread
// and kept between calls (grown when a call needs more, never faulted in again), 2 MB aligned
// and advised as huge pages where the OS offers them (Linux THP, `madvise` mode included), so
// that those reads do not miss the TLB on almost every access. Contents are not kept.
class HugeBuffer {
 public:
  HugeBuffer() = default;
  HugeBuffer(const HugeBuffer&) = delete;
  HugeBuffer& operator=(const HugeBuffer&) = delete;
  ~HugeBuffer() { release(); }
  // At least `bytes` bytes, 64-byte aligned (2 MB where mapped).
  void* get(size_t bytes) {
    bytes = std::max<size_t>(bytes, 64);
    if (bytes <= cap_ && bytes * 4 + kHuge >= cap_) return ptr_;  // shrink after far larger calls
    release();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const size_t size = (bytes + kHuge - 1) / kHuge * kHuge;
    // Over-map by 2 MB and use the aligned part (the THP unit).
    void* raw = mmap(nullptr, size + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (raw != MAP_FAILED) {
      const uintptr_t base = (reinterpret_cast<uintptr_t>(raw) + kHuge - 1) / kHuge * kHuge;
      madvise(reinterpret_cast<void*>(base), size, MADV_HUGEPAGE);  // advice: failure is harmless
      map_ = raw;
      map_size_ = size + kHuge;
      ptr_ = reinterpret_cast<void*>(base);
      cap_ = size;
      return ptr_;
    }
#endif
    const size_t rounded = (bytes + 63) / 64 * 64;
    ptr_ = std::aligned_alloc(64, rounded);
    if (!ptr_) throw std::bad_alloc();
    cap_ = rounded;
    return ptr_;
  }

 private:
  static constexpr size_t kHuge = size_t(2) << 20;
  void release() {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (map_) {
      munmap(map_, map_size_);
      map_ = nullptr;
      ptr_ = nullptr;
    }
#endif
    std::free(ptr_);
    ptr_ = nullptr;
    cap_ = 0;
  }
  void* map_ = nullptr;
  size_t map_size_ = 0;
  void* ptr_ = nullptr;
  size_t cap_ = 0;
};

// Records of every binned Gaussian, computed once per pass; tiles read them in place through
// their id lists. (The double span constants, needed only by the rare Gaussians too large for
// float intervals, are recomputed from the record there: pack_span.)
template <typename T>
struct Packed {
  // (N, rec_stride(C)), 64-byte aligned: with C = 4 floats (16 with the padding) every record
  // is one cache line, fetched by one miss instead of two for a record across a line boundary.
  // It lives in the calling thread's HugeBuffer (valid until that thread packs again).
  T* rec = nullptr;
};

// What a thread's record buffer holds: the pack with this number (numbers are unique across
// threads), of these inputs. A backward pass run on the thread that ran its forward pass, with
// no other pack in between (autograd's usual order: forward, loss, backward), reads the
// forward's records instead of packing them again; any other order packs again.
struct PackTag {
  uint64_t number = 0;
  int64_t n = -1;
  int channels = 0;
  const void* inputs[5] = {};
  void* rec = nullptr;
};

inline uint64_t next_pack_number() {
  static std::atomic<uint64_t> counter{0};
  return counter.fetch_add(1, std::memory_order_relaxed) + 1;
}

// Packs the records into the calling thread's buffer, or, when `reuse` names the pack that
// buffer still holds (same inputs), keeps them. Returns the number of the pack pk now reads.
template <typename T>
uint64_t pack_all(int64_t n, const T* means2d, const T* conics, const T* opacities,
                  const T* feats, const T* extents, int channels, int n_threads, Packed<T>& pk,
                  uint64_t reuse = 0) {
  thread_local HugeBuffer store;  // one per calling thread, kept between calls
  thread_local PackTag tag;
  const void* inputs[5] = {means2d, conics, opacities, feats, extents};
  if (reuse != 0 && tag.number == reuse && tag.n == n && tag.channels == channels &&
      std::equal(inputs, inputs + 5, tag.inputs)) {
    pk.rec = static_cast<T*>(tag.rec);
    return reuse;
  }
  const int stride = rec_stride<T>(channels);
  const size_t bytes = (size_t(std::max<int64_t>(1, n)) * stride * sizeof(T) + 63) / 64 * 64;
  tag.number = 0;  // the buffer is being overwritten
  pk.rec = static_cast<T*>(store.get(bytes));
  hc_par::parallel_for(n, n_threads, 4096, [&](int, int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      if (!(extents[2 * g] > T(0)) || !(extents[2 * g + 1] > T(0))) continue;  // never binned
      pack_record(g, means2d, conics, opacities, feats, channels, &pk.rec[g * stride]);
      double span[kSpan];
      pack_span(&pk.rec[g * stride], span);
      pack_span_record(span, &pk.rec[g * stride]);
    }
  });
  tag.number = next_pack_number();
  tag.n = n;
  tag.channels = channels;
  std::copy(inputs, inputs + 5, tag.inputs);
  tag.rec = pk.rec;
  return tag.number;
}

// Gaussians ahead in a tile's list whose records are prefetched.
constexpr int64_t kPrefetch = 4;

template <typename T>
inline void prefetch_record(const T* p, int stride) {
  __builtin_prefetch(p);
  if (stride * sizeof(T) > 64) __builtin_prefetch(p + stride - 1);  // records past one line
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

// The float pixel intervals [a, b] of kLanes consecutive tile rows r, r+1, ... of a Gaussian's
// footprint (centre cx, cy relative to the tile, row form slope, q, w), widened as the comment
// of row_intervals says and clamped to [0, row_width); a row is missed where rad < 0 or a > b.
struct LaneRows {
  hc_simd::f8 rad;
  hc_simd::i8 a, b;
};

// The same rows' intervals before rounding: lo clamped to [0, row_width] (NaN -> 0), hi to
// [-1, row_width - 1]; the pixels are ceil(lo) .. floor(hi).
struct LaneSpan {
  hc_simd::f8 rad, lo, hi;
};

inline LaneSpan lane_span(int r, float cx, float cy, float slope, float q, float w,
                          int row_width) {
  using namespace hc_simd;
  const f8 zero = splat<f8>(0.0f), last = splat<f8>(float(row_width - 1));
  const f8 end = splat<f8>(float(row_width)), minus1 = splat<f8>(-1.0f);
  const f8 dy = (iota<float>() + float(r)) - cy;
  const f8 rad = q - w * dy * dy;
  const f8 half = sqrt_lanes(rad > 0.0f ? rad : zero);
  const f8 centre = cx - slope * dy;
  const f8 tol = 1e-2f + 1e-5f * ((centre < 0.0f ? -centre : centre) + half);
  f8 lo = centre - half - tol, hi = centre + half + tol;
  lo = lo > 0.0f ? lo : zero;  // clamp to [0, row_width] before converting (NaN -> 0)
  lo = lo < end ? lo : end;
  hi = hi < last ? hi : last;
  hi = hi > -1.0f ? hi : minus1;
  return {rad, lo, hi};
}

inline LaneRows lane_rows(int r, float cx, float cy, float slope, float q, float w, int row_width) {
  using namespace hc_simd;
  const LaneSpan s = lane_span(r, cx, cy, slope, q, w, row_width);
  const f8 lo = s.lo, hi = s.hi;
  i8 a = __builtin_convertvector(lo, i8), b = __builtin_convertvector(hi, i8);
  a -= lo > __builtin_convertvector(a, f8);  // ceil (masks are -1 where true)
  b += hi < __builtin_convertvector(b, f8);  // floor
  return {s.rad, a, b};
}

// row_interval for the tile rows [r0, r1] of one Gaussian at once, kLanes rows per step in float
// (one vector sqrt instead of a double sqrt, rounding and branches per row): j0[r - y0] and
// j1[r - y0], or j0 > j1 where the row is missed. The interval is widened by 1e-2 px + 1e-5 of
// its size, far more than float rounding moves it (~1e-6 relative), so it stays a superset of
// the pixels hc_gauss::counts accepts; extra pixels are masked in the windows, never composited.
// Gaussians too large or too far off the tile for float fall back to the double row_interval.
// j0 and j1 must hold r1 - y0 + kLanes entries.
template <typename T>
inline void row_intervals(const T* p, int x0, int y0, int r0, int r1, int row_width,
                          int32_t* j0, int32_t* j1) {
  using namespace hc_simd;
  const double cxd = double(p[0]) - x0, cyd = double(p[1]) - y0;
  if (!(std::fabs(cxd) < 1e6 && std::fabs(cyd) < 1e6 && std::fabs(double(p[7])) < 1e6 &&
        double(p[8]) < 1e12 && std::fabs(double(p[9])) < 1e12)) {
    double s[kSpan];
    pack_span(p, s);  // the same values pack_all computed from this record
    for (int py = r0; py <= r1; ++py) {
      int a, b;
      if (!row_interval(s, py, x0, row_width, a, b)) a = 1, b = 0;
      j0[py - y0] = a;
      j1[py - y0] = b;
    }
    return;
  }
  const float cx = float(cxd), cy = float(cyd), slope = float(p[7]), q = float(p[8]),
              w = float(p[9]);
  for (int r = r0 - y0; r <= r1 - y0; r += kLanes) {
    const LaneRows lanes = lane_rows(r, cx, cy, slope, q, w, row_width);
    const f8 rad = lanes.rad;
    const i8 a = lanes.a, b = lanes.b;
    const i8 ok = (rad >= 0.0f) & (a <= b);
    store(j0 + r, ok ? a : splat<i8>(1));
    store(j1 + r, ok ? b : splat<i8>(0));
  }
}

// A tile is walked in windows of kLanes pixels, each one SIMD vector (gauss_raster_simd.h):
// window (r, c) holds pixels c * kLanes .. c * kLanes + kLanes - 1 of tile row r. Per-tile
// buffers use rows of row_stride pixels (a multiple of kLanes, >= tile), so windows never leave
// them; pixels past the image or the tile's edge are marked done (forward) or used by no
// Gaussian (backward) and stay out of every result. Windows are numbered r * wpr + c, wpr =
// the windows per row rounded up to a power of two, and sets of windows are bitsets of that
// numbering: a Gaussian's windows in a tile (from its row intervals) are intersected with the
// windows still live (a pixel not yet done in the forward, a pixel whose list reaches this
// Gaussian in the backward), and only the set bits are visited: no per-row control, no
// per-span branches, one loop over set bits per Gaussian and tile.
using hc_simd::kLanes;
// Windows of one Gaussian are composited four per step (forward_windows / backward_windows
// with N = 4, their statements interleaved; then 3, 2 or 1 for the rest): the windows' exp
// chains overlap. On Zen 4 (16 lanes) two per step were ~10% faster than one, four another
// ~10-15% faster than two; eight were slower than four (registers spill).
constexpr bool kPairWindows = true;
constexpr bool kQuadWindows = true;

inline int row_stride_for(int tile) {
  return std::max(kLanes, (tile + kLanes - 1) / kLanes * kLanes);
}

struct WindowGrid {
  int rs;     // row stride in pixels
  int shift;  // log2 of the windows per row (rounded up to a power of two)
  int words;  // 64-bit words of a window bitset
  explicit WindowGrid(int tile) : rs(row_stride_for(tile)), shift(0) {
    while ((1 << shift) < rs / kLanes) ++shift;
    words = int((int64_t(tile) << shift) + 63) / 64;
  }
};

// Sets bits [from, to] (inclusive) of a bitset.
inline void set_bits(uint64_t* bits, int from, int to) {
  while (from <= to) {
    const int lo = from & 63, hi = std::min(63, lo + (to - from));
    bits[from >> 6] |= ((uint64_t(2) << hi) - 1) & (~uint64_t(0) << lo);  // 2 << 63 wraps to 0
    from += hi - lo + 1;
  }
}

// The windows of tile rows [r0, r1] (image rows) that the row intervals j0 / j1 (indexed by
// tile row, j0 > j1 where missed) reach, into the zeroed bitset `bits`.
inline void span_windows(const WindowGrid& g, int y0, int r0, int r1, const int32_t* j0,
                         const int32_t* j1, uint64_t* bits) {
  constexpr int lane_shift = hc_simd::kLaneShift;
  for (int r = r0 - y0; r <= r1 - y0; ++r)
    if (j0[r] <= j1[r])
      set_bits(bits, (r << g.shift) + (j0[r] >> lane_shift), (r << g.shift) + (j1[r] >> lane_shift));
}

// Rows of the tile [y0, y1) that a Gaussian's cut ellipse may reach (its record p: the mean's
// row +- the widened half height), as [r0, r1]; false if none.
template <typename T>
inline bool row_range(const T* p, int y0, int y1, int& r0, int& r1) {
  const double lo = double(p[1]) - double(p[10]), hi = double(p[1]) + double(p[10]);
  if (hi < double(y0) || lo > double(y1 - 1)) return false;
  r0 = lo <= double(y0) ? y0 : int(std::ceil(lo));
  r1 = hi >= double(y1 - 1) ? y1 - 1 : int(std::floor(hi));
  return r0 <= r1;
}

// Grids whose window bitset fits 32 bits with the tile's rows padded to whole vectors of rows
// (the default 16 px tile: 16 rows x 2 windows) get their Gaussian windows from
// row_window_bits; larger tiles from row_intervals + span_windows.
inline bool small_grid(const WindowGrid& g, int tile) {
  return g.words == 1 && (((tile + kLanes - 1) / kLanes * kLanes) << g.shift) <= 32;
}

// row_intervals and span_windows in one pass for small grids: the tile's rows [0, rows) in
// fixed steps of kLanes rows (rows outside [r0 - y0, r1 - y0] masked, no per-row branch), each
// lane's window range turned into bits (r << shift) + c and the lanes OR-ed together. The
// interval arithmetic is row_intervals' (same superset). Returns false, bits untouched, for
// Gaussians too large or too far off the tile for float (the caller takes the double path).
template <typename T>
inline bool row_window_bits(const T* p, int x0, int y0, int r0, int r1, int rows,
                            int row_width, int shift, uint32_t& bits) {
  using namespace hc_simd;
  const double cxd = double(p[0]) - x0, cyd = double(p[1]) - y0;
  if (!(std::fabs(cxd) < 1e6 && std::fabs(cyd) < 1e6 && std::fabs(double(p[7])) < 1e6 &&
        double(p[8]) < 1e12 && std::fabs(double(p[9])) < 1e12))
    return false;
  constexpr int lane_shift = hc_simd::kLaneShift;
  const float cx = float(cxd), cy = float(cyd), slope = float(p[7]), q = float(p[8]),
              w = float(p[9]);
#if defined(__AVX512F__)
  if (shift == 0 && rows <= kLanes) {
    // One window per tile row (16 lanes, 16 px tiles): row r's bit is set where its interval
    // holds a pixel, ceil(lo) <= floor(hi), the same test as below without the conversions to
    // int and the per-lane window ranges (a third of the instructions).
    const LaneSpan sp = lane_span(0, cx, cy, slope, q, w, row_width);
    const __m512 a = _mm512_roundscale_ps((__m512)sp.lo, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    const __m512 b = _mm512_roundscale_ps((__m512)sp.hi, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const uint32_t ok = _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ) &
                        _mm512_cmp_ps_mask((__m512)sp.rad, _mm512_setzero_ps(), _CMP_GE_OQ);
    bits = ok & ((uint32_t(2) << (r1 - y0)) - (uint32_t(1) << (r0 - y0)));
    return true;
  }
#endif
  const i8 lo_row = splat<i8>(r0 - y0), hi_row = splat<i8>(r1 - y0);
  u8 acc = splat<u8>(0u);
  for (int r = 0; r < rows; r += kLanes) {
    const i8 row = iota_int() + r;
    const LaneRows lanes = lane_rows(r, cx, cy, slope, q, w, row_width);
    const f8 rad = lanes.rad;
    const i8 a = lanes.a, b = lanes.b;
    const i8 ok = (rad >= 0.0f) & (a <= b) & (row >= lo_row) & (row <= hi_row);
    const u8 wl = (u8)((ok ? a : splat<i8>(0)) >> lane_shift);
    const u8 wh = (u8)((ok ? b : splat<i8>(0)) >> lane_shift);
    const u8 span = (splat<u8>(2u) << wh) - (splat<u8>(1u) << wl);
    acc |= (span << (u8)(row << shift)) & (u8)ok;
  }
  bits = or_lanes(acc);
  return true;
}

// Small grids (small_grid): every window of a Gaussian (record p) in the tile at (x0, y0) with
// `rows` rows, as one 32-bit set (0: none); cand (one word) is scratch.
template <typename T>
inline uint32_t small_grid_windows(const T* p, const WindowGrid& grid, int x0, int y0, int rows,
                                   int row_width, int32_t* j_lo, int32_t* j_hi, uint64_t* cand) {
  int r0, r1;
  if (!row_range(p, y0, y0 + rows, r0, r1)) return 0;
  uint32_t bits;
  if (row_window_bits(p, x0, y0, r0, r1, rows, row_width, grid.shift, bits)) return bits;
  row_intervals(p, x0, y0, r0, r1, row_width, j_lo, j_hi);
  cand[0] = 0;
  span_windows(grid, y0, r0, r1, j_lo, j_hi, cand);
  return uint32_t(cand[0]);
}

// The windows of a Gaussian (record p) in the tile at (x0, y0) with `rows` rows:
// into cand (grid.words words), intersected with `live`; returns whether any is left.
template <typename T>
inline bool gaussian_windows(const T* p, const WindowGrid& grid, bool small,
                             int x0, int y0, int rows, int row_width, int32_t* j_lo,
                             int32_t* j_hi, const uint64_t* live, uint64_t* cand) {
  if (small) {
    cand[0] = small_grid_windows(p, grid, x0, y0, rows, row_width, j_lo, j_hi, cand) & live[0];
    return cand[0] != 0;
  }
  int r0, r1;
  if (!row_range(p, y0, y0 + rows, r0, r1)) return false;
  row_intervals(p, x0, y0, r0, r1, row_width, j_lo, j_hi);
  std::fill(cand, cand + grid.words, 0);
  span_windows(grid, y0, r0, r1, j_lo, j_hi, cand);
  bool any = false;
  for (int wd = 0; wd < grid.words; ++wd) any |= (cand[wd] &= live[wd]) != 0;
  return any;
}

// eval_alpha on N windows of kLanes pixels (window j: pixels xs[j] + i of a row, dy[j] below
// the mean): dx, exp(power), the unclamped alpha (raw) and alpha, and the int32 mask of lanes
// where the Gaussian counts (power <= 0 and alpha >= 1/255). exp sees the power clamped to
// [-87, 0] (fast_expf's range; a positive power is rounding on a thin ellipse): that only
// changes lanes that never count, and keeps their values finite, so that multiplying them by a
// zero gradient gives zero. Written statement by statement across the windows so that their
// independent chains (power -> exp -> alpha) can overlap; each window's values are the same as
// one window alone.
template <int N, typename T, typename V = typename hc_simd::Vec<T>::type>
inline void window_alpha_n(const T* p, const int* xs, const T* dy, V* dx, V* gauss, V* raw,
                           V* alpha, hc_simd::i8* counts) {
  using hc_simd::splat;
  V power[N], low[N];
  // hc_gauss::gauss_power as a quadratic in dx with the row's terms folded into scalars:
  // -a/2 dx^2 - b dy dx - c/2 dy^2, two FMAs per window (rounds within an ulp of the reference's
  // order).
  const T half_a = T(-0.5) * p[2];
  for (int j = 0; j < N; ++j) dx[j] = hc_simd::iota<T>() + (T(xs[j]) - p[0]);
  for (int j = 0; j < N; ++j) {
    const T lin = -p[3] * dy[j], con = T(-0.5) * p[4] * dy[j] * dy[j];
    power[j] = (half_a * dx[j] + lin) * dx[j] + con;
  }
  for (int j = 0; j < N; ++j) low[j] = power[j] >= T(-87) ? power[j] : splat<V>(T(-87));
  for (int j = 0; j < N; ++j) low[j] = low[j] <= T(0) ? low[j] : splat<V>(T(0));
  hc_simd::exp_lanes_n<N>(low, gauss);
  for (int j = 0; j < N; ++j) raw[j] = p[5] * gauss[j];
  for (int j = 0; j < N; ++j)
    alpha[j] = raw[j] <= hc_gauss::max_alpha<T>() ? raw[j] : splat<V>(hc_gauss::max_alpha<T>());
  for (int j = 0; j < N; ++j)
    counts[j] = hc_simd::to_int_mask((power[j] <= T(0)) & (alpha[j] >= hc_gauss::min_alpha<T>()));
}

// N forward windows of one Gaussian (N = 1 to 4, distinct windows): same arithmetic as the
// per-pixel loop in reference.py, written with selects; a pixel whose transmittance would drop
// to 1e-4 is done and ignores the rest. l[j] is window j's first pixel in the tile buffers;
// done_all[j] says whether every pixel of window j is done afterwards.
template <typename T, int CT, int N>
inline void forward_windows(const T* p, int C, const int* xs, const T* dy, const int64_t* l,
                            int32_t used_mark, T* trans, int32_t* n_used, int32_t* done, T* acc,
                            int64_t plane, bool* done_all) {
  using namespace hc_simd;
  using V = typename Vec<T>::type;
  using M = typename Vec<T>::mask;
  V dx[N], gauss[N], raw[N], alpha[N];
  i8 counts[N];
  window_alpha_n<N>(p, xs, dy, dx, gauss, raw, alpha, counts);
  V weight[N];
  for (int j = 0; j < N; ++j) {
    const i8 dn_v = load<i8>(done + l[j]);
    const i8 valid_i = counts[j] & ~dn_v;
    const M valid = from_int_mask<M>(valid_i);
    const V tr_v = load<V>(trans + l[j]);
    const V next = tr_v * (T(1) - alpha[j]);
    const M term = valid & (next <= min_transmittance<T>());
    const M use = valid & ~term;
    weight[j] = use ? alpha[j] * tr_v : splat<V>(T(0));
    store(trans + l[j], use ? next : tr_v);
    const i8 dn_new = dn_v | to_int_mask(term);
    store(n_used + l[j], to_int_mask(use) ? splat<i8>(used_mark) : load<i8>(n_used + l[j]));
    store(done + l[j], dn_new);
    done_all[j] = all_set(dn_new);
  }
  const int channels = CT > 0 ? CT : C;
  for (int c = 0; c < channels; ++c) {
    const T f = p[kHeader + c];
    for (int j = 0; j < N; ++j) {
      T* a = acc + c * plane + l[j];
      store(a, load<V>(a) + weight[j] * f);  // exact: +0 where unused
    }
  }
}

// Splat order: the tile's Gaussians are visited front to back, each touching only the windows
// its ellipse reaches; every pixel keeps its own transmittance and stops (done) exactly where
// a per-pixel loop would break.
template <typename T, int CT>
void forward_tiles(const Bins& bins, int64_t n, const T* means2d, const T* conics,
                   const T* opacities, const T* feats, const T* extents, int channels, int width,
                   int height, int tile, int n_threads, T* out, T* final_t, int32_t* last,
                   uint32_t* masks, int64_t* pack_number) {
  const int C = CT > 0 ? CT : channels;
  const int stride = rec_stride<T>(C);
  Packed<T> pk;
  *pack_number = int64_t(pack_all(n, means2d, conics, opacities, feats, extents, C, n_threads, pk));
  const int tiles_x = (width + tile - 1) / tile;
  const int64_t n_tiles = bins.n_tiles;
  const WindowGrid grid(tile);
  const bool small = small_grid(grid, tile);
  const int rs = grid.rs;
  const int64_t area = int64_t(rs) * tile;
  // Tiles go to workers one at a time from a shared counter (hc_parallel.h).
  std::atomic<int64_t> next_tile{0};
  hc_par::run_workers(n_threads, [&](int) {
    // Per-tile pixel state, channels planar so the windows vectorise over pixels.
    std::vector<T> trans(area), acc(area * C);
    std::vector<int32_t> n_used(area), done(area);
    std::vector<int32_t> j_lo(tile + kLanes), j_hi(tile + kLanes);
    std::vector<uint64_t> live(grid.words), cand(grid.words);
    for (int64_t t; (t = next_tile.fetch_add(1, std::memory_order_relaxed)) < n_tiles;) {
      const int64_t begin = bins.offsets[t], count = bins.offsets[t + 1] - begin;
      if (count == 0) continue;
      const int x0 = int(t % tiles_x) * tile, y0 = int(t / tiles_x) * tile;
      const int x1 = std::min(width, x0 + tile), y1 = std::min(height, y0 + tile);
      const int row_width = x1 - x0;
      std::fill(trans.begin(), trans.end(), T(1));
      std::fill(acc.begin(), acc.end(), T(0));
      std::fill(n_used.begin(), n_used.end(), 0);
      std::fill(live.begin(), live.end(), 0);
      for (int r = 0; r < tile; ++r)
        for (int j = 0; j < rs; ++j) done[int64_t(r) * rs + j] = (r < y1 - y0 && j < row_width) ? 0 : -1;
      for (int r = 0; r < y1 - y0; ++r)
        set_bits(live.data(), r << grid.shift, (r << grid.shift) + (row_width - 1) / kLanes);
      const int32_t* tile_ids = &bins.ids[begin];
      for (int64_t k = 0; k < count; ++k) {
        // Records are read in place (a copy per tile cost more than it saved); the ones a few
        // steps ahead are prefetched.
        if (k + kPrefetch < count) prefetch_record(&pk.rec[int64_t(tile_ids[k + kPrefetch]) * stride], stride);
        const int64_t g = tile_ids[k];
        const T* p = &pk.rec[g * stride];
        if (masks) {  // small grids: the windows kept for the backward pass, then live ones
          const uint32_t bits = small_grid_windows(p, grid, x0, y0, y1 - y0, row_width,
                                                   j_lo.data(), j_hi.data(), cand.data());
          masks[begin + k] = bits;
          cand[0] = bits & live[0];
          if (!cand[0]) continue;
        } else if (!gaussian_windows(p, grid, small, x0, y0, y1 - y0, row_width, j_lo.data(),
                                     j_hi.data(), live.data(), cand.data())) {
          continue;
        }
        const int32_t used_mark = int32_t(k + 1);
        bool any_live = false;
        for (int wd = 0; wd < grid.words; ++wd) {
          // Four windows per step (forward_windows), then three, two or one for the rest:
          // separate loops, so that each step keeps its windows' statements interleaved.
          const auto step = [&](auto n_tag, uint64_t& m) {
            constexpr int N = decltype(n_tag)::value;
            int b[N], xs[N];
            T dy[N];
            int64_t l[N];
            bool done_all[N];
            for (int j = 0; j < N; ++j) {
              b[j] = __builtin_ctzll(m);
              m &= m - 1;
              const int w = wd * 64 + b[j];
              const int r = w >> grid.shift;
              xs[j] = (w & ((1 << grid.shift) - 1)) * kLanes;
              l[j] = int64_t(r) * rs + xs[j];
              xs[j] += x0;
              dy[j] = T(y0 + r) - p[1];
            }
            forward_windows<T, CT, N>(p, C, xs, dy, l, used_mark, trans.data(), n_used.data(),
                                      done.data(), acc.data(), area, done_all);
            for (int j = 0; j < N; ++j)
              if (done_all[j]) live[wd] &= ~(uint64_t(1) << b[j]);
          };
          uint64_t m = cand[wd];
          if (kQuadWindows)
            while (__builtin_popcountll(m) >= 4) step(std::integral_constant<int, 4>{}, m);
          if (__builtin_popcountll(m) == 3) step(std::integral_constant<int, 3>{}, m);
          if (kPairWindows)
            while (m & (m - 1)) step(std::integral_constant<int, 2>{}, m);
          if (m) step(std::integral_constant<int, 1>{}, m);
          any_live |= live[wd] != 0;
        }
        if (!any_live) break;
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
  });
}

// Lane accumulators of the backward's per-entry moments (backward_windows, finish_moments), in
// the first six of the entry's 6 + C gradient slots.
constexpr int kMomQ = 0, kMomQx = 1, kMomQxx = 2, kMomQy = 3, kMomQxy = 4, kMomQyy = 5;

// N backward windows of Gaussian k (its record p; N = 1 to 4, distinct windows), statement by
// statement across the windows as in window_alpha_n: undoes its compositing step at each pixel
// that used it and accumulates into the lane sums g (6 + C vectors: the six moments kMom*,
// which finish_moments turns into the mean, conic and opacity gradients once per entry, then
// the features), window 0's contribution first, then window 1's ... (the same sums, in the
// same order, as one window at a time). l[j] is window j's first pixel.
template <typename T, int CT, int N, typename V = typename hc_simd::Vec<T>::type>
inline void backward_windows(const T* p, int C, const int* xs, const T* dy, const int64_t* l,
                             int32_t k32, T* trans, const int32_t* last_l, const T* g_t,
                             T* behind, const T* g_pix, int64_t plane, V* g) {
  using namespace hc_simd;
  using M = typename Vec<T>::mask;
  V dx[N], gauss[N], raw[N], alpha[N];
  i8 counts[N];
  window_alpha_n<N>(p, xs, dy, dx, gauss, raw, alpha, counts);
  M use[N], grad_on[N];
  V inv[N], tr_v[N], t_before[N], weight[N], g_alpha[N];
  for (int j = 0; j < N; ++j) {
    use[j] = from_int_mask<M>(counts[j] & (k32 < load<i8>(last_l + l[j])));
    // alpha = opacity * exp(power) while unclamped; zero gradient where clamped.
    grad_on[j] = use[j] & (raw[j] <= hc_gauss::max_alpha<T>());
  }
  for (int j = 0; j < N; ++j) inv[j] = T(1) / (T(1) - alpha[j]);
  for (int j = 0; j < N; ++j) {
    tr_v[j] = load<V>(trans + l[j]);
    t_before[j] = tr_v[j] * inv[j];
    weight[j] = use[j] ? alpha[j] * t_before[j] : splat<V>(T(0));
    g_alpha[j] = load<V>(g_t + l[j]) * inv[j];
  }
  // dL/dalpha_i = sum_c g_c (f_c T_before - behind_c / (1 - alpha)) with behind_c the colour
  // composited behind this Gaussian; the tile keeps only behind = sum_c g_c behind_c per pixel
  // (g_c, the pixel's output gradient, is fixed), which each step raises by weight * gf,
  // gf = sum_c g_c f_c.
  V gf[N];
  for (int j = 0; j < N; ++j) gf[j] = splat<V>(T(0));
  const int channels = CT > 0 ? CT : C;
  for (int c = 0; c < channels; ++c) {
    const T f = p[kHeader + c];
    for (int j = 0; j < N; ++j) {
      const V go = load<V>(g_pix + c * plane + l[j]);
      gf[j] += go * f;
      g[6 + c] += use[j] ? go * weight[j] : splat<V>(T(0));  // a NaN gradient elsewhere stays
    }
  }
  for (int j = 0; j < N; ++j) {
    const V bh_v = load<V>(behind + l[j]);
    g_alpha[j] += gf[j] * t_before[j] - bh_v * inv[j];
    store(behind + l[j], bh_v + weight[j] * gf[j]);  // + 0 where unused (NaN only where gf is)
  }
  for (int j = 0; j < N; ++j) {
    // d alpha / d power = opacity * gauss: the per-pixel factor without the opacity (a
    // constant of the entry, applied once in finish_moments), and its moments in dx and dy.
    const V q = gauss[j] * (grad_on[j] ? g_alpha[j] : splat<V>(T(0)));
    const V qx = dx[j] * q;
    g[kMomQ] += q;
    g[kMomQx] += qx;
    g[kMomQxx] += dx[j] * qx;
    g[kMomQy] += dy[j] * q;
    g[kMomQxy] += dy[j] * qx;
    g[kMomQyy] += (dy[j] * dy[j]) * q;
    store(trans + l[j], use[j] ? t_before[j] : tr_v[j]);
  }
}

// The backward's per-entry lane sums of the moments (kMom*: sum q, q dx, q dx^2, q dy, q dx dy,
// q dy^2 with q = gauss * dL/dalpha) turned in place into the entry's gradients: mean x, y,
// conic a, b, c, opacity (hc_gauss::alpha_backward_add, with d power / d conic = -dx^2 / 2,
// -dx dy, -dy^2 / 2, d power / d mean = (a dx + b dy, b dx + c dy), summed over pixels first).
template <typename T>
inline void finish_moments(const T* p, T* v) {
  const T q = v[kMomQ], o = p[5];
  const T sx = o * v[kMomQx], sxx = o * v[kMomQxx], sy = o * v[kMomQy], sxy = o * v[kMomQxy],
          syy = o * v[kMomQyy];
  v[0] = p[2] * sx + p[3] * sy;
  v[1] = p[3] * sx + p[4] * sy;
  v[2] = T(-0.5) * sxx;
  v[3] = -sxy;
  v[4] = T(-0.5) * syy;
  v[5] = q;
}

template <typename T, int CT>
void backward_tiles(const int64_t* offsets, const int32_t* ids, int64_t n_tiles,
                    const int64_t* first, const int64_t* order, const int64_t* entry_pos,
                    int64_t n,
                    const T* means2d, const T* conics, const T* opacities, const T* feats,
                    const T* extents, int channels, int width, int height, int tile,
                    int n_threads, const T* final_t, const int32_t* last, const T* g_out,
                    const T* g_alpha_out, const uint32_t* masks, int64_t pack_number,
                    T* g_means2d, T* g_conics, T* g_opacities, T* g_feats) {
  const int C = CT > 0 ? CT : channels;
  const int stride = rec_stride<T>(C);
  Packed<T> pk;
  pack_all(n, means2d, conics, opacities, feats, extents, C, n_threads, pk,
           uint64_t(pack_number));
  // Gradient record: 2 mean, 3 conic, 1 opacity, C features, one per tile-list entry (a
  // Gaussian's share of one tile), written by the worker that ran the tile at the entry's
  // place in the tile lists, with a flag saying whether it was written (entries behind every
  // pixel's last Gaussian, or reaching no live pixel, are not: they are zero). Afterwards each
  // Gaussian sums its written entries in tile order (entry_pos lists them Gaussian by
  // Gaussian, see Bins). No atomics, and the sums do not depend on which worker ran which tile:
  // gradients are bit-reproducible for any thread count and any timing. The buffer is kept
  // between calls (per calling thread) so that its pages are not faulted in again every pass.
  const int gstride = 6 + C;
  const int64_t n_entries = offsets[n_tiles];
  thread_local HugeBuffer entry_store;
  T* const entry_grads = static_cast<T*>(entry_store.get(size_t(n_entries) * gstride * sizeof(T)));
  std::unique_ptr<uint8_t[]> written(new uint8_t[std::max<int64_t>(1, n_entries)]);
  const int tiles_x = (width + tile - 1) / tile;
  const WindowGrid grid(tile);
  const bool small = small_grid(grid, tile);
  const int rs = grid.rs;
  const int64_t area = int64_t(rs) * tile;
  std::atomic<int64_t> next_tile{0};
  hc_par::run_workers(n_threads, [&](int) {
    // Zero-initialised: lanes past a partial tile's row width are read (and masked) only.
    std::vector<T> trans(area), behind(area), g_pix(area * C), g_t(area);
    using V = typename hc_simd::Vec<T>::type;
    V local[6 + kMaxChannels];
    std::vector<int32_t> last_l(area);
    std::vector<int32_t> j_lo(tile + kLanes), j_hi(tile + kLanes);
    std::vector<uint64_t> live(grid.words), cand(grid.words);
    // Windows by the end of their longest pixel list, longest first: they become live as the
    // backward walk (k decreasing) reaches their lists.
    std::vector<std::pair<int32_t, int32_t>> wake;
    for (int64_t t; (t = next_tile.fetch_add(1, std::memory_order_relaxed)) < n_tiles;) {
      const int64_t begin = offsets[t], count = offsets[t + 1] - begin;
      if (count == 0) continue;
      const int x0 = int(t % tiles_x) * tile, y0 = int(t / tiles_x) * tile;
      const int x1 = std::min(width, x0 + tile), y1 = std::min(height, y0 + tile);
      const int row_width = x1 - x0;
      int32_t k_end = 0;
      std::fill(last_l.begin(), last_l.end(), 0);  // pixels outside the image: no list
      wake.clear();
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
        }
        for (int xs = 0; xs < row_width; xs += kLanes) {
          const int32_t* lw = &last_l[int64_t(py - y0) * rs + xs];
          const int32_t end = *std::max_element(lw, lw + kLanes);
          if (end > 0) wake.emplace_back(end, ((py - y0) << grid.shift) + xs / kLanes);
        }
      }
      std::sort(wake.begin(), wake.end(), [](const std::pair<int32_t, int32_t>& a,
                                             const std::pair<int32_t, int32_t>& b) {
        return a.first > b.first;
      });
      // Entries the backward never reaches (behind every pixel's last Gaussian) stay zero.
      std::memset(&written[begin + k_end], 0, size_t(count - k_end));
      if (k_end == 0) continue;
      std::fill(behind.begin(), behind.end(), T(0));
      std::fill(live.begin(), live.end(), 0);
      size_t woken = 0;
      // Back to front: each pixel sees exactly the Gaussians it composited, in reverse.
      const int32_t* tile_ids = &ids[begin];
      for (int64_t k = int64_t(k_end) - 1; k >= 0; --k) {
        if (k >= kPrefetch) prefetch_record(&pk.rec[int64_t(tile_ids[k - kPrefetch]) * stride], stride);
        for (; woken < wake.size() && wake[woken].first > k; ++woken)
          live[wake[woken].second >> 6] |= uint64_t(1) << (wake[woken].second & 63);
        const int64_t g = tile_ids[k];
        const T* p = &pk.rec[g * stride];
        bool any;
        if (masks) {  // the windows the forward pass found (every k < k_end was visited there)
          cand[0] = masks[begin + k] & live[0];
          any = cand[0] != 0;
        } else {
          any = gaussian_windows(p, grid, small, x0, y0, y1 - y0, row_width, j_lo.data(),
                                 j_hi.data(), live.data(), cand.data());
        }
        written[begin + k] = any;
        if (!any) continue;
        std::fill(local, local + gstride, V{});
        const int32_t k32 = int32_t(k);  // 32-bit compare keeps the loop vectorisable
        for (int wd = 0; wd < grid.words; ++wd) {
          // Four windows per step (backward_windows), then the rest, as in forward_tiles.
          const auto step = [&](auto n_tag, uint64_t& m) {
            constexpr int N = decltype(n_tag)::value;
            int xs[N];
            T dy[N];
            int64_t l[N];
            for (int j = 0; j < N; ++j) {
              const int w = wd * 64 + __builtin_ctzll(m);
              m &= m - 1;
              const int r = w >> grid.shift;
              xs[j] = (w & ((1 << grid.shift) - 1)) * kLanes;
              l[j] = int64_t(r) * rs + xs[j];
              xs[j] += x0;
              dy[j] = T(y0 + r) - p[1];
            }
            backward_windows<T, CT, N>(p, C, xs, dy, l, k32, trans.data(), last_l.data(),
                                       g_t.data(), behind.data(), g_pix.data(), area, local);
          };
          uint64_t m = cand[wd];
          if (kQuadWindows)
            while (__builtin_popcountll(m) >= 4) step(std::integral_constant<int, 4>{}, m);
          if (__builtin_popcountll(m) == 3) step(std::integral_constant<int, 3>{}, m);
          if (kPairWindows)
            while (m & (m - 1)) step(std::integral_constant<int, 2>{}, m);
          if (m) step(std::integral_constant<int, 1>{}, m);
        }
        hc_simd::hsum_many(local, gstride, &entry_grads[(begin + k) * gstride]);
        finish_moments(p, &entry_grads[(begin + k) * gstride]);
      }
    }
  });
  // Each Gaussian's written entries, summed in tile order.
  hc_par::parallel_for(n, n_threads, 4096, [&](int, int64_t e0, int64_t e1) {
    T sum[6 + kMaxChannels];
    for (int64_t e_rank = e0; e_rank < e1; ++e_rank) {
      const int64_t g = order[e_rank];
      std::fill(sum, sum + gstride, T(0));
      for (int64_t j = first[e_rank]; j < first[e_rank + 1]; ++j) {
        const int64_t e = entry_pos[j];
        if (!written[e]) continue;
        const T* v = &entry_grads[e * gstride];
        for (int i = 0; i < gstride; ++i) sum[i] += v[i];
      }
      g_means2d[2 * g] = sum[0];
      g_means2d[2 * g + 1] = sum[1];
      for (int i = 0; i < 3; ++i) g_conics[3 * g + i] = sum[2 + i];
      g_opacities[g] = sum[5];
      for (int c = 0; c < C; ++c) g_feats[g * C + c] = sum[6 + c];
    }
  });
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
  // With small window grids the forward keeps each visited entry's window set for the backward
  // pass, after the ids in the same tensor (ids: entries, then masks: entries; the masks of
  // entries past a tile's saturation are never written nor read).
  const bool keep_masks = small_grid(WindowGrid(int(tile)), int(tile));
  AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "gauss_raster_forward", [&] {
    // The backward pass reuses the tile lists instead of binning again: binning writes them
    // straight into the returned tensors. offsets carries the tile offsets (tiles + 1), then
    // Bins::first (N + 1), Bins::order (N), Bins::pos (entries) and the number of the records'
    // pack (pack_all: the backward reuses them where it can); ids the tile ids (entries), then
    // the masks.
    const int64_t n_g = means2d.size(0);
    Bins bins = bin_gaussians(
        means2d.data_ptr<scalar_t>(), extents.data_ptr<scalar_t>(),
        depths.data_ptr<scalar_t>(), n_g, int(width), int(height), int(tile), int(n_threads),
        [&](int64_t entries, Bins& b) {
          offsets = torch::empty({b.n_tiles + 1 + n_g + 1 + n_g + entries + 1}, torch::kInt64);
          ids = torch::empty({entries * (keep_masks ? 2 : 1)}, torch::kInt32);
          b.offsets = offsets.data_ptr<int64_t>();
          b.first = b.offsets + b.n_tiles + 1;
          b.order = b.first + n_g + 1;
          b.pos = b.order + n_g;
          b.ids = ids.data_ptr<int32_t>();
        });
    uint32_t* masks = keep_masks ? reinterpret_cast<uint32_t*>(bins.ids + bins.entries) : nullptr;
    HC_DISPATCH_CHANNELS(C, forward_tiles, bins, means2d.size(0), means2d.data_ptr<scalar_t>(),
                         conics.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(),
                         feats.data_ptr<scalar_t>(), extents.data_ptr<scalar_t>(), C,
                         int(width), int(height), int(tile),
                         int(n_threads),
                         out.data_ptr<scalar_t>(), final_t.data_ptr<scalar_t>(),
                         last.data_ptr<int32_t>(), masks,
                         bins.pos + bins.entries);
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
  const int64_t n_tiles = ((width + tile - 1) / tile) * ((height + tile - 1) / tile);
  const int64_t n = means2d.size(0);
  TORCH_CHECK(offsets.numel() >= n_tiles + 1 &&
                  offsets.numel() == n_tiles + 1 + n + 1 + n + offsets[n_tiles].item<int64_t>() + 1,
              "gauss_raster: tile lists do not match the image size and Gaussian count");
  const int64_t n_entries = offsets[n_tiles].item<int64_t>();
  const bool has_masks = small_grid(WindowGrid(int(tile)), int(tile));
  TORCH_CHECK(ids.numel() == n_entries * (has_masks ? 2 : 1),
              "gauss_raster: tile ids do not match the tile lists (", ids.numel(), " values for ",
              n_entries, " entries)");
  const uint32_t* masks =
      has_masks ? reinterpret_cast<const uint32_t*>(ids.data_ptr<int32_t>() + n_entries) : nullptr;
  const int C = int(feats.size(1));
  const int threads = int(std::max<int64_t>(1, n_threads));
  auto g_means2d = torch::empty({n, 2}, feats.options());
  auto g_conics = torch::empty({n, 3}, feats.options());
  auto g_opacities = torch::empty({n}, feats.options());
  auto g_feats = torch::empty({n, C}, feats.options());
  const int64_t* off = offsets.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "gauss_raster_backward", [&] {
    HC_DISPATCH_CHANNELS(C, backward_tiles, off, ids.data_ptr<int32_t>(), n_tiles,
                         off + n_tiles + 1, off + n_tiles + 1 + n + 1,
                         off + n_tiles + 1 + n + 1 + n, n,
                         means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                         opacities.data_ptr<scalar_t>(), feats.data_ptr<scalar_t>(),
                         extents.data_ptr<scalar_t>(), C, int(width), int(height), int(tile),
                         threads, final_t.data_ptr<scalar_t>(), last.data_ptr<int32_t>(),
                         grad_out.data_ptr<scalar_t>(), grad_alpha.data_ptr<scalar_t>(), masks,
                         off[n_tiles + 1 + n + 1 + n + n_entries],
                         g_means2d.data_ptr<scalar_t>(), g_conics.data_ptr<scalar_t>(),
                         g_opacities.data_ptr<scalar_t>(), g_feats.data_ptr<scalar_t>());
  });
  return {g_means2d, g_conics, g_opacities, g_feats};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rasterize_forward", &rasterize_forward,
        "Composite screen-space Gaussians: -> features (H,W,C), final T (H,W), n_used (H,W), "
        "tile offsets (tiles+1), tile ids (then each entry's window set for 16 px-like tiles)");
  m.def("rasterize_backward", &rasterize_backward,
        "Gradients for means2d, conics, opacities, features");
  m.def("project_forward", &project_forward,
        "EWA projection + colour: -> means2d, conics, feats (colour, depth), extents, radii");
  m.def("project_backward", &project_backward,
        "Gradients for means, quats, scales, colours / SH coefficients");
}
