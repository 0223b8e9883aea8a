// src/reference/attention_core.hpp — the MQA-mode attention core shared by the CPU references of
// OP-SMLA-FWD, OP-SMLA-DEC and dense MLA forward (SPEC §6.2). Internal; g++ only (Eigen).
//
// One query token at a time: the caller gathers (and converts) the token's valid KV rows into an
// accumulator-typed [n, d_qk] matrix, the core computes S = Q_t·Kᵀ for all heads with one GEMM,
// z = τ·S, the row softmax, and O = P·V with a second GEMM (V = the first d_v columns of the
// gathered rows), both through Eigen's GEMM kernel with per-thread packing scratch. Keys are
// processed in chunks of kKeyChunk with an online softmax, so scratch stays bounded for long
// dense ranges; topk ≤ kKeyChunk is a single exact softmax. After a thread's first token nothing
// is allocated per token.
//
// Determinism: every buffer is per-thread scratch with 64-byte aligned rows, and every Eigen
// operation's traversal depends only on the token's own sizes, so results are bitwise identical
// run to run, independent of the thread count and of the other tokens in the batch.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "dsa/numerics.hpp"
#include "dsa/types.hpp"
#include "reference/access.hpp"

namespace dsa::detail::attn {

inline constexpr int64_t kKeyChunk = 2048;  // keys per GEMM pair (bounds the scratch)
inline constexpr int64_t kAlignElems = 16;  // row pitch multiple: 64 B for f32, 128 B for f64

inline int64_t padded(int64_t n) { return (n + kAlignElems - 1) / kAlignElems * kAlignElems; }

// ---- conversions -------------------------------------------------------------------------------

// Rounds a double to bf16 once (round-to-nearest-even on the exact value): the float cast may
// land on a bf16 tie point that the double was not on; nudge it off the tie toward the double.
inline bf16_t double_to_bf16(double d) {
  float f = static_cast<float>(d);
  if (std::isfinite(f) && static_cast<double>(f) != d && (float_bits(f) & 0xFFFFu) == 0x8000u)
    f = std::nextafter(f, d > static_cast<double>(f) ? std::numeric_limits<float>::infinity()
                                                     : -std::numeric_limits<float>::infinity());
  return float_to_bf16(f);
}

template <typename T> inline void store_out(const TensorView& t, int64_t off, T v);
template <> inline void store_out<float>(const TensorView& t, int64_t off, float v) { store_float(t, off, v); }
template <> inline void store_out<double>(const TensorView& t, int64_t off, double v) {
  if (t.dtype == DType::kBF16)
    static_cast<bf16_t*>(t.data)[off] = double_to_bf16(v);
  else
    static_cast<float*>(t.data)[off] = static_cast<float>(v);
}

// Converts n contiguous storage elements (bf16 or f32) to the accumulator type.
template <typename T>
inline void convert_row(const void* src, DType dtype, int64_t n, T* dst) {
  if (dtype == DType::kBF16) {
    const uint16_t* s = static_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t u = static_cast<uint32_t>(s[i]) << 16;
      float f;
      std::memcpy(&f, &u, 4);
      dst[i] = static_cast<T>(f);
    }
  } else {
    const float* s = static_cast<const float*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(s[i]);
  }
}

// Byte address of element `off` of a view.
inline const void* elem_ptr(const TensorView& t, int64_t off) {
  return static_cast<const char*>(t.data) + off * static_cast<int64_t>(dtype_size(t.dtype));
}

// A value error of the reference ("op: <message>").
inline Status value_error(const char* op, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
inline Status value_error(const char* op, const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return Status(StatusCode::kInvalidArgument, std::string(op) + ": " + buf);
}

// ---- the core ------------------------------------------------------------------------------------

// Eigen's blocked GEMM kernel with packing buffers from grow-only per-thread scratch, so the
// per-token products allocate nothing (a plain Eigen product allocates its packing blocks on
// every call). The blocking is the one Eigen's own product picks for the same sizes (one thread,
// L3 blocking), so results depend only on the product's sizes.
template <typename T>
class Gemm : public Eigen::internal::level3_blocking<T, T> {
 public:
  using Index = Eigen::Index;
  Gemm() = default;
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;
  ~Gemm() {
    Eigen::internal::aligned_free(this->m_blockA);
    Eigen::internal::aligned_free(this->m_blockB);
  }

  // res[rows, cols] (row-major, pitch ldr) += lhs[rows, depth] · rhs[depth, cols]; LhsOrder and
  // RhsOrder are Eigen::RowMajor / Eigen::ColMajor storage with pitches ldl and ldrhs.
  template <int LhsOrder, int RhsOrder>
  void multiply_add(Index rows, Index cols, Index depth, const T* lhs, Index ldl, const T* rhs, Index ldrhs, T* res,
                    Index ldr) {
    if (rows == 0 || cols == 0 || depth == 0) return;
    plan(rows, cols, depth);
    Eigen::internal::general_matrix_matrix_product<Index, T, LhsOrder, false, T, RhsOrder, false, Eigen::RowMajor,
                                                   1>::run(rows, cols, depth, lhs, ldl, rhs, ldrhs, res, 1, ldr,
                                                           T(1), *this, nullptr);
  }

 private:
  void plan(Index rows, Index cols, Index depth) {
    // As gemm_blocking_space<RowMajor, ...>(rows, cols, depth, 1, true): a row-major result is
    // computed transposed, so mc comes from cols and nc from rows.
    this->m_mc = cols;
    this->m_nc = rows;
    this->m_kc = depth;
    Eigen::internal::computeProductBlockingSizes<T, T, 1>(this->m_kc, this->m_mc, this->m_nc, Index(1));
    grow(this->m_blockA, cap_a_, this->m_kc * this->m_mc);
    grow(this->m_blockB, cap_b_, this->m_kc * this->m_nc);
  }
  static void grow(T*& p, Index& cap, Index need) {
    if (need <= cap) return;
    Eigen::internal::aligned_free(p);
    p = static_cast<T*>(Eigen::internal::aligned_malloc(sizeof(T) * need));
    cap = need;
  }
  Index cap_a_ = 0, cap_b_ = 0;
};

template <typename T>
class Core {
 public:
  using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  using Map = Eigen::Map<RowMat, Eigen::Aligned64, Stride>;

  // max_keys: the most keys any token of this call can have (sizes the chunk buffers).
  Core(int64_t h, int64_t d_qk, int64_t d_v, int64_t max_keys)
      : h_(h), d_qk_(d_qk), d_v_(d_v), chunk_(std::max<int64_t>(1, std::min(max_keys, kKeyChunk))),
        ldq_(padded(d_qk)), lds_(padded(chunk_)), ldo_(padded(d_v)),
        q_(h * ldq_), k_(chunk_ * ldq_), s_(h * lds_), o_(h * ldo_), m_(h), l_(h) {}

  int64_t chunk() const { return chunk_; }
  int64_t ld() const { return ldq_; }          // pitch of the Q and K rows
  T* q_row(int64_t head) { return q_.data() + head * ldq_; }
  T* key_rows() { return k_.data(); }          // chunk() rows of pitch ld()

  // Attention of the loaded Q over n keys; load(first, count, dst) writes keys [first, first+count)
  // as rows of pitch ld() at dst. On return out_row(h) = Σ softmax · v (normalized, before the
  // sink), lse(h) natural, max_logit(h); n == 0 gives the empty-row values of SPEC §6.2.
  template <typename Load>
  void run(int64_t n, T scale, Load&& load) {
    const T inf = std::numeric_limits<T>::infinity();
    Map O(o_.data(), h_, d_v_, Stride(ldo_));
    if (n == 0) {
      O.setZero();
      std::fill(m_.begin(), m_.end(), -inf);
      std::fill(l_.begin(), l_.end(), T(0));
      return;
    }
    if (h_ == 0) return;
    for (int64_t first = 0; first < n; first += chunk_) {
      const int64_t c = std::min(chunk_, n - first);
      load(first, c, k_.data());
      Map S(s_.data(), h_, c, Stride(lds_));
      S.setZero();  // S = Q·Kᵀ (Kᵀ: the gathered rows read column-major)
      gemm_.template multiply_add<Eigen::RowMajor, Eigen::ColMajor>(h_, c, d_qk_, q_.data(), ldq_, k_.data(), ldq_,
                                                                    s_.data(), lds_);
      for (int64_t hh = 0; hh < h_; ++hh) {
        T* z = s_.data() + hh * lds_;
        for (int64_t j = 0; j < c; ++j) z[j] *= scale;  // z = τ·(q·k)
        T mx = z[0];
        for (int64_t j = 1; j < c; ++j) mx = z[j] > mx ? z[j] : mx;
        const T m_new = first == 0 ? mx : std::max(m_[hh], mx);
        auto row = Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>, Eigen::Aligned64>(z, c);
        row = (row - m_new).exp();
        T sum = 0;
        for (int64_t j = 0; j < c; ++j) sum += z[j];
        if (first == 0) {
          l_[hh] = sum;
        } else {
          const T alpha = std::exp(m_[hh] - m_new);  // rescale the running sum and output
          l_[hh] = l_[hh] * alpha + sum;
          O.row(hh) *= alpha;
        }
        m_[hh] = m_new;
      }
      if (first == 0) O.setZero();  // O (+)= P·V, V = the first d_v columns of the rows
      gemm_.template multiply_add<Eigen::RowMajor, Eigen::RowMajor>(h_, d_v_, c, s_.data(), lds_, k_.data(), ldq_,
                                                                    o_.data(), ldo_);
    }
    for (int64_t hh = 0; hh < h_; ++hh) O.row(hh) /= l_[hh];
  }

  const T* out_row(int64_t head) const { return o_.data() + head * ldo_; }
  T max_logit(int64_t head) const { return m_[head]; }
  // ln Σ exp z (+∞ for an empty row).
  T lse(int64_t head) const {
    return l_[head] == T(0) ? std::numeric_limits<T>::infinity() : m_[head] + std::log(l_[head]);
  }

 private:
  struct AlignedVec {
    explicit AlignedVec(int64_t n) : p(static_cast<T*>(Eigen::internal::aligned_malloc(sizeof(T) * std::max<int64_t>(n, 1)))) {
      std::memset(p, 0, sizeof(T) * std::max<int64_t>(n, 1));
    }
    ~AlignedVec() { Eigen::internal::aligned_free(p); }
    AlignedVec(const AlignedVec&) = delete;
    AlignedVec& operator=(const AlignedVec&) = delete;
    T* data() { return p; }
    const T* data() const { return p; }
    T* p;
  };
  int64_t h_, d_qk_, d_v_, chunk_, ldq_, lds_, ldo_;
  AlignedVec q_, k_, s_, o_;
  std::vector<T> m_, l_;
  Gemm<T> gemm_;
};

// Writes one token's results: out[h, :d_v] (with the optional sink, SPEC §6.2), lse in the chosen
// base, max_logits in natural units. out_off(h) / lse_off(h) give element offsets into the views;
// max_logits (optional) is addressed as ml_off0 + h·ml_stride. NaN inputs propagate as NaN.
template <typename T, typename OutOff, typename LseOff>
inline void store_token(const Core<T>& core, int64_t h, int64_t d_v, const float* sink, LseBase base,
                        const TensorView& out, OutOff&& out_off, const TensorView& lse, LseOff&& lse_off,
                        const TensorView* max_logits, int64_t ml_off0, int64_t ml_stride) {
  const T log2e = static_cast<T>(1.4426950408889634);
  for (int64_t hh = 0; hh < h; ++hh) {
    const T lse_h = core.lse(hh);
    const T* o = core.out_row(hh);
    const int64_t base_off = out_off(hh);
    if (lse_h == std::numeric_limits<T>::infinity()) {  // empty row: out 0 (the sink cannot change that)
      for (int64_t i = 0; i < d_v; ++i) store_out<T>(out, base_off + i, T(0));
    } else if (sink) {
      const T denom = T(1) + std::exp(static_cast<T>(sink[hh]) - lse_h);
      for (int64_t i = 0; i < d_v; ++i) store_out<T>(out, base_off + i, o[i] / denom);
    } else {
      for (int64_t i = 0; i < d_v; ++i) store_out<T>(out, base_off + i, o[i]);
    }
    const T lse_v = base == LseBase::kBase2 ? lse_h * log2e : lse_h;
    static_cast<float*>(lse.data)[lse_off(hh)] = static_cast<float>(lse_v);
    if (max_logits)
      static_cast<float*>(max_logits->data)[ml_off0 + hh * ml_stride] = static_cast<float>(core.max_logit(hh));
  }
}

}  // namespace dsa::detail::attn
