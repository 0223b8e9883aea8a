// GPU tests of the fused indexer → top-k (IndexerTopKParams): the CUDA path against
//   - the CUDA unfused pair (indexer_logits into a full logits tensor, then topk) on the same
//     inputs: bitwise equal indices, scores and k_eff (same kernels, same per-element arithmetic);
//   - the CPU reference logits, with SPEC §5's conformance rule for another implementation's
//     scores (r = CPU logits, r₍k₎ its k_eff-th largest in [ks, ke), δ from §9.4: 2e-3·max|row| FP8,
//     1e-5·max|row| exact): every selected c has r_c ≥ r₍k₎ − δ, every unselected valid c has
//     r_c ≤ r₍k₎ + δ; selected scores within δ of r_c; k_eff exact; −1 / −∞ padding.
// Also: chunk sizes 1, 3, 64, 256 and automatic, both
// index domains, sorted and unsorted, bitwise reruns, CUDA-graph capture, and a workspace one byte
// too small (kWorkspaceTooSmall). Outputs start poisoned.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
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

enum class Ranges { kFull, kCausal, kRandom, kWindows };

struct Case {
  const char* name = "";
  int64_t s_q = 0, s_kv = 0, h = 64, d = 128, topk = 16;
  DType dt = DType::kE4M3;
  Ranges ranges = Ranges::kCausal;
  int32_t chunk_rows = 0;
  IndexDomain domain = IndexDomain::kAbsolute;
  bool sorted = true;
};

template <typename T>
std::vector<T> as(const std::vector<uint8_t>& b) {
  std::vector<T> v(b.size() / sizeof(T));
  std::memcpy(v.data(), b.data(), v.size() * sizeof(T));
  return v;
}

struct Data {
  const Case& c;
  bool fp8;
  int64_t es;
  Mirror q, k, sc, w, ks, ke;
  std::vector<int32_t> ks_h, ke_h;

  Data(const Case& c_, test::Rng& rng)
      : c(c_),
        fp8(c_.dt == DType::kE4M3),
        es(c_.dt == DType::kE4M3 ? 1 : (c_.dt == DType::kBF16 ? 2 : 4)),
        q(std::max<int64_t>(1, c_.s_q * c_.h * c_.d) * es),
        k(std::max<int64_t>(1, c_.s_kv * c_.d) * es),
        sc(c_.s_kv * 4 + 4),
        w(c_.s_q * c_.h * 4 + 4),
        ks(c_.s_q * 4 + 4),
        ke(c_.s_q * 4 + 4) {
    auto put = [&](Mirror& m, int64_t i, double x) {
      if (fp8)
        m.host()[i] = float_to_e4m3(static_cast<float>(x));
      else if (c.dt == DType::kBF16)
        m.host_as<bf16_t>()[i] = float_to_bf16(static_cast<float>(x));
      else
        m.host_as<float>()[i] = static_cast<float>(x);
    };
    const double amp = fp8 ? 2.0 : 0.5;
    for (int64_t i = 0; i < c.s_kv * c.d; ++i) put(k, i, rng.normal() * amp);
    for (int64_t i = 0; i < c.s_q * c.h * c.d; ++i) put(q, i, rng.normal() * amp);
    for (int64_t s = 0; s < c.s_kv; ++s) sc.host_as<float>()[s] = static_cast<float>(rng.uniform(1e-3, 2e-2));
    // Positive head weights: no cancellation, so δ·max|row| is a meaningful scale (see
    // test_gpu_indexer.cpp).
    for (int64_t i = 0; i < c.s_q * c.h; ++i)
      w.host_as<float>()[i] = static_cast<float>(std::fabs(rng.normal() * 0.05) + 1e-3);
    ks_h.assign(c.s_q, 0);
    ke_h.assign(c.s_q, static_cast<int32_t>(c.s_kv));
    for (int64_t t = 0; t < c.s_q; ++t) {
      if (c.ranges == Ranges::kCausal) {  // a chunk of one sequence after s_kv − s_q earlier keys
        ke_h[t] = static_cast<int32_t>(std::min<int64_t>(c.s_kv, c.s_kv - c.s_q + t + 1));
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

void check_case(const Case& c, test::Rng& rng) {
  CAPTURE(c.name, c.s_q, c.s_kv, c.h, c.d, c.topk, dtype_name(c.dt), (int)c.ranges, c.chunk_rows, (int)c.domain,
          c.sorted);
  Data dt(c, rng);
  const size_t nk = static_cast<size_t>(std::max<int64_t>(1, c.s_q * c.topk)) * 4, nr = c.s_q * 4 + 4;
  Mirror idx(nk), osc(nk), keff(nr), idx2(nk), osc2(nk), keff2(nr), logits(std::max<int64_t>(1, c.s_q * c.s_kv) * 4);
  for (Mirror* m : {&idx, &keff, &idx2, &keff2}) m->poison(0x7F);
  for (Mirror* m : {&osc, &osc2, &logits}) m->poison(0xFF);

  // Fused on the GPU.
  const IndexerTopKParams fp = dt.fused(true, idx, osc, keff);
  const size_t ws_bytes = workspace_size(fp);
  CHECK(ws_bytes > 0);
  void* ws = nullptr;
  GPU_REQUIRE(cudaMalloc(&ws, std::max<size_t>(ws_bytes, 1)));
  {
    const Status s = run(fp, ws, ws_bytes);
    INFO("cuda fused: " << s.message());
    REQUIRE(s.ok());
  }
  test::sync_ok();
  const auto f_idx = idx.download(), f_osc = osc.download(), f_keff = keff.download();

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

  // CPU reference logits: SPEC §5 conformance of the CUDA selection.
  REQUIRE(ref::run(dt.logits(false, logits)).ok());
  check_conformance(dt, as<float>(logits.host_bytes()), as<int32_t>(f_idx), as<float>(f_osc), as<int32_t>(f_keff));

  // The CPU fused reference runs on the same problem (its exactness is tests/cpu/test_indexer_topk).
  REQUIRE(ref::run(dt.fused(false, idx, osc, keff)).ok());

  // Rerun, poisoned again: bitwise identical.
  idx.poison(0x7F);
  osc.poison(0xFF);
  keff.poison(0x7F);
  REQUIRE(run(fp, ws, ws_bytes).ok());
  test::sync_ok();
  CHECK(idx.download() == f_idx);
  CHECK(osc.download() == f_osc);
  CHECK(keff.download() == f_keff);

  // One byte too few.
  const Status small = run(fp, ws, ws_bytes - 1);
  CHECK(small.code() == StatusCode::kWorkspaceTooSmall);
  CHECK(small.message().find("indexer_topk") != std::string::npos);
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
  Case c;
  c.s_q = 150;
  c.s_kv = 3000;
  c.topk = 64;
  c.chunk_rows = 64;
  Data dt(c, rng);
  Mirror idx(c.s_q * c.topk * 4), osc(c.s_q * c.topk * 4), keff(c.s_q * 4);
  const IndexerTopKParams p = dt.fused(true, idx, osc, keff);
  const size_t ws_bytes = workspace_size(p);
  void* ws = nullptr;
  GPU_REQUIRE(cudaMalloc(&ws, ws_bytes));
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
