// CUDA OP-IDXLOGITS, prefill (IndexerLogitsParams) and decode (IndexerPagedLogitsParams)
// (SPEC §4.2 steps 7–8, §4.6, §7.2, §12.3–12.4):
//   logits[r, s] = σ_k[s] · Σ_j w[r, j] · ReLU(q[r, j] · k[s])   (σ_k = 1 in exact mode)
// inside each row's key range, −∞ outside it (prefill with clean_logits, always in decode).
//
// Fast path (h_idx = 64, d_idx = 128, e4m3 or bf16 q and k, 16-byte aligned rows): tensor cores.
//   - Work items are (row, key chunk) pairs, one warp each, over a flat grid (chunk = 256…2048
//     keys, chosen from the shapes so that uneven row lengths spread over the SMs). A warp owns
//     its item entirely: no block synchronization, no cross-warp reduction.
//   - The warp holds its row's 64 heads as mma A fragments in registers (FP8: 64 registers;
//     bf16: 128) and streams tiles of 32 keys through its own double-buffered shared memory
//     (cp.async; paged keys are gathered per key through block_table).
//   - Per tile: 4 n-tiles × 4 m-tiles (16 heads each) × the k-steps of mma.sync
//     (FP8: m16n8k32 e4m3 → f32, each k32 step from zero, summed in IEEE fp32; bf16: m16n8k16 →
//     f32 chained), then ReLU, × w and the head sum in fp32
//     with explicit FMAs in a fixed order (m-tile, then rows g, g + 8), a fixed xor-butterfly
//     over the 8 lane groups, and × σ_k. Every output element is computed by exactly one warp
//     with the same instruction sequence whatever the chunking, so results are bitwise
//     reproducible run to run and independent of the batch composition.
//   - The k dimension is permuted consistently in A and B (the dot product is order-free over
//     k in the mma): thread t of a quad reads whole 16-byte pieces of each row, so fragments come
//     from 16-byte loads; shared rows are padded (144 B FP8, 320 B bf16) so the reads are free of
//     bank conflicts.
// FP8 with contiguous heads on an sm_90a build and a cc 9.0 device: the wgmma kernels instead —
// indexer_logits_wgmma.cu for prefill (DSA_INDEXER_WGMMA=0 keeps this one) and
// indexer_paged_wgmma.cu for paged decode with P a multiple of 64 and next_n ≤ 4
// (DSA_INDEXER_PAGED_WGMMA=0 keeps this one).
// General path (any other h_idx, d_idx, f32 exact mode, unaligned views): one thread per output
// element with scalar fp32 loops (correct, slow).
//
// Bad values cannot be reported without a host synchronization; the kernels stay in bounds:
// prefill ranges are clamped to 0 ≤ ks ≤ ke ≤ s_kv; decode lengths to [0, min(max_context_len,
// max_blocks·P)]; a key whose page id lies outside [0, num_blocks) is written NaN. The CPU
// reference rejects such calls.
#include <algorithm>
#include <cstdint>

#include "common/cuda_common.cuh"
#include "common/op_list.hpp"
#include "indexer/indexer_logits_wgmma.cuh"

namespace dsa::cuda_backend {

namespace {

constexpr int kHeads = 64;
constexpr int kDim = 128;
constexpr int kTileKeys = 32;

template <bool kFp8>
struct Cfg {
  static constexpr int kRowBytes = kFp8 ? 128 : 256;   // one 128-d row
  static constexpr int kSmemStride = kFp8 ? 144 : 320; // padded shared row (conflict-free)
  static constexpr int kWords = kFp8 ? 8 : 16;         // u32 words of a row per quad thread
  static constexpr int kPieces16 = kWords / 4;         // 16-byte pieces per quad thread
  static constexpr int kKSteps = kFp8 ? 4 : 8;         // mma k-steps over d = 128
  static constexpr int kWarps = kFp8 ? 4 : 2;          // warps per block (static smem ≤ 48 KB)
  static constexpr int kScaleOff = kTileKeys * kSmemStride;
  static constexpr int kStageBytes = kScaleOff + kTileKeys * 4;
};

// Byte offset of quad thread t's 16-byte piece j within a row (the k permutation; see above).
template <bool kFp8>
__device__ __forceinline__ int piece_offset(int t, int j) {
  return kFp8 ? 32 * t + 16 * j : 16 * (4 * j + t);
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// D = A·B + D on one m16n8 tile.
template <bool kFp8>
__device__ __forceinline__ void mma(float d[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1) {
  if constexpr (kFp8) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ float relu(float x) { return x < 0.0f ? 0.0f : x; }  // NaN propagates
__device__ __forceinline__ float neg_inf() { return __int_as_float(static_cast<int>(0xff800000u)); }
__device__ __forceinline__ float qnan() { return __int_as_float(0x7fc00000); }

struct FastArgs {
  const uint8_t* q;       // row r: q + (r / next_n)·q_sa + (r % next_n)·q_sb; head j: + j·q_sh (bytes)
  int64_t q_sa, q_sb, q_sh;
  const float* w;         // [rows, 64]
  int64_t w_s0, w_s1;
  float* out;             // [rows, cols]
  int64_t out_s0;
  int64_t rows, cols, next_n, chunk, nchunks;
  bool clean;
  // prefill
  const uint8_t* k;       // key s at k + s·k_s0 (bytes)
  int64_t k_s0;
  const float* k_scale;   // FP8 only
  int64_t sc_s0;
  const int32_t* ks;
  const int32_t* ke;
  int64_t ks_s0, ke_s0;
  // decode
  const uint8_t* cache;
  int64_t page_stride, P, num_blocks;
  const int32_t* bt;
  int64_t bt_s0, bt_s1, max_blocks;
  const int32_t* lens;
  int64_t lens_s0, lens_s1;
  bool lens_2d;
};

template <bool kFp8, bool kPaged>
__global__ void __launch_bounds__(Cfg<kFp8>::kWarps * 32, kFp8 ? 3 : 1)
    logits_fast_kernel(const __grid_constant__ FastArgs a) {
  using C = Cfg<kFp8>;
  __shared__ __align__(16) uint8_t smem[C::kWarps][2][C::kStageBytes];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * C::kWarps + warp;
  if (item >= a.rows * a.nchunks) return;  // warp-uniform; the kernel has no block barrier
  const int64_t row = item % a.rows, chunk = item / a.rows;
  const int64_t c0 = chunk * a.chunk, c1 = std::min(c0 + a.chunk, a.cols);
  const int64_t req = row / a.next_n, tok = row % a.next_n;

  // The row's key range [lo, hi), clamped into bounds.
  int64_t lo = 0, hi = 0;
  if constexpr (kPaged) {
    int64_t L = a.lens_2d ? a.lens[req * a.lens_s0 + tok * a.lens_s1]
                          : int64_t{a.lens[req * a.lens_s0]} - a.next_n + 1 + tok;
    L = std::max<int64_t>(0, std::min<int64_t>(L, std::min<int64_t>(a.cols, a.max_blocks * a.P)));
    hi = L;
  } else {
    lo = std::min<int64_t>(std::max<int64_t>(a.ks[row * a.ks_s0], 0), a.cols);
    hi = std::min<int64_t>(std::max<int64_t>(a.ke[row * a.ke_s0], lo), a.cols);
  }
  float* orow = a.out + row * a.out_s0;
  if (a.clean)
    for (int64_t c = c0 + lane; c < c1; c += 32)
      if (c < lo || c >= hi) orow[c] = neg_inf();
  const int64_t vlo = std::max(lo, c0), vhi = std::min(hi, c1);
  if (vlo >= vhi) return;

  // A fragments: rows (heads) 16m + g (h = 0) and 16m + g + 8 (h = 1); the quad thread's words.
  const uint8_t* qrow = a.q + req * a.q_sa + tok * a.q_sb;
  uint32_t qa[4][2][C::kWords];
  float wl[4], wh[4];
#pragma unroll
  for (int m = 0; m < 4; ++m) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint8_t* src = qrow + (16 * m + g + 8 * h) * a.q_sh;
#pragma unroll
      for (int j = 0; j < C::kPieces16; ++j) {
        const uint4 v = *reinterpret_cast<const uint4*>(src + piece_offset<kFp8>(t, j));
        qa[m][h][4 * j + 0] = v.x;
        qa[m][h][4 * j + 1] = v.y;
        qa[m][h][4 * j + 2] = v.z;
        qa[m][h][4 * j + 3] = v.w;
      }
    }
    wl[m] = a.w[row * a.w_s0 + (16 * m + g) * a.w_s1];
    wh[m] = a.w[row * a.w_s0 + (16 * m + g + 8) * a.w_s1];
  }

  // Issues the cp.async loads of the keys [tb, tb + 32) ∩ [vlo, vhi) into stage `st`.
  auto issue = [&](int64_t tb, uint8_t* st) {
    const int64_t key = tb + lane;
    const uint8_t* kbase = nullptr;
    if (key >= vlo && key < vhi) {
      if constexpr (kPaged) {
        const int64_t page = a.bt[req * a.bt_s0 + (key / a.P) * a.bt_s1];
        const int64_t off = key % a.P;
        if (page >= 0 && page < a.num_blocks) {
          const uint8_t* pg = a.cache + page * a.page_stride;
          kbase = pg + off * kDim;
          cp_async4(st + C::kScaleOff + 4 * lane, pg + a.P * kDim + 4 * off);
        } else {
          *reinterpret_cast<float*>(st + C::kScaleOff + 4 * lane) = qnan();  // unmappable page
        }
      } else {
        kbase = a.k + key * a.k_s0;
        if constexpr (kFp8) cp_async4(st + C::kScaleOff + 4 * lane, a.k_scale + key * a.sc_s0);
      }
    }
    constexpr int kPer = C::kRowBytes / 16;  // 16-byte pieces per key row
#pragma unroll 2
    for (int r = 0; r < kPer; ++r) {
      const int idx = r * 32 + lane, kk = idx / kPer, pc = idx % kPer;
      const auto src = reinterpret_cast<const uint8_t*>(
          __shfl_sync(0xffffffffu, reinterpret_cast<unsigned long long>(kbase), kk));
      if (src) cp_async16(st + kk * C::kSmemStride + pc * 16, src + pc * 16);
    }
  };

  const int64_t tb0 = vlo / kTileKeys * kTileKeys;
  const int64_t ntiles = (vhi - tb0 + kTileKeys - 1) / kTileKeys;
  issue(tb0, smem[warp][0]);
  cp_async_commit();
  for (int64_t i = 0; i < ntiles; ++i) {
    if (i + 1 < ntiles) {
      issue(tb0 + (i + 1) * kTileKeys, smem[warp][(i + 1) & 1]);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncwarp();
    const uint8_t* st = smem[warp][i & 1];
    const int64_t tb = tb0 + i * kTileKeys;

    const float* sc = reinterpret_cast<const float*>(st + C::kScaleOff);
#pragma unroll 1
    for (int n = 0; n < 4; ++n) {
      uint32_t b[C::kWords];
      const uint8_t* krow = st + (8 * n + g) * C::kSmemStride;
#pragma unroll
      for (int j = 0; j < C::kPieces16; ++j) {
        const uint4 v = *reinterpret_cast<const uint4*>(krow + piece_offset<kFp8>(t, j));
        b[4 * j + 0] = v.x;
        b[4 * j + 1] = v.y;
        b[4 * j + 2] = v.z;
        b[4 * j + 3] = v.w;
      }
      float p0 = 0.0f, p1 = 0.0f;  // keys 8n + 2t, 8n + 2t + 1; this lane's heads
#pragma unroll
      for (int m = 0; m < 4; ++m) {
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int s = 0; s < C::kKSteps; ++s) {
          if constexpr (kFp8) {
            // FP8 MMA does not accumulate in full fp32: each k32 step starts from zero and is
            // added in IEEE fp32 (the promotion DeepGEMM uses for FP8 GEMMs).
            float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            mma<kFp8>(part, qa[m][0][2 * s], qa[m][1][2 * s], qa[m][0][2 * s + 1], qa[m][1][2 * s + 1], b[2 * s],
                      b[2 * s + 1]);
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[e] = __fadd_rn(acc[e], part[e]);
          } else {
            mma<kFp8>(acc, qa[m][0][2 * s], qa[m][1][2 * s], qa[m][0][2 * s + 1], qa[m][1][2 * s + 1], b[2 * s],
                      b[2 * s + 1]);
          }
        }
        p0 = __fmaf_rn(wl[m], relu(acc[0]), p0);
        p0 = __fmaf_rn(wh[m], relu(acc[2]), p0);
        p1 = __fmaf_rn(wl[m], relu(acc[1]), p1);
        p1 = __fmaf_rn(wh[m], relu(acc[3]), p1);
      }
      // Head sum across the 8 lane groups (fixed butterfly; every lane ends with the same bits).
#pragma unroll
      for (int o = 4; o < 32; o <<= 1) {
        p0 = __fadd_rn(p0, __shfl_xor_sync(0xffffffffu, p0, o));
        p1 = __fadd_rn(p1, __shfl_xor_sync(0xffffffffu, p1, o));
      }
      // Lane (g, t) with g = n writes keys tb + 8n + 2t + {0, 1} (spreads the stores over lanes).
      if (g == n) {
        const int col = 8 * n + 2 * t;
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int64_t key = tb + col + c;
          float v = c ? p1 : p0;
          if constexpr (kFp8) v = __fmul_rn(v, sc[col + c]);
          if (key >= vlo && key < vhi) orow[key] = v;
        }
      }
    }
    __syncwarp();  // the next iteration refills this stage
  }
}

// ---- general path ------------------------------------------------------------------------------

__device__ __forceinline__ float load_elem(const void* base, DType dt, int64_t i) {
  switch (dt) {
    case DType::kE4M3:
      return e4m3_to_float(static_cast<const uint8_t*>(base)[i]);
    case DType::kBF16:
      return cuda::bf16_bits_to_float(static_cast<const uint16_t*>(base)[i]);
    default:
      return static_cast<const float*>(base)[i];
  }
}

__device__ __forceinline__ float load_f32_bytes(const uint8_t* p) {
  const uint32_t u = uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
  return __uint_as_float(u);
}

struct GenArgs {
  const void* q;  // element strides
  DType q_dt, k_dt;
  int64_t q_sa, q_sb, q_sh;
  int64_t h, d;
  const float* w;
  int64_t w_s0, w_s1;
  float* out;
  int64_t out_s0, rows, cols, next_n;
  bool clean, fp8;
  const void* k;
  int64_t k_s0;
  const float* k_scale;
  int64_t sc_s0;
  const int32_t* ks;
  const int32_t* ke;
  int64_t ks_s0, ke_s0;
  const uint8_t* cache;
  int64_t page_stride, P, num_blocks;
  const int32_t* bt;
  int64_t bt_s0, bt_s1, max_blocks;
  const int32_t* lens;
  int64_t lens_s0, lens_s1;
  bool lens_2d;
};

template <bool kPaged>
__global__ void __launch_bounds__(256) logits_general_kernel(const __grid_constant__ GenArgs a) {
  const int64_t total = a.rows * a.cols;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t row = e / a.cols, col = e % a.cols;
    const int64_t req = row / a.next_n, tok = row % a.next_n;
    int64_t lo = 0, hi = 0;
    if constexpr (kPaged) {
      int64_t L = a.lens_2d ? a.lens[req * a.lens_s0 + tok * a.lens_s1]
                            : int64_t{a.lens[req * a.lens_s0]} - a.next_n + 1 + tok;
      hi = std::max<int64_t>(0, std::min<int64_t>(L, std::min<int64_t>(a.cols, a.max_blocks * a.P)));
    } else {
      lo = std::min<int64_t>(std::max<int64_t>(a.ks[row * a.ks_s0], 0), a.cols);
      hi = std::min<int64_t>(std::max<int64_t>(a.ke[row * a.ke_s0], lo), a.cols);
    }
    float* dst = a.out + row * a.out_s0 + col;
    if (col < lo || col >= hi) {
      if (a.clean) *dst = neg_inf();
      continue;
    }
    const int64_t qoff = req * a.q_sa + tok * a.q_sb;
    float sigma = 1.0f;
    const uint8_t* codes = nullptr;
    if constexpr (kPaged) {
      const int64_t page = a.bt[req * a.bt_s0 + (col / a.P) * a.bt_s1];
      if (page < 0 || page >= a.num_blocks) {
        *dst = qnan();
        continue;
      }
      const uint8_t* pg = a.cache + page * a.page_stride;
      codes = pg + (col % a.P) * a.d;
      sigma = load_f32_bytes(pg + a.P * a.d + 4 * (col % a.P));
    } else if (a.fp8) {
      sigma = a.k_scale[col * a.sc_s0];
    }
    float acc = 0.0f;
    for (int64_t j = 0; j < a.h; ++j) {
      float dot = 0.0f;
      for (int64_t x = 0; x < a.d; ++x) {
        const float qv = load_elem(a.q, a.q_dt, qoff + j * a.q_sh + x);
        const float kv = kPaged ? e4m3_to_float(codes[x]) : load_elem(a.k, a.k_dt, col * a.k_s0 + x);
        dot = __fmaf_rn(qv, kv, dot);
      }
      acc = __fmaf_rn(a.w[row * a.w_s0 + j * a.w_s1], relu(dot), acc);
    }
    *dst = a.fp8 ? __fmul_rn(acc, sigma) : acc;
  }
}

// ---- host side ---------------------------------------------------------------------------------

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Keys per work item: about 64 items per SM, 256…2048 keys, a multiple of the tile.
int64_t pick_chunk(int64_t rows, int64_t cols, int sms) {
  const int64_t target = 64LL * (sms > 0 ? sms : 132);
  int64_t per = (rows * cols + target - 1) / target;
  per = per < 256 ? 256 : (per > 2048 ? 2048 : per);
  return (per + kTileKeys - 1) / kTileKeys * kTileKeys;
}

template <bool kFp8, bool kPaged>
Status launch_fast(FastArgs& a, const char* op, Stream stream) {
  cuda::DeviceInfo info;
  Status s = cuda::device_info(op, &info);
  if (!s.ok()) return s;
  a.chunk = pick_chunk(a.rows, a.cols, info.sm_count);
  a.nchunks = (a.cols + a.chunk - 1) / a.chunk;
  constexpr int kW = Cfg<kFp8>::kWarps;
  logits_fast_kernel<kFp8, kPaged>
      <<<cuda::grid_for(a.rows * a.nchunks, kW), kW * 32, 0, stream>>>(a);
  return cuda::launch_status(op, kFp8 ? "logits_fast_kernel (fp8)" : "logits_fast_kernel (bf16)");
}

template <bool kPaged>
Status launch_general(const GenArgs& a, const char* op, Stream stream) {
  const int64_t total = a.rows * a.cols;
  unsigned blocks = cuda::grid_for(total, 256);
  if (blocks > 65536u * 16u) blocks = 65536u * 16u;  // grid-stride loop covers the rest
  logits_general_kernel<kPaged><<<blocks, 256, 0, stream>>>(a);
  return cuda::launch_status(op, "logits_general_kernel");
}

int64_t elem_bytes(DType dt) { return dt == DType::kE4M3 ? 1 : (dt == DType::kBF16 ? 2 : 4); }

}  // namespace

// Fields FastArgs and GenArgs share, filled identically for both paths.
template <class Args>
void set_rows(Args& a, const TensorView& weights, const TensorView& logits, int64_t rows, int64_t cols,
              int64_t next_n, bool clean) {
  a.w = static_cast<const float*>(weights.data);
  a.w_s0 = weights.stride[0];
  a.w_s1 = weights.stride[1];
  a.out = static_cast<float*>(logits.data);
  a.out_s0 = logits.stride[0];
  a.rows = rows;
  a.cols = cols;
  a.next_n = next_n;
  a.clean = clean;
}

template <class Args>
void set_ranges(Args& a, const IndexerLogitsParams& p, bool fp8) {
  if (fp8) {
    a.k_scale = static_cast<const float*>(p.k_scale.data);
    a.sc_s0 = p.k_scale.stride[0];
  }
  a.ks = static_cast<const int32_t*>(p.ks.data);
  a.ke = static_cast<const int32_t*>(p.ke.data);
  a.ks_s0 = p.ks.stride[0];
  a.ke_s0 = p.ke.stride[0];
}

template <class Args>
void set_pages(Args& a, const IndexerPagedLogitsParams& p) {
  const bool two_d = p.context_lens.rank == 2;
  a.cache = static_cast<const uint8_t*>(p.k_cache.data);
  a.page_stride = p.k_cache.stride[0];
  a.P = p.page_block_size;
  a.num_blocks = p.k_cache.shape[0];
  a.bt = static_cast<const int32_t*>(p.block_table.data);
  a.bt_s0 = p.block_table.stride[0];
  a.bt_s1 = p.block_table.stride[1];
  a.max_blocks = p.block_table.shape[1];
  a.lens = static_cast<const int32_t*>(p.context_lens.data);
  a.lens_s0 = p.context_lens.stride[0];
  a.lens_s1 = two_d ? p.context_lens.stride[1] : 0;
  a.lens_2d = two_d;
}

namespace {

// The tensor-core (mma.sync) path: h_idx = 64, d_idx = 128, q and k both e4m3 or both bf16, rows
// 16-byte aligned.
bool fast_path(const IndexerLogitsParams& p) {
  const bool fp8 = p.q.dtype == DType::kE4M3;
  const int64_t qe = elem_bytes(p.q.dtype), ke = elem_bytes(p.k.dtype);
  return p.q.shape[1] == kHeads && p.q.shape[2] == kDim &&
         (fp8 || (p.q.dtype == DType::kBF16 && p.k.dtype == DType::kBF16)) && aligned16(p.q.data) &&
         aligned16(p.k.data) && (p.q.stride[0] * qe) % 16 == 0 && (p.q.stride[1] * qe) % 16 == 0 &&
         (p.k.stride[0] * ke) % 16 == 0;
}

}  // namespace

bool wgmma_logits_applies(const IndexerLogitsParams& p) {
  return fast_path(p) && p.q.dtype == DType::kE4M3 && p.k.dtype == DType::kE4M3 && p.q.stride[1] == kDim &&
         p.q.stride[2] == 1 && p.k.stride[1] == 1 && indexer_wgmma_usable();
}

WgmmaLogitsArgs wgmma_logits_args(const IndexerLogitsParams& p) {
  WgmmaLogitsArgs a{};
  a.q = static_cast<const uint8_t*>(p.q.data);
  a.q_s0 = p.q.stride[0];
  a.k = static_cast<const uint8_t*>(p.k.data);
  a.k_s0 = p.k.stride[0];
  a.k_scale = static_cast<const float*>(p.k_scale.data);
  a.sc_s0 = p.k_scale.stride[0];
  a.w = static_cast<const float*>(p.weights.data);
  a.w_s0 = p.weights.stride[0];
  a.w_s1 = p.weights.stride[1];
  a.ks = static_cast<const int32_t*>(p.ks.data);
  a.ke = static_cast<const int32_t*>(p.ke.data);
  a.ks_s0 = p.ks.stride[0];
  a.ke_s0 = p.ke.stride[0];
  a.out = static_cast<float*>(p.logits.data);
  a.out_s0 = p.logits.stride[0];
  a.rows = p.q.shape[0];
  a.cols = p.k.shape[0];
  a.clean = p.clean_logits;
  return a;
}

// Every validated configuration runs: the wgmma or mma.sync tensor-core path where it applies, the
// general path otherwise.
Status supports(const IndexerLogitsParams&) { return Status(); }
size_t workspace_size(const IndexerLogitsParams&) { return 0; }

Status run(const IndexerLogitsParams& p, void*, size_t, Stream stream) {
  const int64_t s_q = p.q.shape[0], h = p.q.shape[1], d = p.q.shape[2], s_kv = p.k.shape[0];
  if (s_q == 0 || s_kv == 0) return Status();
  const bool fp8 = p.q.dtype == DType::kE4M3;
  const int64_t qe = elem_bytes(p.q.dtype), ke = elem_bytes(p.k.dtype);
  const bool fast = fast_path(p);
  // sm_90a wgmma kernel (indexer_logits_wgmma.cu): FP8 with a token's heads contiguous.
  if (wgmma_logits_applies(p)) return launch_indexer_logits_wgmma(wgmma_logits_args(p), stream);
  if (fast) {
    FastArgs a{};
    a.q = static_cast<const uint8_t*>(p.q.data);
    a.q_sa = p.q.stride[0] * qe;
    a.q_sb = 0;
    a.q_sh = p.q.stride[1] * qe;
    set_rows(a, p.weights, p.logits, s_q, s_kv, 1, p.clean_logits);
    a.k = static_cast<const uint8_t*>(p.k.data);
    a.k_s0 = p.k.stride[0] * ke;
    set_ranges(a, p, fp8);
    return fp8 ? launch_fast<true, false>(a, "indexer_logits", stream)
               : launch_fast<false, false>(a, "indexer_logits", stream);
  }
  GenArgs a{};
  a.q = p.q.data;
  a.q_dt = p.q.dtype;
  a.k_dt = p.k.dtype;
  a.q_sa = p.q.stride[0];
  a.q_sb = 0;
  a.q_sh = p.q.stride[1];
  a.h = h;
  a.d = d;
  set_rows(a, p.weights, p.logits, s_q, s_kv, 1, p.clean_logits);
  a.fp8 = fp8;
  a.k = p.k.data;
  a.k_s0 = p.k.stride[0];
  set_ranges(a, p, fp8);
  return launch_general<false>(a, "indexer_logits", stream);
}

// Every validated configuration runs: the tensor-core path when h_idx = 64, d_idx = 128 and the
// q rows, the cache base and the page stride are 16-byte aligned (any page size); the general
// path otherwise.
Status supports(const IndexerPagedLogitsParams&) { return Status(); }
size_t workspace_size(const IndexerPagedLogitsParams&) { return 0; }

Status run(const IndexerPagedLogitsParams& p, void*, size_t, Stream stream) {
  const int64_t b = p.q.shape[0], next_n = p.q.shape[1], h = p.q.shape[2], d = p.q.shape[3];
  const int64_t rows = b * next_n, cols = p.logits.shape[1];
  if (rows == 0 || cols == 0) return Status();
  const bool fast = h == kHeads && d == kDim && aligned16(p.q.data) && aligned16(p.k_cache.data) &&
                    p.q.stride[0] % 16 == 0 && p.q.stride[1] % 16 == 0 && p.q.stride[2] % 16 == 0 &&
                    p.k_cache.stride[0] % 16 == 0;
  // sm_90a wgmma kernel (indexer_paged_wgmma.cu): whole 64-key page tiles, a token's heads
  // contiguous, next_n ≤ 4.
  if (fast && p.page_block_size > 0 && p.page_block_size % 64 == 0 && next_n <= 4 && p.q.stride[3] == 1 &&
      p.q.stride[2] == kDim && p.k_cache.stride[1] == 1 && indexer_paged_wgmma_usable()) {
    WgmmaPagedArgs a{};
    a.q = static_cast<const uint8_t*>(p.q.data);
    a.q_s0 = p.q.stride[0];
    a.q_s1 = p.q.stride[1];
    a.cache = static_cast<const uint8_t*>(p.k_cache.data);
    a.page_stride = p.k_cache.stride[0];
    a.P = p.page_block_size;
    a.num_blocks = p.k_cache.shape[0];
    a.bt = static_cast<const int32_t*>(p.block_table.data);
    a.bt_s0 = p.block_table.stride[0];
    a.bt_s1 = p.block_table.stride[1];
    a.max_blocks = p.block_table.shape[1];
    a.lens = static_cast<const int32_t*>(p.context_lens.data);
    a.lens_s0 = p.context_lens.stride[0];
    a.lens_2d = p.context_lens.rank == 2;
    a.lens_s1 = a.lens_2d ? p.context_lens.stride[1] : 0;
    a.w = static_cast<const float*>(p.weights.data);
    a.w_s0 = p.weights.stride[0];
    a.w_s1 = p.weights.stride[1];
    a.out = static_cast<float*>(p.logits.data);
    a.out_s0 = p.logits.stride[0];
    a.b = b;
    a.next_n = next_n;
    a.cols = cols;
    return launch_indexer_paged_wgmma(a, stream);
  }
  if (fast) {
    FastArgs a{};
    a.q = static_cast<const uint8_t*>(p.q.data);
    a.q_sa = p.q.stride[0];
    a.q_sb = p.q.stride[1];
    a.q_sh = p.q.stride[2];
    set_rows(a, p.weights, p.logits, rows, cols, next_n, true);
    set_pages(a, p);
    return launch_fast<true, true>(a, "indexer_paged_logits", stream);
  }
  GenArgs a{};
  a.q = p.q.data;
  a.q_dt = DType::kE4M3;
  a.k_dt = DType::kE4M3;
  a.q_sa = p.q.stride[0];
  a.q_sb = p.q.stride[1];
  a.q_sh = p.q.stride[2];
  a.h = h;
  a.d = d;
  set_rows(a, p.weights, p.logits, rows, cols, next_n, true);
  a.fp8 = true;
  set_pages(a, p);
  return launch_general<true>(a, "indexer_paged_logits", stream);
}

}  // namespace dsa::cuda_backend
