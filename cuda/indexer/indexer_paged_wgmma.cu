// CUDA OP-IDXLOGITS decode on sm_90a warpgroup MMA (SPEC §4.2 step 7, §7.2, §12.4):
//   logits[r·n + t, s] = σ[s] · Σ_j w[r·n + t, j] · ReLU(q[r, t, j] · k[s])   for s < L(r, t),
//   −∞ for L(r, t) ≤ s < max_context_len — as the mma.sync kernel of indexer_logits.cu.
//
// Taken when h_idx = 64, d_idx = 128, next_n ≤ 4, P is a multiple of 64, a token's 64 heads are
// contiguous (head stride 128 B), q / cache bases, q strides and the page stride are 16-byte
// aligned, the device is cc 9.0 and this binary holds the sm_90a image. Everything else stays on
// indexer_logits.cu's kernels. DSA_INDEXER_PAGED_WGMMA (read once, cached): 0 off, 1 version 1,
// 2 version 2, otherwise version 3 (default: the fastest on the H200, 3.64 TB/s at b 128 × 128K
// against 3.45 for v2 and 2.03 for v1). dsa::indexer_paged_wgmma_for_testing(mode)
// overrides it in tests (−1 env, 0 off, 1 on, 2 v1, 3 v2, 4 v3).
//
// Product (as the prefill wgmma kernel, indexer_logits_wgmma.cu): a 64-key tile (64 consecutive
// tokens of one page, its 8 KB of codes contiguous) on the wgmma M dimension, the request's
// next_n × 64 (token, head) query rows on N: wgmma.m64nNk32.f32.e4m3.e4m3, N = 64·next_n, the 4
// k32 steps chained in the tensor-core accumulator. The request's q (next_n·8 KB) stays in shared
// memory; the two-warpgroup alternation (named barriers 1–4), per-warpgroup rings and the same
// epilogue (16 FMAs w·ReLU(acc) per (key, token), xor-shuffles 1 and 2, × σ) in all versions, so
// all three give the same bits.
//   v1: no-swizzle K-major core matrices (LBO 128 B, SBO 1024 B), 4-stage cp.async rings, a
//       tile's scales behind its codes. Each warp copy instruction touched 16 rows × 32 B.
//   v2: 128-byte swizzle (chunk c of row r at 128r + 16(c ⊕ r mod 8), tiles 1024-byte aligned):
//       a warp copies 512 contiguous bytes with conflict-free shared stores; scales in a ring of
//       their own; 6 / 4 / 8 / 8 stages for next_n 1 / 2 / 3 / 4; pages from a running counter
//       (no 64-bit division per tile); next_n 1 keeps its 16 head weights in registers.
//   v3: v2's layout filled by the tensor memory accelerator: one thread per warpgroup issues a
//       3-D tensor-map copy of the 64 × 128 B box (swizzled on the way) and a 1-D bulk copy of
//       the 256 B of scales, both completing on the stage's mbarrier (phases run on across
//       segments); the map is encoded on the host per call (cuTensorMapEncodeTiled through
//       cudaGetDriverEntryPointByVersion; v2 runs where it cannot be built).
//       v2 and v3 read the page id one tile ahead and issue a stage's refill after the MMAs of
//       the current tile (while they run).
// Resources (nvcc 13, sm_90a; registers, spills, dynamic shared bytes per CTA, CTAs/SM):
//   next_n 1: v1 102, 0, 76288, 2  | v2 128, 0, 110944, 2 | v3 110, 0, 111040, 2
//   next_n 2: v1 128, 0, 84736, 2  | v2 128, 0, 85600, 2  | v3 128, 0, 85664, 2
//   next_n 3: v1 180, 0, 93184, 1  | v2 184, 0, 161632, 1 | v3 174, 0, 161760, 1
//   next_n 4: v1 204, 0, 101632, 1 | v2 212, 0, 170080, 1 | v3 202, 0, 170208, 1
//
// Work split (lengths are only known on the device): the grid is persistent (SMs × CTAs per SM).
// Every CTA reads all context_lens, counts the tiles of every request (⌈max_t L(r, t) / 64⌉) and
// takes an equal share [g·T/G, (g + 1)·T/G) of the T tiles in request order, so very uneven
// lengths still give every SM the same number of tiles; a share crosses requests as segments
// (q, w and lengths reloaded, pipeline drained between segments). The −∞ entries are written by
// an equal split of the rows × max_context_len elements. Every output element comes from one
// fixed instruction sequence whatever the split, so results are bitwise reproducible.
//
// A tile's page id comes from block_table; a page id outside [0, num_blocks) is not loaded and
// its keys are written NaN (σ = NaN), as in indexer_logits.cu. Keys of the last page past the
// lengths are loaded (the page is in bounds) but never stored. Lengths are clamped to
// [0, min(max_context_len, max_blocks·P)].
#include "indexer/indexer_logits_wgmma.cuh"

#include <cuda.h>  // CUtensorMap and its enums only (the encoder comes through the runtime)

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/cuda_common.cuh"
#include "common/sm90_ptx.cuh"
#include "dsa/version.hpp"

namespace dsa {
namespace {
std::atomic<int> g_paged_wgmma_override{-1};
}
}  // namespace dsa

namespace dsa::cuda_backend {

namespace {

constexpr int kTileKeys = 64;         // wgmma M
constexpr int kThreads = 256;         // two consumer warpgroups
constexpr int kTileBytes = kTileKeys * 128;
constexpr int kScaleBytes = kTileKeys * 4;

// Shared memory of variant kV (1: the first version, no-swizzle core-matrix tiles with their
// scales behind them; 2: 128-byte-swizzled tiles, 1024-byte aligned, scales in a ring of their
// own, deeper rings). All offsets from a base aligned to kAlign.
template <int kT, int kV>
struct Smem {
  static constexpr int kN = 64 * kT;                       // wgmma N
  static constexpr int kQBytes = kN * 128;                 // q at offset 0
  // v2 stages: next_n 1 and 2 keep 2 CTAs/SM (≤ 113 KB each), 3 and 4 run 1 CTA/SM.
  static constexpr int kStages = kV == 1 ? 4 : (kT == 1 ? 6 : (kT == 2 ? 4 : 8));
  static constexpr int kStageBytes = kV == 1 ? kTileBytes + kScaleBytes : kTileBytes;
  static constexpr int kScOff = kQBytes + 2 * kStages * kTileBytes;  // v2 only
  static constexpr int kWOff = kV == 1 ? kQBytes : kScOff + 2 * kStages * kScaleBytes;  // float w[kT][4][16]
  static constexpr int kLenOff = kWOff + kT * 64 * 4;      // int32 len[4]
  static constexpr int kSegOff = kLenOff + 16;             // int64 first request, its tile prefix
  static constexpr int kScanOff = kSegOff + 16;            // int64 per-warp sums [8]
  static constexpr int kKeyOff = kV == 1 ? (kScanOff + 64 + 127) / 128 * 128 : kQBytes;
  static constexpr int kAlign = kV == 1 ? 128 : 1024;      // the 128-byte swizzle repeats every 1024 B
  static constexpr int kBarOff = kScanOff + 64;            // v3: uint64 mbarrier[2][kStages]
  static constexpr int kBytes =
      (kV == 1 ? kKeyOff + 2 * kStages * kStageBytes : kBarOff + (kV == 3 ? 2 * kStages * 8 : 0)) +
      kAlign;  // + base alignment slack
  // Keys of stage st of warpgroup wg, and their 64 scales.
  static constexpr __host__ __device__ int key_off(int wg, int st) { return kKeyOff + (wg * kStages + st) * kStageBytes; }
  static constexpr __host__ __device__ int sc_off(int wg, int st) {
    return kV == 1 ? key_off(wg, st) + kTileBytes : kScOff + (wg * kStages + st) * kScaleBytes;
  }
};
constexpr int kMaxSmemBytes = Smem<4, 3>::kBytes > Smem<4, 1>::kBytes ? Smem<4, 3>::kBytes : Smem<4, 1>::kBytes;
static_assert(Smem<4, 3>::kBytes >= Smem<4, 2>::kBytes, "v3 holds v2's layout and its barriers");

// The shared wgmma / cp.async / barrier wrappers (common/sm90_ptx.cuh).
using namespace dsa::cuda::sm90;

template <int kScaleD, int kN>
__device__ __forceinline__ void wgmma_n(float (&d)[kN / 2], uint64_t da, uint64_t db) {
  if constexpr (kN == 64) wgmma_n64<kScaleD>(d, da, db);
  else if constexpr (kN == 128) wgmma_n128<kScaleD>(d, da, db);
  else if constexpr (kN == 192) wgmma_n192<kScaleD>(d, da, db);
  else wgmma_n256<kScaleD>(d, da, db);
}

// v3: mbarriers and the tensor memory accelerator (bulk copies complete on an mbarrier).
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// A 64-row × 128-byte box of the 3-D map (byte, row in page, page), 128-byte swizzled.
__device__ __forceinline__ void tma_load_tile(uint32_t dst, const CUtensorMap* map, int row, int page, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(0), "r"(row), "r"(page), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void bulk_load(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}

// v1 tiles: core_off / smem_desc (no swizzle, LBO 128, SBO 1024) from common/sm90_ptx.cuh.
// v2: 128-byte swizzle, K-major (layout type 1 in bits 62–63): rows of 128 B, 16-byte chunk c of
// row r at r·128 + 16·(c ⊕ (r mod 8)), 8-row groups 1024 B apart (SBO); LBO unused. Tiles are
// 1024-byte aligned (base offset 0); a k32 step advances the start by 32 B (the hardware applies
// the XOR to the final address, as for a stored swizzled row).
__device__ __forceinline__ uint64_t smem_desc_sw128(uint32_t saddr) {
  return static_cast<uint64_t>((saddr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>(1024 >> 4) << 32) |
         (uint64_t{1} << 62);
}
// Byte offset of row r, 16-byte chunk c in that layout.
__device__ __forceinline__ int sw128_off(int r, int c) { return r * 128 + ((c ^ (r & 7)) << 4); }
template <int kV>
__device__ __forceinline__ uint64_t tile_desc(uint32_t saddr) {
  if constexpr (kV == 1) return smem_desc(saddr);
  else return smem_desc_sw128(saddr);
}

// ReLU in one instruction; NaN propagates (the sign of a zero term never changes the sums).
__device__ __forceinline__ float relu(float x) {
  float y;
  asm("max.NaN.f32 %0, %1, 0f00000000;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float neg_inf() { return __int_as_float(static_cast<int>(0xff800000u)); }
__device__ __forceinline__ float qnan() { return __int_as_float(0x7fc00000); }

// Visible length of token t of request r, clamped as in indexer_logits.cu.
template <int kT>
__device__ __forceinline__ int64_t token_len(const WgmmaPagedArgs& a, int64_t r, int t) {
  const int64_t L = a.lens_2d ? static_cast<int64_t>(a.lens[r * a.lens_s0 + t * a.lens_s1])
                              : static_cast<int64_t>(a.lens[r * a.lens_s0]) - kT + 1 + t;
  return min(max(L, int64_t{0}), a.cap);
}
template <int kT>
__device__ __forceinline__ int64_t request_tiles(const WgmmaPagedArgs& a, int64_t r) {
  int64_t m = 0;
#pragma unroll
  for (int t = 0; t < kT; ++t) m = max(m, token_len<kT>(a, r, t));
  return (m + kTileKeys - 1) / kTileKeys;
}

template <int kT, int kV>
__global__ void __launch_bounds__(kThreads, kT <= 2 ? 2 : 1)  // ≤ 128 registers: 2 CTAs/SM
    paged_wgmma_kernel(const __grid_constant__ WgmmaPagedArgs a, const __grid_constant__ CUtensorMap kmap) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using S = Smem<kT, kV>;
  constexpr int kN = S::kN, kAcc = kN / 2, kStages = S::kStages;
  extern __shared__ uint8_t smem_raw[];
  // Aligned by pointer arithmetic on the __shared__ array, so the compiler keeps the shared space.
  uint8_t* smem = smem_raw + ((S::kAlign - (smem_addr(smem_raw) & (S::kAlign - 1u))) & (S::kAlign - 1u));
  const uint32_t sbase = smem_addr(smem);
  float* w_s = reinterpret_cast<float*>(smem + S::kWOff);
  int32_t* len_s = reinterpret_cast<int32_t*>(smem + S::kLenOff);
  int64_t* seg_s = reinterpret_cast<int64_t*>(smem + S::kSegOff);
  int64_t* scan_s = reinterpret_cast<int64_t*>(smem + S::kScanOff);

  const int tid = threadIdx.x, wg = tid >> 7, wtid = tid & 127, lane = tid & 31, warp8 = tid >> 5;
  const int64_t G = gridDim.x, g = blockIdx.x;
  // v3: one mbarrier per stage (count 1: the issuing thread's arrival, plus the copied bytes);
  // initialised once, their phases run on across segments (tile counter cnt below).
  const uint32_t bar0 = sbase + S::kBarOff + wg * kStages * 8;
  if constexpr (kV == 3) {
    if (tid < 2 * kStages) mbar_init(sbase + S::kBarOff + 8 * tid, 1);
    mbar_init_fence();
    // The scans below start with __syncthreads: the barriers are ready before any use.
  }

  // −∞ past every row's length: an equal share of the rows × cols elements.
  {
    const int64_t E = a.b * kT * a.cols, e0 = g * E / G, e1 = (g + 1) * E / G;
#pragma unroll 1
    for (int64_t row = e0 / a.cols; row * a.cols < e1; ++row) {
      const int64_t L = token_len<kT>(a, row / kT, static_cast<int>(row % kT));
      const int64_t lo = max(e0 - row * a.cols, L), hi = min(e1 - row * a.cols, a.cols);
      float* orow = a.out + row * a.out_s0;
      for (int64_t c = lo + tid; c < hi; c += kThreads) orow[c] = neg_inf();
    }
  }

  // Tile counts of the requests in order (block scan, 256 requests a step). find = false: the
  // total T. find = true: the request holding tile s0 and its tile prefix, into seg_s.
  auto scan = [&](bool find, int64_t s0) -> int64_t {
    int64_t running = 0;
#pragma unroll 1
    for (int64_t base = 0; base < a.b; base += kThreads) {
      const int64_t r = base + tid;
      const int64_t n = r < a.b ? request_tiles<kT>(a, r) : 0;
      int64_t incl = n;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int64_t v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
      }
      if (lane == 31) scan_s[warp8] = incl;
      __syncthreads();
      int64_t off = running, tot = 0;
#pragma unroll
      for (int w = 0; w < kThreads / 32; ++w) {
        const int64_t v = scan_s[w];
        if (w < warp8) off += v;
        tot += v;
      }
      const int64_t excl = off + incl - n;
      if (find && n > 0 && excl <= s0 && s0 < excl + n) {
        seg_s[0] = r;
        seg_s[1] = excl;
      }
      running += tot;
      __syncthreads();  // scan_s is rewritten next step; seg_s visible
      if (find && running > s0) break;  // block-uniform
    }
    return running;
  };
  const int64_t T = scan(false, 0);
  const int64_t s0 = g * T / G, s1 = (g + 1) * T / G;
  if (s0 >= s1) return;  // block-uniform; no copy in flight
  scan(true, s0);
  const int64_t r0 = seg_s[0], pre0 = seg_s[1];

  const int warp = wtid >> 5, gq = lane >> 2, q4 = lane & 3;
  const uint64_t desc_b = tile_desc<kV>(sbase);
  // v2: 64-key tiles per page, a power of two or not (P is a multiple of 64 and fits int32).
  const int tiles_per_page = static_cast<int>(a.P / kTileKeys);
  float acc[kAcc];
  int cnt = 0;  // v3: tiles this warpgroup loaded in earlier segments (stage and phase of the next)

  int64_t pre = pre0;
#pragma unroll 1
  for (int64_t r = r0; r < a.b && pre < s1; ++r) {
    const int64_t nr = request_tiles<kT>(a, r);
    // Tile indices within the request fit int32 (lengths are int32).
    const int lo_t = static_cast<int>(max(s0, pre) - pre), hi_t = static_cast<int>(min(s1, pre + nr) - pre);
    pre += nr;
    if (lo_t >= hi_t) continue;  // block-uniform (empty request)

    __syncthreads();  // the previous segment is done with q, w, lengths and the rings
    if (tid < kT) len_s[tid] = static_cast<int32_t>(token_len<kT>(a, r, tid));
    // w_s[t][q][e] = w[r·n + t, 8(e/2) + 2q + e%2]: quad lane q's 16 heads of token t, in its order.
    for (int i = tid; i < kT * 64; i += kThreads) {
      const int64_t row = r * kT + i / 64;
      const int qq = (i % 64) / 16, e = i % 16;
      const int head = 8 * (e / 2) + 2 * qq + (e % 2);
      w_s[i] = a.w[row * a.w_s0 + head * a.w_s1];
    }
    // q: B row n = 64·t + j (token t, head j), 8 chunks of 16 bytes; cp.async group 0.
    for (int i = tid; i < kN * 8; i += kThreads) {
      const int n = i >> 3, c = i & 7;
      const int so = kV == 1 ? core_off(n, c) : sw128_off(n, c);
      cp_async16(sbase + so, a.q + r * a.q_s0 + (n / 64) * a.q_s1 + (n % 64) * 128 + c * 16);
    }
    cp_async_commit();

    const int ntiles = hi_t - lo_t;
    const int32_t* bt_row = a.bt + r * a.bt_s0;
    float* out_r = a.out + r * kT * a.out_s0;
    const int my_n = (ntiles - wg + 1) / 2;
    // v2: the next tile to load (request tile lo_t + wg + 2i for the i of the next issue call) as
    // page slot and 64-key sub-tile, advanced by 2 tiles a call (no division per tile).
    // Its page id is read one call ahead (nxt_page), off the path to the next MMA.
    int ld_pg = 0, ld_sub = 0;
    int32_t nxt_page = 0;
    if constexpr (kV >= 2) {
      ld_pg = (lo_t + wg) / tiles_per_page;
      ld_sub = (lo_t + wg) - ld_pg * tiles_per_page;
      if (my_n > 0) nxt_page = bt_row[static_cast<int64_t>(ld_pg) * a.bt_s1];
    }
    // Loads local tile i (request tile lo_t + wg + 2i) into its stage; always commits a group
    // so the wait counts stay uniform. Called for i = 0, 1, 2, … in order.
    auto issue = [&](int i) {
      if (i < my_n) {
        const int stage = kV == 3 ? (cnt + i) % kStages : i % kStages;
        const uint32_t st = sbase + S::key_off(wg, stage);
        const uint32_t st_sc = sbase + S::sc_off(wg, stage);
        int64_t page, off0;
        if constexpr (kV == 1) {
          const int64_t key0 = static_cast<int64_t>(lo_t + wg + 2 * i) * kTileKeys;
          page = bt_row[(key0 / a.P) * a.bt_s1];
          off0 = key0 % a.P;
        } else {
          page = nxt_page;
          off0 = ld_sub * kTileKeys;
        }
        if constexpr (kV == 3) {
          // One thread: the 8 KB tile (tensor map, swizzled on the way) and its 256 bytes of
          // scales, both completing on the stage's barrier. An unmappable page: a plain
          // arrival (nothing loaded) and NaN scales, written before the barrier of a later
          // iteration that precedes their use.
          const uint32_t bar = bar0 + 8 * stage;
          const bool ok = page >= 0 && page < a.num_blocks;
          if (wtid == 0) {
            if (ok) {
              mbar_arrive_expect_tx(bar, kTileBytes + kScaleBytes);
              tma_load_tile(st, &kmap, static_cast<int>(off0), static_cast<int>(page), bar);
              bulk_load(st_sc, a.cache + page * a.page_stride + a.P * 128 + 4 * off0, kScaleBytes, bar);
            } else {
              mbar_arrive(bar);
            }
          }
          if (!ok && wtid < kTileKeys) *reinterpret_cast<float*>(smem + (st_sc - sbase) + 4 * wtid) = qnan();
        } else if (page >= 0 && page < a.num_blocks) {
          const uint8_t* codes = a.cache + page * a.page_stride + off0 * 128;
          if constexpr (kV == 1) {
            // 16 consecutive threads: 8 rows × 2 adjacent chunks (whole 32-byte sectors, and each
            // group of 8 threads writes 8 different bank quads).
#pragma unroll
            for (int it = 0; it < 4; ++it) {
              const int idx = it * 128 + wtid;
              const int rr = (idx & 7) | (((idx >> 4) & 7) << 3);
              const int c = ((idx >> 7) << 1) | ((idx >> 3) & 1);
              cp_async16(st + core_off(rr, c), codes + rr * 128 + c * 16);
            }
          } else {
            // A warp copies 512 contiguous bytes (4 whole rows); the swizzle puts each group of
            // 8 threads (one row) on 8 different bank quads.
#pragma unroll
            for (int it = 0; it < 4; ++it) {
              const int idx = it * 128 + wtid;
              cp_async16(st + sw128_off(idx >> 3, idx & 7), codes + idx * 16);
            }
          }
          // The 64 scales: 256 contiguous bytes at P·128 + 4·off0 (16-byte aligned).
          if (wtid < 16) cp_async16(st_sc + 16 * wtid, a.cache + page * a.page_stride + a.P * 128 + 4 * off0 + 16 * wtid);
        } else if (wtid < kTileKeys) {
          // Unmappable page: nothing loaded, the keys come out NaN.
          *reinterpret_cast<float*>(smem + (st_sc - sbase) + 4 * wtid) = qnan();
        }
      }
      if constexpr (kV != 3) cp_async_commit();
      if constexpr (kV >= 2) {
        ld_sub += 2;
        while (ld_sub >= tiles_per_page) {  // at most twice
          ld_sub -= tiles_per_page;
          ++ld_pg;
        }
        if (i + 1 < my_n) nxt_page = bt_row[static_cast<int64_t>(ld_pg) * a.bt_s1];
      }
    };

#pragma unroll 1
    for (int i = 0; i < kStages - 1; ++i) issue(i);
    // Groups so far: q, then kStages − 1 tiles (v1, v2; v3: q only). q landed for everyone →
    // visible to wgmma.
    if constexpr (kV == 3) cp_async_wait<0>();
    else cp_async_wait<kStages - 1>();
    fence_proxy_async();
    __syncthreads();

    int32_t vhi[kT];  // store windows [0, L) (lengths are int32)
#pragma unroll
    for (int t = 0; t < kT; ++t) vhi[t] = len_s[t];
    // v2, next_n 1: this lane's 16 head weights stay in registers for the whole segment.
    float wreg[kT == 1 && kV >= 2 ? 16 : 1];
    if constexpr (kT == 1 && kV >= 2) {
#pragma unroll
      for (int m = 0; m < 4; ++m) {
        const float4 w4 = *reinterpret_cast<const float4*>(w_s + 16 * q4 + 4 * m);
        wreg[4 * m] = w4.x;
        wreg[4 * m + 1] = w4.y;
        wreg[4 * m + 2] = w4.z;
        wreg[4 * m + 3] = w4.w;
      }
    }

#pragma unroll 1
    for (int i = 0; i < my_n; ++i) {
      if constexpr (kV == 3) {
        mbar_wait(bar0 + 8 * ((cnt + i) % kStages), static_cast<uint32_t>((cnt + i) / kStages) & 1u);
      } else {
        cp_async_wait<kStages - 2>();  // this thread's copies of tile i landed (group 1 + i)
      }
      fence_proxy_async();
      named_barrier(1 + wg, 128);    // everyone's copies landed; everyone left epilogue i − 1
      if constexpr (kV == 1) issue(i + kStages - 1);  // refills the stage of tile i − 1
      const int stage = kV == 3 ? (cnt + i) % kStages : i % kStages;
      const uint64_t desc_a = tile_desc<kV>(sbase + S::key_off(wg, stage));
      // k step s: bytes [32s, 32s + 32) of every row. v1: chunks 2s, 2s + 1 → +256·s bytes
      // (>> 4 = 16s); v2: +32·s bytes (>> 4 = 2s).
      constexpr int kStep = kV == 1 ? 16 : 2;
      // Issue order alternates between the groups (segment tile j after j − 1): barrier 3 + wg is
      // "group wg may issue"; an arrival is made only where the other group has that tile.
      const int j = wg + 2 * i;
      if (j > 0) named_barrier(3 + wg, 256);
      wgmma_fence();
      wgmma_n<0, kN>(acc, desc_a, desc_b);
      wgmma_n<1, kN>(acc, desc_a + kStep, desc_b + kStep);
      wgmma_n<1, kN>(acc, desc_a + 2 * kStep, desc_b + 2 * kStep);
      wgmma_n<1, kN>(acc, desc_a + 3 * kStep, desc_b + 3 * kStep);
      wgmma_commit();
      if (j + 1 < ntiles) named_arrive(3 + (wg ^ 1), 256);
      // v2, v3: the refill of tile i − 1's stage is issued while the MMAs run.
      if constexpr (kV >= 2) issue(i + kStages - 1);
      wgmma_wait_all();

      const int kb = (lo_t + j) * kTileKeys;
      const float* sc = reinterpret_cast<const float*>(smem + S::sc_off(wg, stage));
#pragma unroll
      for (int t = 0; t < kT; ++t) {
        float wt[16];
        if constexpr (kT == 1 && kV >= 2) {
#pragma unroll
          for (int e = 0; e < 16; ++e) wt[e] = wreg[e];
        } else {
#pragma unroll
          for (int m = 0; m < 4; ++m) {
            const float4 w4 = *reinterpret_cast<const float4*>(w_s + 64 * t + 16 * q4 + 4 * m);
            wt[4 * m] = w4.x;
            wt[4 * m + 1] = w4.y;
            wt[4 * m + 2] = w4.z;
            wt[4 * m + 3] = w4.w;
          }
        }
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
          float s = 0.0f;
#pragma unroll
          for (int jj = 0; jj < 8; ++jj) {
            s = __fmaf_rn(wt[2 * jj], relu(acc[4 * (8 * t + jj) + 2 * rr]), s);
            s = __fmaf_rn(wt[2 * jj + 1], relu(acc[4 * (8 * t + jj) + 2 * rr + 1]), s);
          }
          s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, 1));
          s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, 2));
          // The quad holds the same bits in all 4 lanes; lane (2t + rr) % 4 stores.
          if (((2 * t + rr) & 3) == q4) {
            const int kr = 16 * warp + gq + 8 * rr;
            const int key = kb + kr;
            if (key < vhi[t]) out_r[t * a.out_s0 + key] = __fmul_rn(s, sc[kr]);
          }
        }
      }
    }
    cp_async_wait<0>();  // the empty tail groups; nothing of this segment stays in flight
    cnt += my_n;         // v3: every tile issued was waited for (issue only loads i < my_n)
  }
#else
  // No sm_90a image: the host never launches this variant (see image_present()).
  __shared__ volatile int no_sm90a_marker;
  no_sm90a_marker = 0;
#endif
}

// sm_90a image of the kernel present: its static shared size is 0 (the fallback variant has a
// marker of 4 bytes) and its binary version is 90.
bool image_present() {
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, paged_wgmma_kernel<1, 2>) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attr.binaryVersion == 90 && attr.sharedSizeBytes == 0;
}

// DSA_INDEXER_PAGED_WGMMA: 0 off, 1 the first version (v1), 2 the swizzled cp.async version (v2),
// anything else or unset the TMA version (v3).
int env_version() {
  static const int v = [] {
    const char* e = std::getenv("DSA_INDEXER_PAGED_WGMMA");
    if (e && std::strcmp(e, "0") == 0) return 0;
    if (e && std::strcmp(e, "1") == 0) return 1;
    if (e && std::strcmp(e, "2") == 0) return 2;
    return 3;
  }();
  return v;
}

// cuTensorMapEncodeTiled through the runtime's driver entry point (no libcuda link); null when
// the driver lacks it.
using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                   const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
EncodeTiledFn encode_tiled() {
  static const EncodeTiledFn fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return static_cast<EncodeTiledFn>(nullptr);
    }
    return reinterpret_cast<EncodeTiledFn>(f);
  }();
  return fn;
}

// v3's map of the key codes: bytes × rows of a page × pages (strides 128 B and the page stride),
// boxes of 128 B × 64 rows × 1 page, 128-byte swizzle (the layout sw128_off describes). A pure
// host computation (no device access): fine inside stream capture. False when it cannot be
// built (then v2 runs).
bool make_key_map(const WgmmaPagedArgs& a, CUtensorMap* map) {
  const EncodeTiledFn enc = encode_tiled();
  if (!enc || a.num_blocks <= 0 || a.num_blocks > (int64_t{1} << 31) || a.P > (int64_t{1} << 31) ||
      a.page_stride % 16 != 0 || a.page_stride >= (int64_t{1} << 40) ||
      reinterpret_cast<uintptr_t>(a.cache) % 16 != 0)
    return false;
  const cuuint64_t dims[3] = {128, static_cast<cuuint64_t>(a.P), static_cast<cuuint64_t>(a.num_blocks)};
  const cuuint64_t strides[2] = {128, static_cast<cuuint64_t>(a.page_stride)};
  const cuuint32_t box[3] = {128, kTileKeys, 1};
  const cuuint32_t estr[3] = {1, 1, 1};
  return enc(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, const_cast<uint8_t*>(a.cache), dims, strides, box, estr,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// The variant qualifying calls take now (0: none), from the test hook and the environment.
int wanted_version() {
  switch (g_paged_wgmma_override.load()) {
    case 0:
      return 0;
    case 1:
      return env_version() == 0 ? 3 : env_version();
    case 2:
      return 1;
    case 3:
      return 2;
    case 4:
      return 3;
    default:
      return env_version();
  }
}

template <int kT, int kV>
Status launch(const WgmmaPagedArgs& a, const CUtensorMap& kmap, const cuda::DeviceInfo& info, Stream stream) {
  constexpr int kBytes = Smem<kT, kV>::kBytes;
  static cuda::OncePerDevice attributes;
  cudaError_t e = attributes.run([] {
    cudaError_t err =
        cudaFuncSetAttribute(paged_wgmma_kernel<kT, kV>, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
    // v2/v3 at next_n 1 need 2 × 109 KB of an SM's 228 KB: ask for the largest shared carveout.
    if (err == cudaSuccess && kV >= 2)
      err = cudaFuncSetAttribute(paged_wgmma_kernel<kT, kV>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 cudaSharedmemCarveoutMaxShared);
    return err;
  });
  // CTAs per SM, per device (0 unknown): a host-side query, cached.
  static std::atomic<int> occupancy[64];
  const bool cacheable = info.device >= 0 && info.device < 64;
  int per_sm = cacheable ? occupancy[info.device].load() : 0;
  if (e == cudaSuccess && per_sm == 0) {
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, paged_wgmma_kernel<kT, kV>, kThreads, kBytes);
    if (e == cudaSuccess && per_sm > 0 && cacheable) occupancy[info.device].store(per_sm);
  }
  if (e != cudaSuccess)
    return Status(StatusCode::kCudaError,
                  std::string("indexer_paged_logits: wgmma kernel setup failed: ") + cudaGetErrorString(e));
  // Persistent: every CTA resident at once (the work split assumes it only for speed).
  const int sms = info.sm_count > 0 ? info.sm_count : 132;
  const unsigned blocks = static_cast<unsigned>(sms * (per_sm > 0 ? per_sm : 1));
  paged_wgmma_kernel<kT, kV><<<blocks, kThreads, kBytes, stream>>>(a, kmap);
  return cuda::launch_status("indexer_paged_logits", "paged_wgmma_kernel");
}

template <int kV>
Status launch_n(const WgmmaPagedArgs& a, const CUtensorMap& kmap, const cuda::DeviceInfo& info, Stream stream) {
  switch (a.next_n) {
    case 1:
      return launch<1, kV>(a, kmap, info, stream);
    case 2:
      return launch<2, kV>(a, kmap, info, stream);
    case 3:
      return launch<3, kV>(a, kmap, info, stream);
    case 4:
      return launch<4, kV>(a, kmap, info, stream);
    default:
      return Status(StatusCode::kInvalidArgument, "indexer_paged_logits: wgmma kernel needs next_n in 1..4");
  }
}

}  // namespace

bool indexer_paged_wgmma_usable() {
  if (wanted_version() == 0) return false;
  cuda::DeviceInfo info;
  if (!cuda::device_info("indexer_paged_logits", &info).ok()) return false;
  if (info.cc_major != 9 || info.cc_minor != 0 || info.max_smem_optin < kMaxSmemBytes) return false;
  // Per device: 0 unknown, 1 present, 2 absent.
  static std::atomic<int> present[64];
  if (info.device < 0 || info.device >= 64) return false;
  int p = present[info.device].load();
  if (p == 0) {
    p = image_present() ? 1 : 2;
    present[info.device].store(p);
  }
  return p == 1;
}

Status launch_indexer_paged_wgmma(WgmmaPagedArgs a, Stream stream) {
  cuda::DeviceInfo info;
  Status s = cuda::device_info("indexer_paged_logits", &info);
  if (!s.ok()) return s;
  a.cap = a.cols < a.max_blocks * a.P ? a.cols : a.max_blocks * a.P;
  // v1 / v3 only where asked for (environment 1 / 3 or the test hook); v2 otherwise, and where
  // v3's tensor map cannot be built.
  CUtensorMap kmap;
  std::memset(&kmap, 0, sizeof(kmap));
  const int v = wanted_version();
  if (v == 1) return launch_n<1>(a, kmap, info, stream);
  if (v == 3 && make_key_map(a, &kmap)) return launch_n<3>(a, kmap, info, stream);
  return launch_n<2>(a, kmap, info, stream);
}

}  // namespace dsa::cuda_backend

namespace dsa {
// Test hooks (declared by tests/gpu/test_gpu_indexer.cpp, not in a public header).
// mode −1 follows DSA_INDEXER_PAGED_WGMMA, 0 forces the mma.sync kernel, 1 allows the wgmma
// kernel (still only where it applies; v1 / v3 if the environment says 1 / 3, else v2), 2 allows
// it as v1, 3 as v2, 4 as v3.
DSA_API void indexer_paged_wgmma_for_testing(int mode) { g_paged_wgmma_override.store(mode); }
// Whether qualifying decode calls on the current device take the wgmma kernel now.
DSA_API bool indexer_paged_wgmma_active() { return cuda_backend::indexer_paged_wgmma_usable(); }
}  // namespace dsa
