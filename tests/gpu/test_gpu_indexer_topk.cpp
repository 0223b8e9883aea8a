// GPU tests of the fused indexer → top-k (IndexerTopKParams): the CUDA path against
//   - the CUDA unfused pair (indexer_logits into a full logits tensor, then topk) on the same
//     inputs: bitwise equal indices, scores and k_eff (same kernels, same per-element arithmetic);
//   - the CPU reference logits, with SPEC §5's conformance rule for another implementation's
//     scores (r = CPU logits, r₍k₎ its k_eff-th largest in [ks, ke), δ from §9.4: 2e-3·max|row| FP8,
//     1e-5·max|row| exact): every selected c has r_c ≥ r₍k₎ − δ, every unselected valid c has
//     r_c ≤ r₍k₎ + δ; selected scores within δ of r_c; k_eff exact; −1 / −∞ padding.
//   - the CPU top-k reference run on the GPU's own logits: bitwise equal (an exact selection check
//     that does not trust the GPU top-k).
// Also: chunk sizes 1, 3, 64, 256 and automatic, both
// index domains, sorted and unsorted, bitwise reruns, CUDA-graph capture, and a workspace one byte
// too small (kWorkspaceTooSmall; chunked path only). Outputs start poisoned.
// The adversarial test case shapes the scores (ascending, descending, all tied, ReLU-zero plateaus,
// few distinct values) to stress the streaming path's candidate buffer, threshold and compaction;
// its inputs are small integers so every score is exact and the GPU logits equal the CPU ones.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "dsa/dsa.hpp"
#include "gpu/gpu_util.hpp"
#include "support/random.hpp"

using namespace dsa;
using dsa::test::Mirror;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// kMixed cycles through empty ranges, ranges shorter than, equal to and one longer than k, full
// rows, rows ending at s_kv, length-1 rows, starts off and on multiples of 64.
enum class Ranges { kFull, kCausal, kRandom, kWindows, kMixed };

// Score shapes of the adversarial cases (FP8 only; exact integer inputs, see exact_queries()).
enum class Pattern {
  kRandom,      // the default random data
  kAscending,   // identical key rows, k_scale strictly increasing: scores strictly increase along s
  kDescending,  // identical key rows, k_scale strictly decreasing
  kAllTied,     // identical key rows and scales: every score equal
  kReluZeros,   // most keys score exactly 0 (q·k < 0 for every head), a sparse random few > 0
  kFewValues,   // 4 key rows × 3 scales: ≤ 12 distinct scores, large tie groups at the cut
};

struct Case {
  const char* name = "";
  int64_t s_q = 0, s_kv = 0, h = 64, d = 128, topk = 16;
  DType dt = DType::kE4M3;
  Ranges ranges = Ranges::kCausal;
  int32_t chunk_rows = 0;
  IndexDomain domain = IndexDomain::kAbsolute;
  bool sorted = true;
  Pattern pattern = Pattern::kRandom;
  int64_t invalid_every = 0;  // > 0: every invalid_every-th key gets k_scale NaN or −∞ (exact inputs)
  bool want_stream = false;    // the case is meant for the streaming path: check that it is taken
  bool cpu_fused = true;     // also run the CPU fused reference (costly at long s_kv)
};

template <typename T>
std::vector<T> as(const std::vector<uint8_t>& b) {
  std::vector<T> v(b.size() / sizeof(T));
  std::memcpy(v.data(), b.data(), v.size() * sizeof(T));
  return v;
}

struct Data;
// Optional input generators; an empty one keeps the default random fill of its part.
struct Gen {
  std::function<void(Data&, test::Rng&)> keys;     // k and k_scale (host sides)
  std::function<void(Data&, test::Rng&)> queries;  // q and weights
  std::function<void(Data&, test::Rng&)> ranges;   // ks_h, ke_h
};

struct Data {
  const Case& c;
  bool fp8;
  int64_t es;
  Mirror q, k, sc, w, ks, ke;
  std::vector<int32_t> ks_h, ke_h;
  std::vector<char> positive;  // kReluZeros: the keys built to score > 0
  std::vector<char> invalid;   // keys whose k_scale is NaN or −∞ (scores NaN / −∞: not valid)
  bool is_invalid(int64_t s) const { return !invalid.empty() && invalid[s]; }

  void put(Mirror& m, int64_t i, double x) {
    if (fp8)
      m.host()[i] = float_to_e4m3(static_cast<float>(x));
    else if (c.dt == DType::kBF16)
      m.host_as<bf16_t>()[i] = float_to_bf16(static_cast<float>(x));
    else
      m.host_as<float>()[i] = static_cast<float>(x);
  }

  Data(const Case& c_, test::Rng& rng, const Gen& gen = Gen())
      : c(c_),
        fp8(c_.dt == DType::kE4M3),
        es(c_.dt == DType::kE4M3 ? 1 : (c_.dt == DType::kBF16 ? 2 : 4)),
        q(std::max<int64_t>(1, c_.s_q * c_.h * c_.d) * es),
        k(std::max<int64_t>(1, c_.s_kv * c_.d) * es),
        sc(c_.s_kv * 4 + 4),
        w(c_.s_q * c_.h * 4 + 4),
        ks(c_.s_q * 4 + 4),
        ke(c_.s_q * 4 + 4) {
    // The default fill draws k, q, k_scale, weights in this order (the validated data of the
    // first test case depends on it).
    const double amp = fp8 ? 2.0 : 0.5;
    if (!gen.keys)
      for (int64_t i = 0; i < c.s_kv * c.d; ++i) put(k, i, rng.normal() * amp);
    if (!gen.queries)
      for (int64_t i = 0; i < c.s_q * c.h * c.d; ++i) put(q, i, rng.normal() * amp);
    if (gen.keys)
      gen.keys(*this, rng);
    else
      for (int64_t s = 0; s < c.s_kv; ++s) sc.host_as<float>()[s] = static_cast<float>(rng.uniform(1e-3, 2e-2));
    if (gen.queries)
      gen.queries(*this, rng);
    else  // positive head weights: no cancellation, so δ·max|row| is a meaningful scale
      for (int64_t i = 0; i < c.s_q * c.h; ++i)
        w.host_as<float>()[i] = static_cast<float>(std::fabs(rng.normal() * 0.05) + 1e-3);
    ks_h.assign(c.s_q, 0);
    ke_h.assign(c.s_q, static_cast<int32_t>(c.s_kv));
    if (gen.ranges) {
      gen.ranges(*this, rng);
    } else {
      for (int64_t t = 0; t < c.s_q; ++t) {
        if (c.ranges == Ranges::kCausal) {  // a chunk of one sequence after s_kv − s_q earlier keys
          ke_h[t] = static_cast<int32_t>(std::max<int64_t>(0, std::min<int64_t>(c.s_kv, c.s_kv - c.s_q + t + 1)));
        } else if (c.ranges == Ranges::kRandom) {
          int64_t a = rng.integer(0, c.s_kv), b = rng.integer(0, c.s_kv);
          if (a > b) std::swap(a, b);
          if (rng.uniform() < 0.1) b = a;
          ks_h[t] = static_cast<int32_t>(a);
          ke_h[t] = static_cast<int32_t>(b);
        } else if (c.ranges == Ranges::kWindows) {  // short windows spread over a long key axis
          const int64_t len = rng.integer(0, 3 * c.topk), a = rng.integer(0, c.s_kv - len);
          ks_h[t] = static_cast<int32_t>(a);
          ke_h[t] = static_cast<int32_t>(a + len);
        } else if (c.ranges == Ranges::kMixed) {
          int64_t a = -1, len = 0;
          // A start ≡ off (mod 64) that leaves room for len keys when it can.
          auto start = [&](int64_t off) { return 64 * rng.integer(0, std::max<int64_t>(0, (c.s_kv - len - off) / 64)) + off; };
          switch (t % 9) {
            case 0: a = rng.integer(0, c.s_kv); break;                                      // empty
            case 1: len = rng.integer(1, std::max<int64_t>(1, c.topk - 1)); break;           // < k
            case 2: len = c.topk; a = start(1); break;                                      // = k
            case 3: len = c.topk + 1; a = start(63); break;                                 // = k + 1
            case 4: len = c.s_kv; a = 0; break;                                             // full
            case 5: a = rng.integer(0, c.s_kv - 1); len = c.s_kv - a; break;                // to the end
            case 6: len = 1; break;
            case 7: a = 64 * rng.integer(0, c.s_kv / 256); len = c.s_kv; break;             // 64-aligned start
            default: a = rng.integer(1, 63); len = rng.integer(0, c.s_kv); break;           // odd start
          }
          if (a < 0) a = rng.integer(0, std::max<int64_t>(0, c.s_kv - len));
          a = std::min(a, c.s_kv);
          ks_h[t] = static_cast<int32_t>(a);
          ke_h[t] = static_cast<int32_t>(std::min(c.s_kv, a + len));
        }
      }
    }
    std::memcpy(ks.host(), ks_h.data(), c.s_q * 4);
    std::memcpy(ke.host(), ke_h.data(), c.s_q * 4);
    for (Mirror* m : {&q, &k, &sc, &w, &ks, &ke}) m->upload();
  }

  IndexerLogitsParams logits(bool dev, Mirror& out) {
    IndexerLogitsParams p;
    p.q = q.view(dev, c.dt, {c.s_q, c.h, c.d});
    p.k = k.view(dev, c.dt, {c.s_kv, c.d});
    if (fp8) p.k_scale = sc.view(dev, DType::kF32, {c.s_kv});
    p.weights = w.view(dev, DType::kF32, {c.s_q, c.h});
    p.ks = ks.view(dev, DType::kI32, {c.s_q});
    p.ke = ke.view(dev, DType::kI32, {c.s_q});
    p.logits = out.view(dev, DType::kF32, {c.s_q, c.s_kv});
    return p;
  }
  TopKParams topk(bool dev, Mirror& logits, Mirror& idx, Mirror& osc, Mirror& keff) {
    TopKParams p;
    p.scores = logits.view(dev, DType::kF32, {c.s_q, c.s_kv});
    p.ks = ks.view(dev, DType::kI32, {c.s_q});
    p.ke = ke.view(dev, DType::kI32, {c.s_q});
    p.indices = idx.view(dev, DType::kI32, {c.s_q, c.topk});
    p.out_scores = osc.view(dev, DType::kF32, {c.s_q, c.topk});
    p.k_eff = keff.view(dev, DType::kI32, {c.s_q});
    p.domain = c.domain;
    p.sorted = c.sorted;
    return p;
  }
  IndexerTopKParams fused(bool dev, Mirror& idx, Mirror& osc, Mirror& keff) {
    IndexerTopKParams p;
    p.q = q.view(dev, c.dt, {c.s_q, c.h, c.d});
    p.k = k.view(dev, c.dt, {c.s_kv, c.d});
    if (fp8) p.k_scale = sc.view(dev, DType::kF32, {c.s_kv});
    p.weights = w.view(dev, DType::kF32, {c.s_q, c.h});
    p.ks = ks.view(dev, DType::kI32, {c.s_q});
    p.ke = ke.view(dev, DType::kI32, {c.s_q});
    p.indices = idx.view(dev, DType::kI32, {c.s_q, c.topk});
    p.out_scores = osc.view(dev, DType::kF32, {c.s_q, c.topk});
    p.k_eff = keff.view(dev, DType::kI32, {c.s_q});
    p.domain = c.domain;
    p.sorted = c.sorted;
    p.chunk_rows = c.chunk_rows;
    return p;
  }
};

// SPEC §5 conformance of the CUDA selection against the CPU reference logits `r` ([s_q, s_kv]).
void check_conformance(const Data& dt, const std::vector<float>& r, const std::vector<int32_t>& idx,
                       const std::vector<float>& osc, const std::vector<int32_t>& keff) {
  const Case& c = dt.c;
  const double rel = dt.fp8 ? 2e-3 : 1e-5;
  int64_t bad_rows = 0, first_bad = -1;
  std::string why;
  std::vector<char> taken(c.s_kv);
  std::vector<float> vals;
  for (int64_t t = 0; t < c.s_q; ++t) {
    const int64_t a = dt.ks_h[t], b = dt.ke_h[t], base = c.domain == IndexDomain::kRelative ? a : 0;
    const float* row = &r[t * c.s_kv];
    double mx = 0;
    vals.clear();
    for (int64_t s = a; s < b; ++s)
      if (!std::isnan(row[s]) && row[s] != -kInf) {
        vals.push_back(row[s]);
        mx = std::max(mx, std::fabs(static_cast<double>(row[s])));
      }
    const double delta = rel * mx;
    const int64_t want_keff = std::min<int64_t>(c.topk, static_cast<int64_t>(vals.size()));
    std::string err;
    if (keff[t] != want_keff) err = "k_eff " + std::to_string(keff[t]) + " != " + std::to_string(want_keff);
    double rk = -INFINITY;
    if (want_keff > 0) {
      std::nth_element(vals.begin(), vals.begin() + (want_keff - 1), vals.end(), std::greater<float>());
      rk = vals[want_keff - 1];
    }
    std::fill(taken.begin(), taken.end(), 0);
    for (int64_t i = 0; i < c.topk && err.empty(); ++i) {
      const int32_t v = idx[t * c.topk + i];
      const float s = osc[t * c.topk + i];
      if (i >= want_keff) {
        if (v != -1 || s != -kInf) err = "slot " + std::to_string(i) + " past k_eff is not -1/-inf";
        continue;
      }
      const int64_t col = static_cast<int64_t>(v) + base;
      if (col < a || col >= b || taken[col]) {
        err = "slot " + std::to_string(i) + " index " + std::to_string(v) + " out of range or repeated";
        continue;
      }
      taken[col] = 1;
      if (!(row[col] >= rk - delta)) err = "selected column " + std::to_string(col) + " below r_k - delta";
      if (!(std::fabs(static_cast<double>(s) - row[col]) <= delta)) err = "selected score off by more than delta";
      if (c.sorted && i > 0 && !(osc[t * c.topk + i - 1] >= s)) err = "scores not descending";
    }
    for (int64_t s = a; s < b && err.empty(); ++s)
      if (!taken[s] && !std::isnan(row[s]) && row[s] != -kInf && !(row[s] <= rk + delta))
        err = "unselected column " + std::to_string(s) + " above r_k + delta";
    if (!err.empty() && bad_rows++ == 0) {
      first_bad = t;
      why = err;
    }
  }
  INFO(bad_rows << " rows fail SPEC §5 conformance; first: row " << first_bad << ": " << why);
  CHECK(bad_rows == 0);
}

// ---- Adversarial inputs (FP8 mode) -------------------------------------------------------------
// Every step of such a score is exact: q codes are integers in [lo, hi] ⊂ [−1, 3] and key entries
// ±1 or ±2, so each head's dot product is an integer of magnitude ≤ 768 (exact in the tensor-core
// accumulator too, which keeps well over 10 bits); weights are m·2⁻¹², m ∈ [1, 32], so the head sum
// (< 2²⁰ units of 2⁻¹²) is exact in fp32 in any order, FMA or not. A score is then fl32(k_scale·X)
// with X exact: the same bits on the GPU and in the CPU reference, and every key built alike
// scores alike.
void exact_queries(Data& d, test::Rng& rng, int lo, int hi) {
  const Case& c = d.c;
  for (int64_t th = 0; th < c.s_q * c.h; ++th)
    for (int64_t x = 0; x < c.d; ++x) {
      int64_t v = rng.integer(lo, hi);
      if (lo >= 0 && x == 0) v = std::max<int64_t>(v, 1);  // q ≥ 0, ≠ 0: q·k > 0 ⇔ k > 0 entrywise
      d.put(d.q, th * c.d + x, static_cast<double>(v));
    }
  for (int64_t i = 0; i < c.s_q * c.h; ++i)
    d.w.host_as<float>()[i] = static_cast<float>(std::ldexp(static_cast<double>(rng.integer(1, 32)), -12));
}

std::vector<double> key_row(const Case& c, test::Rng& rng) {
  std::vector<double> r(c.d);
  for (double& v : r) v = static_cast<double>(rng.integer(1, 2));
  return r;
}

void set_key(Data& d, int64_t s, const std::vector<double>& row, double sign) {
  for (int64_t x = 0; x < d.c.d; ++x) d.put(d.k, s * d.c.d + x, sign * row[x]);
}

Gen gen_for(const Case& cs) {
  Gen g;
  if (cs.pattern == Pattern::kRandom) return g;
  g.queries = [](Data& d, test::Rng& rng) { exact_queries(d, rng, d.c.pattern == Pattern::kReluZeros ? 0 : -1, 3); };
  g.keys = [](Data& d, test::Rng& rng) {
    const Case& c = d.c;
    REQUIRE(c.dt == DType::kE4M3);
    float* sc = d.sc.host_as<float>();
    switch (c.pattern) {
      case Pattern::kAscending:
      case Pattern::kDescending:
      case Pattern::kAllTied: {
        // One key row for all keys; k_scale = 1e-3·(1 + i·2⁻¹⁸): a step of ~33 ulps of k_scale, so
        // fl32(k_scale·X) stays strictly monotone (i < 2¹⁸ keeps it below 2e-3).
        REQUIRE(c.s_kv <= (int64_t(1) << 18));
        const std::vector<double> row = key_row(c, rng);
        for (int64_t s = 0; s < c.s_kv; ++s) {
          set_key(d, s, row, 1.0);
          const int64_t i = c.pattern == Pattern::kAscending ? s : (c.pattern == Pattern::kDescending ? c.s_kv - 1 - s : 0);
          sc[s] = c.pattern == Pattern::kAllTied ? 1.25e-3f
                                                 : static_cast<float>(1e-3 * (1.0 + std::ldexp(static_cast<double>(i), -18)));
        }
        int64_t not_monotone = 0;
        for (int64_t s = 1; s < c.s_kv; ++s)
          not_monotone += c.pattern == Pattern::kAscending    ? !(sc[s] > sc[s - 1])
                          : c.pattern == Pattern::kDescending ? !(sc[s] < sc[s - 1])
                                                              : !(sc[s] == sc[s - 1]);
        INFO("k_scale not strictly monotone (or not constant) in fp32 at " << not_monotone << " keys");
        REQUIRE(not_monotone == 0);
        break;
      }
      case Pattern::kReluZeros: {
        // Keys −P (P > 0 entrywise) make every head's q·k < 0 (q ≥ 0, q ≠ 0): score exactly 0. About
        // 1 key in 32 gets its own positive row instead: score > 0 (≈ 1000 per 32K row, fewer than k).
        const std::vector<double> neg = key_row(c, rng);
        d.positive.assign(c.s_kv, 0);
        for (int64_t s = 0; s < c.s_kv; ++s) {
          d.positive[s] = rng.integer(0, 31) == 0;
          if (d.positive[s])
            set_key(d, s, key_row(c, rng), 1.0);
          else
            set_key(d, s, neg, -1.0);
          sc[s] = static_cast<float>(rng.uniform(1e-3, 2e-2));
        }
        break;
      }
      case Pattern::kFewValues: {
        // 4 key rows drawn with probabilities 2 %, 5 %, 18 %, 75 % and 3 scales: ≤ 12 distinct
        // scores per query row, groups of hundreds to thousands of exact ties, the rarer (usually
        // higher-scoring) ones below k so that the k-th place falls inside a large tie group.
        std::vector<std::vector<double>> rows;
        for (int i = 0; i < 4; ++i) rows.push_back(key_row(c, rng));
        const float scales[3] = {1e-3f, 1.25e-3f, 1.5e-3f};
        for (int64_t s = 0; s < c.s_kv; ++s) {
          const double u = rng.uniform();
          set_key(d, s, rows[u < 0.02 ? 0 : (u < 0.07 ? 1 : (u < 0.25 ? 2 : 3))], 1.0);
          sc[s] = scales[rng.integer(0, 2)];
        }
        break;
      }
      default:
        break;
    }
    // Invalid scores: k_scale NaN gives NaN, −∞ gives −∞ (X > 0), alternately; never selected.
    if (c.invalid_every > 0) {
      d.invalid.assign(c.s_kv, 0);
      for (int64_t s = c.invalid_every / 2; s < c.s_kv; s += c.invalid_every) {
        d.invalid[s] = 1;
        sc[s] = (s / c.invalid_every) % 2 ? std::numeric_limits<float>::quiet_NaN() : -kInf;
      }
    }
  };
  return g;
}

// The property that makes an adversarial case adversarial, on the host:
//   (1) the GPU's own logits `g` have the intended shape (otherwise the case tests nothing new),
//       and at least one row is really adversarial (more than k valid keys; ReLU zeros: fewer than
//       k positive scores; few values: the tie group of the k-th score straddles the cut);
//   (2) the selection is the one the construction forces, derived from the construction alone
//       (over the valid columns, those not made NaN / −∞ on purpose): ascending → the last k_eff
//       (sorted: column descending); descending and all tied → the first k_eff (column
//       ascending); ReLU zeros → every positive column, then the first zero columns (ascending,
//       scores exactly 0). Few values: (2) is the exact host top-k in check_case.
void check_pattern(const Data& dt, const std::vector<float>& g, const std::vector<int32_t>& idx,
                   const std::vector<float>& osc, const std::vector<int32_t>& keff) {
  const Case& c = dt.c;
  if (c.pattern == Pattern::kRandom) return;
  int64_t bad_shape = 0, bad_sel = 0, adversarial = 0, first_shape = -1, first_sel = -1;
  std::string why_shape, why_sel;
  std::vector<int64_t> cols, want, pos, zeros;
  std::vector<float> distinct, vals;
  for (int64_t t = 0; t < c.s_q; ++t) {
    const int64_t a = dt.ks_h[t], b = dt.ke_h[t], base = c.domain == IndexDomain::kRelative ? a : 0;
    const float* row = &g[t * c.s_kv];
    cols.clear();
    for (int64_t s = a; s < b; ++s)
      if (!dt.is_invalid(s)) cols.push_back(s);
    const int64_t len = static_cast<int64_t>(cols.size()), n = std::min<int64_t>(c.topk, len);
    std::string es;
    // (1) The shape of the GPU logits.
    for (int64_t s = a; s < b && es.empty(); ++s)
      if (dt.is_invalid(s) && !(std::isnan(row[s]) || row[s] == -kInf))
        es = "column " + std::to_string(s) + " scores " + std::to_string(row[s]) + ", want NaN or -inf";
    for (int64_t i = 0; i < len && es.empty(); ++i) {
      const int64_t s = cols[i];
      const float v = row[s], prev = i > 0 ? row[cols[i - 1]] : 0.f;
      if (c.pattern == Pattern::kReluZeros) {
        if (dt.positive[s] ? !(v > 0) : !(v == 0 && !std::signbit(v)))
          es = "column " + std::to_string(s) + " scores " + std::to_string(v) + (dt.positive[s] ? ", want > 0" : ", want +0");
      } else if (!(v > 0)) {
        es = "column " + std::to_string(s) + " scores " + std::to_string(v) + ", want > 0";
      } else if (i > 0 && ((c.pattern == Pattern::kAscending && !(v > prev)) ||
                           (c.pattern == Pattern::kDescending && !(v < prev)) ||
                           (c.pattern == Pattern::kAllTied && !(v == prev)))) {
        es = "column " + std::to_string(s) + " breaks the intended order";
      }
    }
    int64_t npos = 0;
    pos.clear();
    zeros.clear();
    if (c.pattern == Pattern::kReluZeros) {
      for (int64_t s : cols) (dt.positive[s] ? pos : zeros).push_back(s);
      npos = static_cast<int64_t>(pos.size());
      adversarial += npos < c.topk && len > c.topk;
    } else if (c.pattern == Pattern::kFewValues) {
      distinct.clear();
      for (size_t i = 0; i < cols.size() && distinct.size() <= 12; ++i)
        if (std::find(distinct.begin(), distinct.end(), row[cols[i]]) == distinct.end()) distinct.push_back(row[cols[i]]);
      if (distinct.size() > 12 && es.empty()) es = "more than 12 distinct scores";
      if (n > 0 && len > n) {
        vals.clear();
        for (int64_t s : cols) vals.push_back(row[s]);
        std::nth_element(vals.begin(), vals.begin() + (n - 1), vals.end(), std::greater<float>());
        const float kth = vals[n - 1];
        const int64_t gt = std::count_if(vals.begin(), vals.end(), [&](float v) { return v > kth; });
        const int64_t eq = std::count(vals.begin(), vals.end(), kth);
        adversarial += gt < n && gt + eq > n;
      }
    } else {
      adversarial += len > c.topk;
    }
    if (!es.empty() && bad_shape++ == 0) {
      first_shape = t;
      why_shape = es;
    }
    // (2) The forced selection.
    std::string err;
    if (keff[t] != n) err = "k_eff " + std::to_string(keff[t]) + " != " + std::to_string(n);
    const int32_t* sel = &idx[t * c.topk];
    want.clear();
    if (c.pattern == Pattern::kAscending) {
      for (int64_t i = 0; i < n; ++i) want.push_back(c.sorted ? cols[len - 1 - i] : cols[len - n + i]);
    } else if (c.pattern == Pattern::kDescending || c.pattern == Pattern::kAllTied) {
      for (int64_t i = 0; i < n; ++i) want.push_back(cols[i]);
    } else if (c.pattern == Pattern::kReluZeros && err.empty()) {
      std::vector<int64_t> got;
      for (int64_t i = 0; i < n; ++i) got.push_back(static_cast<int64_t>(sel[i]) + base);
      if (npos >= n) {  // the cut falls among the positive scores: at least all selected are positive
        for (int64_t i = 0; i < n && err.empty(); ++i)
          if (got[i] < a || got[i] >= b || !dt.positive[got[i]]) err = "slot " + std::to_string(i) + " is not a positive column";
      } else if (c.sorted) {
        // All positives first (their order is the exact host top-k's business), then the first
        // n − npos zero columns in column order, with score 0.
        std::sort(got.begin(), got.begin() + npos);
        if (!std::equal(pos.begin(), pos.end(), got.begin())) err = "the first npos slots are not the positive columns";
        for (int64_t i = npos; i < n && err.empty(); ++i) {
          if (got[i] != zeros[i - npos])
            err = "slot " + std::to_string(i) + " is not the next zero column";
          else if (!(osc[t * c.topk + i] == 0))
            err = "slot " + std::to_string(i) + " score is not 0";
        }
      } else {
        std::vector<int64_t> expect(pos);
        expect.insert(expect.end(), zeros.begin(), zeros.begin() + (n - npos));
        std::sort(expect.begin(), expect.end());
        if (got != expect) err = "the set is not the positives plus the first zeros in column order";
      }
    }
    for (size_t i = 0; i < want.size() && err.empty(); ++i)
      if (static_cast<int64_t>(sel[i]) + base != want[i])
        err = "slot " + std::to_string(i) + " holds column " + std::to_string(static_cast<int64_t>(sel[i]) + base) +
              ", the construction forces " + std::to_string(want[i]);
    if (!err.empty() && bad_sel++ == 0) {
      first_sel = t;
      why_sel = err;
    }
  }
  {
    INFO(bad_shape << " rows of the GPU logits do not have the intended shape; first: row " << first_shape << ": "
                   << why_shape << " (a problem of the input construction, not of the top-k)");
    CHECK(bad_shape == 0);
  }
  {
    INFO("no row is adversarial (range > k; ReLU zeros: fewer than k positives; few values: the k-th "
         "score's tie group straddles the cut)");
    CHECK(adversarial > 0);
  }
  INFO(bad_sel << " rows select other than the construction forces; first: row " << first_sel << ": " << why_sel);
  CHECK(bad_sel == 0);
}

// The conditions of the streaming path (cuda/indexer/indexer_topk.cu) that these cases control:
// chunk_rows 0, e4m3, h_idx 64, d_idx 128, k ≤ 2048, an sm_90 device, DSA_INDEXER_TOPK ≠ chunked. (Contiguous
// heads and 16-byte alignment always hold here: cudaMalloc'd, contiguous buffers.)
bool stream_eligible(const Case& c) {
  const char* env = std::getenv("DSA_INDEXER_TOPK");
  if (env != nullptr && std::string(env) == "chunked") return false;
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
    return false;
  return c.chunk_rows == 0 && c.dt == DType::kE4M3 && c.h == 64 && c.d == 128 && c.topk <= 2048 && major == 9 && minor == 0;
}

void check_case(const Case& c, test::Rng& rng) {
  CAPTURE(c.name, c.s_q, c.s_kv, c.h, c.d, c.topk, dtype_name(c.dt), (int)c.ranges, c.chunk_rows, (int)c.domain,
          c.sorted, (int)c.pattern);
  Data dt(c, rng, gen_for(c));
  const size_t nk = static_cast<size_t>(std::max<int64_t>(1, c.s_q * c.topk)) * 4, nr = c.s_q * 4 + 4;
  Mirror idx(nk), osc(nk), keff(nr), idx2(nk), osc2(nk), keff2(nr), logits(std::max<int64_t>(1, c.s_q * c.s_kv) * 4);
  for (Mirror* m : {&idx, &keff, &idx2, &keff2}) m->poison(0x7F);
  for (Mirror* m : {&osc, &osc2, &logits}) m->poison(0xFF);

  // Fused on the GPU. The streaming path needs no workspace (workspace_size() = 0, chunk_rows
  // ignored); the chunked path always needs its logits scratch. So "> 0" is checked only where the
  // streaming path cannot apply, and "== 0" where a case is meant for the streaming path.
  const IndexerTopKParams fp = dt.fused(true, idx, osc, keff);
  const size_t ws_bytes = workspace_size(fp);
  const bool eligible = stream_eligible(c);
  CAPTURE(ws_bytes, eligible);
  if (!eligible) CHECK(ws_bytes > 0);
  if (c.want_stream && eligible) {
    INFO("the streaming path (workspace 0) was expected but not taken");
    CHECK(ws_bytes == 0);
  }
  void* ws = nullptr;
  GPU_REQUIRE(cudaMalloc(&ws, std::max<size_t>(ws_bytes, 1)));
  {
    const Status s = run(fp, ws, ws_bytes);
    INFO("cuda fused: " << s.message());
    REQUIRE(s.ok());
  }
  test::sync_ok();
  const auto f_idx = idx.download(), f_osc = osc.download(), f_keff = keff.download();
  const auto i_idx = as<int32_t>(f_idx), i_keff = as<int32_t>(f_keff);
  const auto v_osc = as<float>(f_osc);

  // Unfused on the GPU: bitwise the same.
  {
    const Status s1 = run(dt.logits(true, logits));
    INFO("cuda indexer_logits: " << s1.message());
    REQUIRE(s1.ok());
    const TopKParams tp = dt.topk(true, logits, idx2, osc2, keff2);
    std::vector<uint8_t> tws(std::max<size_t>(1, workspace_size(tp)));
    void* tws_dev = nullptr;
    GPU_REQUIRE(cudaMalloc(&tws_dev, tws.size()));
    const Status s2 = run(tp, tws_dev, workspace_size(tp));
    INFO("cuda topk: " << s2.message());
    REQUIRE(s2.ok());
    test::sync_ok();
    cudaFree(tws_dev);
  }
  CHECK(idx2.download() == f_idx);
  CHECK(osc2.download() == f_osc);
  CHECK(keff2.download() == f_keff);
  const std::vector<float> g = as<float>(logits.download());  // the GPU's logits ([ks, ke) only)

  // The CPU top-k reference on the GPU's logits: the exact selection (total order score
  // descending, column ascending), bitwise, without trusting the GPU top-k.
  {
    std::vector<int32_t> h_idx(static_cast<size_t>(c.s_q * c.topk)), h_keff(static_cast<size_t>(c.s_q));
    std::vector<float> h_osc(h_idx.size());
    TopKParams hp;
    hp.scores = make_view(g.data(), DType::kF32, {c.s_q, c.s_kv});
    hp.ks = make_view(dt.ks_h.data(), DType::kI32, {c.s_q});
    hp.ke = make_view(dt.ke_h.data(), DType::kI32, {c.s_q});
    hp.indices = make_view(h_idx.data(), DType::kI32, {c.s_q, c.topk});
    hp.out_scores = make_view(h_osc.data(), DType::kF32, {c.s_q, c.topk});
    hp.k_eff = make_view(h_keff.data(), DType::kI32, {c.s_q});
    hp.domain = c.domain;
    hp.sorted = c.sorted;
    REQUIRE(ref::run(hp).ok());
    int64_t bad_rows = 0, first_bad = -1;
    for (int64_t t = 0; t < c.s_q; ++t) {
      const bool same = i_keff[t] == h_keff[t] &&
                        std::memcmp(&i_idx[t * c.topk], &h_idx[t * c.topk], c.topk * 4) == 0 &&
                        std::memcmp(&v_osc[t * c.topk], &h_osc[t * c.topk], c.topk * 4) == 0;
      if (!same && bad_rows++ == 0) first_bad = t;
    }
    INFO(bad_rows << " rows differ from the CPU top-k of the GPU logits; first: row " << first_bad);
    CHECK(bad_rows == 0);
  }

  // The adversarial cases' forced selections (and that their scores have the intended shape).
  check_pattern(dt, g, i_idx, v_osc, i_keff);

  // CPU reference logits: SPEC §5 conformance of the CUDA selection.
  REQUIRE(ref::run(dt.logits(false, logits)).ok());
  const std::vector<float> r = as<float>(logits.host_bytes());
  check_conformance(dt, r, i_idx, v_osc, i_keff);
  if (c.pattern != Pattern::kRandom) {
    // Exact inputs (see exact_queries): the GPU logits are the CPU ones, bit for bit.
    int64_t diffs = 0, first = -1;
    for (int64_t t = 0; t < c.s_q; ++t)
      for (int64_t s = dt.ks_h[t]; s < dt.ke_h[t]; ++s)
        if (std::memcmp(&g[t * c.s_kv + s], &r[t * c.s_kv + s], 4) != 0 &&
            !(std::isnan(g[t * c.s_kv + s]) && std::isnan(r[t * c.s_kv + s])) && diffs++ == 0)  // NaN payloads may differ
          first = t * c.s_kv + s;
    INFO(diffs << " GPU logits differ from the CPU ones on exact inputs; first at flat index " << first
               << " (the construction is not exact on this GPU: fix the inputs, not the top-k)");
    CHECK(diffs == 0);
  }

  // The CPU fused reference runs on the same problem (its exactness is tests/cpu/test_indexer_topk).
  if (c.cpu_fused) REQUIRE(ref::run(dt.fused(false, idx, osc, keff)).ok());

  // Rerun, poisoned again: bitwise identical.
  idx.poison(0x7F);
  osc.poison(0xFF);
  keff.poison(0x7F);
  REQUIRE(run(fp, ws, ws_bytes).ok());
  test::sync_ok();
  CHECK(idx.download() == f_idx);
  CHECK(osc.download() == f_osc);
  CHECK(keff.download() == f_keff);

  // One byte too few: only the chunked path has a workspace to be short of (the streaming path
  // reports 0 bytes and runs with any workspace, null included).
  if (ws_bytes > 0) {
    const Status small = run(fp, ws, ws_bytes - 1);
    CHECK(small.code() == StatusCode::kWorkspaceTooSmall);
    CHECK(small.message().find("indexer_topk") != std::string::npos);
  }
  cudaFree(ws);
}

}  // namespace

TEST_CASE("gpu indexer_topk: fused == CUDA logits + topk bitwise, SPEC §5 conformance vs CPU",
          "[gpu][indexer_topk]") {
  test::Rng rng(0x1d70a1);
  std::vector<Case> cases;
  auto add = [&](const char* name, int64_t s_q, int64_t s_kv, int64_t topk, DType dt, Ranges r, int32_t chunk) {
    Case c;
    c.name = name;
    c.s_q = s_q;
    c.s_kv = s_kv;
    c.topk = topk;
    c.dt = dt;
    c.ranges = r;
    c.chunk_rows = chunk;
    c.domain = cases.size() % 2 ? IndexDomain::kRelative : IndexDomain::kAbsolute;
    c.sorted = cases.size() % 3 != 2;
    cases.push_back(c);
  };
  add("fp8 tiny", 1, 1, 4, DType::kE4M3, Ranges::kFull, 0);
  add("fp8 causal chunk 1", 37, 300, 16, DType::kE4M3, Ranges::kCausal, 1);
  add("fp8 random chunk 3", 130, 2050, 64, DType::kE4M3, Ranges::kRandom, 3);
  add("fp8 causal chunk 64", 200, 1000, 100, DType::kE4M3, Ranges::kCausal, 64);
  add("fp8 full auto", 64, 4099, 2048, DType::kE4M3, Ranges::kFull, 0);
  add("fp8 causal k 2048", 128, 4096, 2048, DType::kE4M3, Ranges::kCausal, 0);
  add("fp8 windows, chunk 256 < s_q", 600, 32768, 32, DType::kE4M3, Ranges::kWindows, 256);
  add("bf16 causal chunk 3", 50, 700, 24, DType::kBF16, Ranges::kCausal, 3);
  add("bf16 random auto", 70, 1500, 128, DType::kBF16, Ranges::kRandom, 0);
  for (const Case& c0 : cases) check_case(c0, rng);

  // General path (h_idx, d_idx other than 64 × 128; f32 exact mode).
  Case g;
  g.name = "f32 general";
  g.s_q = 45;
  g.s_kv = 500;
  g.h = 4;
  g.d = 32;
  g.topk = 20;
  g.dt = DType::kF32;
  g.ranges = Ranges::kRandom;
  g.chunk_rows = 7;
  check_case(g, rng);
  g.name = "fp8 general";
  g.dt = DType::kE4M3;
  g.ranges = Ranges::kCausal;
  g.chunk_rows = 0;
  g.domain = IndexDomain::kRelative;
  check_case(g, rng);
}

TEST_CASE("gpu indexer_topk: captured in a CUDA graph on a user stream, replays bitwise",
          "[gpu][indexer_topk][graph]") {
  test::Rng rng(0x1d70a2);
  // Both paths: chunks of 64 rows, and chunk_rows 0 (the streaming kernel where it applies).
  const int32_t chunk = GENERATE(64, 0);
  Case c;
  c.s_q = 150;
  c.s_kv = 3000;
  c.topk = 64;
  c.chunk_rows = chunk;
  CAPTURE(chunk);
  Data dt(c, rng);
  Mirror idx(c.s_q * c.topk * 4), osc(c.s_q * c.topk * 4), keff(c.s_q * 4);
  const IndexerTopKParams p = dt.fused(true, idx, osc, keff);
  const size_t ws_bytes = workspace_size(p);  // 0 on the streaming path
  void* ws = nullptr;
  GPU_REQUIRE(cudaMalloc(&ws, std::max<size_t>(ws_bytes, 1)));
  REQUIRE(run(p, ws, ws_bytes).ok());
  test::sync_ok();
  const auto want = idx.download();
  idx.poison(0x7F);

  cudaStream_t stream;
  GPU_REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  GPU_REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const Status s = run(p, ws, ws_bytes, stream);
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  INFO(s.message());
  REQUIRE(s.ok());
  GPU_REQUIRE(end);
  cudaGraphExec_t exec = nullptr;
  GPU_REQUIRE(cudaGraphInstantiate(&exec, graph, 0));
  GPU_REQUIRE(cudaGraphLaunch(exec, stream));
  GPU_REQUIRE(cudaStreamSynchronize(stream));
  CHECK(idx.download() == want);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  cudaFree(ws);
}

// Score orders and tie patterns built to stress the streaming path (a CTA's per-row candidate
// buffer, its running threshold and the radix-select compaction back to k): every case is checked
// by check_case (bitwise vs the unfused pair and vs the CPU top-k of the GPU logits, k_eff, SPEC §5
// conformance vs the CPU logits, bitwise rerun) and by check_pattern (the selection the
// construction forces). The inputs are exact (see exact_queries), so the GPU logits must equal the
// CPU ones bit for bit.
TEST_CASE("gpu indexer_topk: adversarial score orders and ties (streaming path)", "[gpu][indexer_topk]") {
  test::Rng rng(0x1d70a3);
  auto mk = [](const char* name, Pattern pat, int64_t s_q, int64_t s_kv, int64_t topk, Ranges r, bool sorted,
               IndexDomain dom = IndexDomain::kAbsolute) {
    Case c;
    c.name = name;
    c.pattern = pat;
    c.s_q = s_q;
    c.s_kv = s_kv;
    c.topk = topk;
    c.ranges = r;
    c.sorted = sorted;
    c.domain = dom;
    c.want_stream = true;
    c.cpu_fused = false;  // = CPU logits + CPU top-k (tests/cpu); here it would only double the GEMM time
    return c;
  };
  auto with_invalid = [](Case c, int64_t every) {
    c.invalid_every = every;
    return c;
  };
  const IndexDomain rel = IndexDomain::kRelative;
  const std::vector<Case> cases = {
      // a. Every key beats the running threshold: the buffer (≈ 4000) fills and compacts back to k
      //    ≈ 80 times per row (131072 keys, ≈ 1600 admitted between compactions). Selection: the last k.
      mk("ascending, 128K full rows", Pattern::kAscending, 8, 131072, 2048, Ranges::kFull, true),
      mk("ascending, random ranges, unsorted, relative", Pattern::kAscending, 12, 32768, 2048, Ranges::kRandom, false,
         rel),
      // b. After the first k keys nothing is admitted. Selection: the first k.
      mk("descending, full rows", Pattern::kDescending, 8, 65536, 2048, Ranges::kFull, true),
      mk("descending, causal, unsorted, relative", Pattern::kDescending, 16, 16384, 2048, Ranges::kCausal, false, rel),
      // c. Every score equal: only the column order decides. Selection: the first k.
      mk("all tied, causal, sorted", Pattern::kAllTied, 16, 20000, 2048, Ranges::kCausal, true),
      mk("all tied, causal, unsorted", Pattern::kAllTied, 16, 20000, 2048, Ranges::kCausal, false),
      mk("all tied, random, sorted, relative", Pattern::kAllTied, 16, 20000, 2048, Ranges::kRandom, true, rel),
      mk("all tied, random, unsorted", Pattern::kAllTied, 16, 20000, 2048, Ranges::kRandom, false),
      // d. ≈ 1000 positive scores per full row, the rest exactly 0: the cut falls inside the zero
      //    plateau. Selection: all positives, then the first zeros.
      mk("relu zeros, causal, sorted", Pattern::kReluZeros, 16, 32768, 2048, Ranges::kCausal, true),
      mk("relu zeros, random, unsorted, relative", Pattern::kReluZeros, 16, 32768, 2048, Ranges::kRandom, false, rel),
      // e. ≤ 12 distinct scores: the k-th place inside a tie group of hundreds or thousands.
      mk("few values, random, sorted", Pattern::kFewValues, 16, 65536, 2048, Ranges::kRandom, true),
      mk("few values, random, unsorted, relative", Pattern::kFewValues, 16, 65536, 2048, Ranges::kRandom, false, rel),
      // Invalid scores (NaN, −∞) among the adversarial ones: never admitted, k_eff counts only
      // the valid keys.
      with_invalid(mk("ascending, NaN/-inf keys 1 in 7, causal, sorted", Pattern::kAscending, 8, 40000, 2048,
                      Ranges::kCausal, true),
                   7),
      with_invalid(mk("all tied, NaN/-inf keys 1 in 5, random, unsorted, relative", Pattern::kAllTied, 16, 20000,
                      2048, Ranges::kRandom, false, rel),
                   5),
      with_invalid(mk("relu zeros, NaN/-inf keys 1 in 3, mixed ranges, sorted", Pattern::kReluZeros, 13, 12289, 2047,
                      Ranges::kMixed, true),
                   3),
      // f. Shapes: s_q not a multiple of 4 (a CTA's last rows absent), empty ranges, ranges shorter
      //    than / equal to / one longer than k, k = 1 and 2047, starts off multiples of 64,
      //    s_kv = 64·m + 1, both domains and orders; random data and adversarial patterns.
      mk("random data, s_q 13, k 1, random ranges", Pattern::kRandom, 13, 3000, 1, Ranges::kRandom, true),
      mk("random data, s_q 129, k 2047, s_kv 64*64+1, causal, unsorted, relative", Pattern::kRandom, 129, 4097, 2047,
         Ranges::kCausal, false, rel),
      mk("random data, s_q 37, k 300, s_kv 64*150+1, mixed ranges, relative", Pattern::kRandom, 37, 9601, 300,
         Ranges::kMixed, true, rel),
      mk("ascending, s_q 13, k 2047, s_kv 64*300+1, mixed ranges, unsorted", Pattern::kAscending, 13, 19201, 2047,
         Ranges::kMixed, false),
      mk("ascending, s_q 18, k 512, s_kv 64*128+1, mixed ranges, relative", Pattern::kAscending, 18, 8193, 512,
         Ranges::kMixed, true, rel),
      mk("descending, s_q 5, k 2047, s_kv 64*160+1, mixed ranges", Pattern::kDescending, 5, 10241, 2047, Ranges::kMixed,
         true),
      mk("all tied, s_q 13, k 1, s_kv 64*65+1, mixed ranges, relative", Pattern::kAllTied, 13, 4161, 1, Ranges::kMixed,
         true, rel),
      mk("relu zeros, s_q 9, k 2047, s_kv 64*300+1, mixed ranges, unsorted", Pattern::kReluZeros, 9, 19201, 2047,
         Ranges::kMixed, false),
      mk("few values, s_q 13, k 2047, s_kv 64*500+1, mixed ranges, relative", Pattern::kFewValues, 13, 32001, 2047,
         Ranges::kMixed, true, rel),
  };
  for (const Case& c : cases) check_case(c, rng);
}

// A small case for compute-sanitizer (scripts/device_run.sh runs memcheck, racecheck and synccheck
// on it): 9 tokens (three CTAs, the last one partly past s_q) over 12000 keys with k = 64, so each
// streaming buffer goes through several compaction rounds, the final shrink or exact compaction and
// the sort; then the same on the chunked path (the wgmma logits kernel v2 and the filter top-k),
// which separates the streaming kernel's own reports from the logits kernel's barrier pattern.
TEST_CASE("gpu indexer_topk: small streaming case (sanitizer target)", "[gpu][indexer_topk][sanitize]") {
  test::Rng rng(0x1d70a3);
  const int32_t chunk = GENERATE(0, 64);
  CAPTURE(chunk);
  for (const bool sorted : {true, false}) {
    Case c;
    c.chunk_rows = chunk;
    c.name = sorted ? "sanitize sorted" : "sanitize unsorted";
    c.s_q = 9;
    c.s_kv = 12000;
    c.topk = 64;
    c.ranges = Ranges::kRandom;
    c.sorted = sorted;
    c.domain = sorted ? IndexDomain::kAbsolute : IndexDomain::kRelative;
    check_case(c, rng);
  }
}
