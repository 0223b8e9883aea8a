// dsa_demo — one DeepSeek Sparse Attention layer, end to end, through the public API only.
//
//   RoPE table → indexer prep (FP8: RoPE, Hadamard, FP8, weight fold, paged key-cache write)
//   → indexer logits (ragged causal [ks, ke)) → top-k → MLA cache write (FP8, 656 B/token)
//   → sparse MLA forward
//
// Every stage runs through dsa::run on host pointers (the CPU reference). The demo then checks the
// results against float64 computations written here from the SPEC formulas, cross-checks sparse
// attention against dense attention where the two must agree, checks the top-k, and prints one
// table. With a CUDA build and a CUDA device, the same stages run again on device pointers, each
// on the CPU stage's inputs, and a second column reports their status, time and error.
//
// Exit code: 0 when every check passed, 1 when a check failed, 2 on bad flags.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "dsa/dsa.hpp"

#if defined(DSA_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace {

using dsa::bf16_t;
using dsa::DType;
using dsa::TensorView;
using Clock = std::chrono::steady_clock;

// ---- options -----------------------------------------------------------------------------------

struct Options {
  int64_t tokens = 2048;
  int seqs = 2;
  int topk = 512;
  int heads = 128;        // MLA heads h_q
  int idx_heads = 64;     // indexer heads h_idx
  int page = 64;          // page_block_size P of both caches
  int check_rows = 16;    // rows of the float64 checks
  uint64_t seed = 1;
  std::string device = "auto";
};

void usage() {
  std::printf(
      "usage: dsa_demo [--tokens N] [--seqs S] [--topk K] [--heads H] [--idx-heads HI]\n"
      "                [--page P] [--check-rows R] [--seed S] [--device cpu|cuda|auto]\n"
      "  default: 2 ragged sequences, 2048 tokens, MLA 128 heads (d_qk 576, d_v 512),\n"
      "  indexer 64 x 128, topk 512, sm_scale = dsa::kSoftmaxScaleV32.\n"
      "  DeepSeek-V3.2 sizes: --topk 2048 --tokens 4096 (or more).\n");
}

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "dsa_demo: %s needs a value\n", name);
        return nullptr;
      }
      return argv[++i];
    };
    const char* v = nullptr;
    if (a == "--help" || a == "-h") {
      usage();
      std::exit(0);
    } else if (a == "--tokens") {
      if (!(v = next("--tokens"))) return false;
      o.tokens = std::atoll(v);
    } else if (a == "--seqs") {
      if (!(v = next("--seqs"))) return false;
      o.seqs = std::atoi(v);
    } else if (a == "--topk") {
      if (!(v = next("--topk"))) return false;
      o.topk = std::atoi(v);
    } else if (a == "--heads") {
      if (!(v = next("--heads"))) return false;
      o.heads = std::atoi(v);
    } else if (a == "--idx-heads") {
      if (!(v = next("--idx-heads"))) return false;
      o.idx_heads = std::atoi(v);
    } else if (a == "--page") {
      if (!(v = next("--page"))) return false;
      o.page = std::atoi(v);
    } else if (a == "--check-rows") {
      if (!(v = next("--check-rows"))) return false;
      o.check_rows = std::atoi(v);
    } else if (a == "--seed") {
      if (!(v = next("--seed"))) return false;
      o.seed = std::strtoull(v, nullptr, 10);
    } else if (a == "--device") {
      if (!(v = next("--device"))) return false;
      o.device = v;
    } else {
      std::fprintf(stderr, "dsa_demo: unknown flag %s\n", a.c_str());
      return false;
    }
  }
  if (o.tokens < 1 || o.seqs < 1 || o.seqs > o.tokens || o.topk < 1 || o.heads < 1 ||
      o.idx_heads < 1 || o.page < 1 || o.check_rows < 1 ||
      (o.device != "cpu" && o.device != "cuda" && o.device != "auto")) {
    std::fprintf(stderr, "dsa_demo: bad flag values (need tokens >= seqs >= 1, topk, heads, "
                         "idx-heads, page, check-rows >= 1, device cpu|cuda|auto)\n");
    return false;
  }
  return true;
}

// ---- small helpers ---------------------------------------------------------------------------

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double bf(bf16_t x) { return dsa::bf16_to_float(x); }

// The SPEC §9.3 metrics plus rel-L2, and the §9.4 element test when a tolerance is given.
struct Metrics {
  bool have = false;
  double max_abs = 0, rel_l2 = 0, cos_diff = 0;
  int64_t count = 0, elem_fail = 0, special_mismatch = 0;
};

struct Tol {
  double abs_tol, rel_tol, cos_tol;
};
constexpr Tol kPrefillOut{8e-4, 3.01 / 128, 7e-6};     // SPEC §9.4 prefill out
constexpr Tol kPrefillLse{1e-6, 2.01 / 65536, 1e-7};   // SPEC §9.4 prefill lse

Metrics compare(const std::vector<double>& a, const std::vector<double>& r, const Tol* tol) {
  Metrics m;
  m.have = true;
  m.count = static_cast<int64_t>(a.size());
  double num = 0, den = 0, d2 = 0, r2 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const bool fa = std::isfinite(a[i]), fr = std::isfinite(r[i]);
    if (!fa || !fr) {
      const bool same = (std::isnan(a[i]) && std::isnan(r[i])) || a[i] == r[i];
      if (!same) ++m.special_mismatch;
      continue;  // zeroed in the sums (SPEC §9.3)
    }
    const double e = std::fabs(a[i] - r[i]);
    m.max_abs = std::max(m.max_abs, e);
    d2 += e * e;
    r2 += r[i] * r[i];
    num += a[i] * r[i];
    den += a[i] * a[i] + r[i] * r[i];
    if (tol && !(e < tol->abs_tol || e / (std::fabs(r[i]) + 1e-6) < tol->rel_tol)) ++m.elem_fail;
  }
  m.rel_l2 = r2 > 0 ? std::sqrt(d2 / r2) : std::sqrt(d2);
  m.cos_diff = den > 0 ? 1.0 - 2.0 * num / den : 0.0;
  return m;
}

bool within(const Metrics& m, const Tol& t) {
  return m.elem_fail == 0 && m.special_mismatch == 0 && m.cos_diff <= t.cos_tol;
}

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

// ---- the report table ------------------------------------------------------------------------

struct Row {
  std::string stage;
  double cpu_s = -1;
  std::string rate;
  Metrics m;
  std::string status = "ok";
  bool ok = true;
  std::string cuda = "-";
};

std::deque<Row> g_rows;  // deque: add_row() references stay valid
bool g_failed = false;

Row& add_row(const std::string& stage) {
  g_rows.push_back(Row{});
  g_rows.back().stage = stage;
  return g_rows.back();
}

void fail(Row& r, const std::string& why) {
  if (r.ok) r.status = "FAIL: " + why;
  else r.status += "; " + why;
  r.ok = false;
  g_failed = true;
}

std::string time_str(double s) {
  if (s < 0) return "-";
  if (s < 1e-3) return fmt("%.1f us", s * 1e6);
  if (s < 1) return fmt("%.1f ms", s * 1e3);
  return fmt("%.2f s", s);
}

std::string rate_flops(double flop, double s) {
  return s > 0 ? fmt("%.2f GFLOP/s", flop / s * 1e-9) : "-";
}
std::string rate_per_s(double n, double s, const char* unit) {
  if (s <= 0) return "-";
  const double r = n / s;
  if (r >= 1e6) return fmt("%.2f M", r * 1e-6) + unit;
  if (r >= 1e3) return fmt("%.1f K", r * 1e-3) + unit;
  return fmt("%.1f ", r) + unit;
}

void print_table(bool cuda_column) {
  std::printf("\n%-22s | %-9s | %-24s | %-9s %-9s %-9s | %s\n", "stage", "CPU time", "CPU rate",
              "max abs", "rel-L2", "cos_diff", "CPU status");
  std::printf("%s\n", std::string(22 + 3 + 9 + 3 + 24 + 3 + 29 + 3 + 12, '-').c_str());
  for (const Row& r : g_rows) {
    std::string a = "-", b = "-", c = "-";  // ASCII: printf widths count bytes
    if (r.m.have) {
      a = fmt("%.2e", r.m.max_abs);
      b = fmt("%.2e", r.m.rel_l2);
      c = fmt("%.2e", r.m.cos_diff);
    }
    std::printf("%-22s | %-9s | %-24s | %-9s %-9s %-9s | %s\n", r.stage.c_str(),
                time_str(r.cpu_s).c_str(), r.rate.c_str(), a.c_str(), b.c_str(), c.c_str(),
                r.status.c_str());
  }
  if (cuda_column) {
    std::printf("\n%-22s | %s\n", "stage", "CUDA (same inputs as the CPU stage; compared with its output)");
    std::printf("%s\n", std::string(90, '-').c_str());
    for (const Row& r : g_rows) std::printf("%-22s | %s\n", r.stage.c_str(), r.cuda.c_str());
  }
}

// ---- problem -----------------------------------------------------------------------------------

struct Problem {
  int64_t T = 0;                 // packed tokens (queries = keys: one prefill of every sequence)
  std::vector<int64_t> seq_start, seq_len;
  std::vector<int32_t> positions, ks, ke;  // per token
  int32_t max_pos = 0;
  int64_t num_blocks = 0;        // pages per cache
  std::vector<int32_t> slots;    // physical slot of each token (pages permuted)
};

Problem make_problem(const Options& o, std::mt19937_64& gen) {
  Problem p;
  p.T = o.tokens;
  // Ragged lengths: weights in [0.5, 1.5), scaled to T tokens, each sequence ≥ 1 token.
  std::uniform_real_distribution<double> u(0.5, 1.5);
  std::vector<double> w(o.seqs);
  for (double& x : w) x = u(gen);
  const double sum = std::accumulate(w.begin(), w.end(), 0.0);
  int64_t left = p.T;
  for (int s = 0; s < o.seqs; ++s) {
    int64_t n = s + 1 == o.seqs ? left
                                : std::max<int64_t>(1, std::llround(p.T * w[s] / sum));
    n = std::min<int64_t>(n, left - (o.seqs - 1 - s));
    p.seq_start.push_back(p.T - left);
    p.seq_len.push_back(n);
    left -= n;
  }
  for (int s = 0; s < o.seqs; ++s)
    for (int64_t i = 0; i < p.seq_len[s]; ++i) {
      p.positions.push_back(static_cast<int32_t>(i));
      p.ks.push_back(static_cast<int32_t>(p.seq_start[s]));
      p.ke.push_back(static_cast<int32_t>(p.seq_start[s] + i + 1));  // causal, diagonal included
    }
  p.max_pos = static_cast<int32_t>(*std::max_element(p.seq_len.begin(), p.seq_len.end()));
  // Paged caches: token t lives on logical page t / P, mapped to a shuffled physical page.
  p.num_blocks = (p.T + o.page - 1) / o.page;
  std::vector<int32_t> perm(p.num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), gen);
  for (int64_t t = 0; t < p.T; ++t)
    p.slots.push_back(static_cast<int32_t>(perm[t / o.page] * o.page + t % o.page));
  return p;
}

// randn·scale + a per-tensor offset in [−0.05, 0.05], clamped to ±10 (SPEC §9.5), as bf16.
std::vector<bf16_t> random_bf16(int64_t n, double scale, std::mt19937_64& gen) {
  std::normal_distribution<double> nd(0.0, 1.0);
  const double offset = std::uniform_real_distribution<double>(-0.05, 0.05)(gen);
  std::vector<bf16_t> v(n);
  for (auto& x : v)
    x = dsa::float_to_bf16(static_cast<float>(std::clamp(nd(gen) * scale + offset, -10.0, 10.0)));
  return v;
}

std::vector<int64_t> sample_rows(const Problem& p, int count, std::mt19937_64& gen) {
  // The first and last token of every sequence, then random rows.
  std::vector<int64_t> rows;
  for (size_t s = 0; s < p.seq_start.size() && (int)rows.size() < count; ++s) {
    rows.push_back(p.seq_start[s]);
    if ((int)rows.size() < count) rows.push_back(p.seq_start[s] + p.seq_len[s] - 1);
  }
  std::uniform_int_distribution<int64_t> pick(0, p.T - 1);
  while ((int)rows.size() < std::min<int64_t>(count, p.T)) rows.push_back(pick(gen));
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}

// ---- param builders (shared by the CPU and the CUDA run: only the pointers differ) ---------------

struct IdxPrepPtrs {
  void *q, *w, *k, *pos, *cos, *sin, *q_out, *w_out, *k_out, *k_scale, *cache, *slots;
};
dsa::IndexerPrepParams prep_params(const Options& o, const Problem& p, const IdxPrepPtrs& x) {
  using dsa::make_view;
  dsa::IndexerPrepParams q;
  const int64_t T = p.T, H = o.idx_heads;
  q.q = make_view(x.q, DType::kBF16, {T, H, 128});
  q.weights = make_view(x.w, DType::kF32, {T, H});
  q.k = make_view(x.k, DType::kBF16, {T, 128});
  q.positions = make_view(x.pos, DType::kI32, {T});
  q.rope_cos = make_view(x.cos, DType::kF32, {p.max_pos, 32});
  q.rope_sin = make_view(x.sin, DType::kF32, {p.max_pos, 32});
  q.mode = dsa::IndexerMode::kFp8;
  q.hadamard = true;
  q.scale_format = dsa::ScaleFormat::kUe8m0;
  q.q_out = make_view(x.q_out, DType::kE4M3, {T, H, 128});
  q.weights_out = make_view(x.w_out, DType::kF32, {T, H});
  q.k_out = make_view(x.k_out, DType::kE4M3, {T, 128});
  q.k_scale_out = make_view(x.k_scale, DType::kF32, {T});
  q.k_cache = make_view(x.cache, DType::kU8, {p.num_blocks, int64_t{132} * o.page});
  q.slot_mapping = make_view(x.slots, DType::kI32, {T});
  q.page_block_size = o.page;
  return q;
}

dsa::IndexerLogitsParams logits_params(const Options& o, const Problem& p, int64_t r0, int64_t rows,
                                       void* q, void* k, void* k_scale, void* w, void* ks, void* ke,
                                       void* logits) {
  using dsa::make_view;
  const int64_t T = p.T, H = o.idx_heads;
  dsa::IndexerLogitsParams l;
  l.q = make_view(static_cast<uint8_t*>(q) + r0 * H * 128, DType::kE4M3, {rows, H, 128});
  l.k = make_view(k, DType::kE4M3, {T, 128});
  l.k_scale = make_view(k_scale, DType::kF32, {T});
  l.weights = make_view(static_cast<float*>(w) + r0 * H, DType::kF32, {rows, H});
  l.ks = make_view(static_cast<int32_t*>(ks) + r0, DType::kI32, {rows});
  l.ke = make_view(static_cast<int32_t*>(ke) + r0, DType::kI32, {rows});
  l.logits = make_view(logits, DType::kF32, {rows, T});
  l.clean_logits = true;
  return l;
}

dsa::TopKParams topk_params(const Options& o, const Problem& p, int64_t r0, int64_t rows,
                            void* logits, void* ks, void* ke, void* indices) {
  using dsa::make_view;
  dsa::TopKParams t;
  t.scores = make_view(logits, DType::kF32, {rows, p.T});
  t.ks = make_view(static_cast<int32_t*>(ks) + r0, DType::kI32, {rows});
  t.ke = make_view(static_cast<int32_t*>(ke) + r0, DType::kI32, {rows});
  t.indices = make_view(static_cast<int32_t*>(indices) + r0 * o.topk, DType::kI32, {rows, o.topk});
  t.domain = dsa::IndexDomain::kAbsolute;
  t.sorted = true;
  return t;
}

// The fused indexer → top-k on rows [0, rows) (chunk_rows 0: the CUDA backend's streaming kernel,
// whose scores never leave the SM, where it applies).
dsa::IndexerTopKParams fused_params(const Options& o, const Problem& p, int64_t rows, void* q, void* k,
                                    void* k_scale, void* w, void* ks, void* ke, void* indices) {
  const dsa::IndexerLogitsParams l = logits_params(o, p, 0, rows, q, k, k_scale, w, ks, ke, nullptr);
  dsa::IndexerTopKParams f;
  f.q = l.q;
  f.k = l.k;
  f.k_scale = l.k_scale;
  f.weights = l.weights;
  f.ks = l.ks;
  f.ke = l.ke;
  f.indices = dsa::make_view(indices, DType::kI32, {rows, o.topk});
  f.domain = dsa::IndexDomain::kAbsolute;
  f.sorted = true;
  return f;
}

dsa::MlaCacheWriteParams cache_params(const Options& o, const Problem& p, void* kv, void* slots,
                                      void* cache) {
  using dsa::make_view;
  dsa::MlaCacheWriteParams c;
  c.kv = make_view(kv, DType::kBF16, {p.T, 576});
  c.slot_mapping = make_view(slots, DType::kI32, {p.T});
  c.cache = make_view(cache, DType::kU8, {p.num_blocks, o.page, 656});
  c.scale_format = dsa::ScaleFormat::kUe8m0;
  return c;
}

dsa::SparseMlaFwdParams sparse_params(const Options& o, const Problem& p, void* q, void* kv,
                                      void* indices, void* out, void* lse, void* max_logits) {
  using dsa::make_view;
  dsa::SparseMlaFwdParams s;
  s.q = make_view(q, DType::kBF16, {p.T, o.heads, 576});
  s.kv = make_view(kv, DType::kBF16, {p.T, 576});
  s.indices = make_view(indices, DType::kI32, {p.T, o.topk});
  s.out = make_view(out, DType::kBF16, {p.T, o.heads, 512});
  s.lse = make_view(lse, DType::kF32, {p.T, o.heads});
  s.max_logits = make_view(max_logits, DType::kF32, {p.T, o.heads});
  s.sm_scale = dsa::kSoftmaxScaleV32;
  return s;
}

// ---- CUDA helpers --------------------------------------------------------------------------------

// Elements that differ bit for bit.
template <class T>
int64_t count_diff(const std::vector<T>& a, const std::vector<T>& b) {
  int64_t n = 0;
  const size_t m = std::min(a.size(), b.size());
  for (size_t i = 0; i < m; ++i) n += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return n + static_cast<int64_t>(std::max(a.size(), b.size()) - m);
}

#if defined(DSA_WITH_CUDA)
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t n) : bytes(n) {
    if (cudaMalloc(&p, n ? n : 1) != cudaSuccess) p = nullptr;
  }
  template <class T>
  explicit DevBuf(const std::vector<T>& host) : DevBuf(host.size() * sizeof(T)) {
    if (p && bytes) cudaMemcpy(p, host.data(), bytes, cudaMemcpyHostToDevice);
  }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <class T>
  std::vector<T> get() const {
    std::vector<T> h(bytes / sizeof(T));
    if (p && bytes) cudaMemcpy(h.data(), p, bytes, cudaMemcpyDeviceToHost);
    return h;
  }
  void poison() {
    if (p) cudaMemset(p, 0xFF, bytes);
  }
};

// Runs `call` (which issues dsa::run on device pointers), times it, and describes the status.
// Returns true when the call succeeded (results are then worth comparing).
bool cuda_call(Row& r, const std::function<dsa::Status()>& call, double* secs) {
  cudaDeviceSynchronize();
  const auto t0 = Clock::now();
  dsa::Status s = call();
  const cudaError_t e = cudaDeviceSynchronize();
  *secs = seconds_since(t0);
  if (s.code() == dsa::StatusCode::kNotImplemented) {
    r.cuda = "not implemented on CUDA yet (" + std::string(dsa::status_code_name(s.code())) + ")";
    return false;
  }
  if (s.code() == dsa::StatusCode::kUnsupportedShape || s.code() == dsa::StatusCode::kUnsupportedDtype ||
      s.code() == dsa::StatusCode::kUnsupportedArch) {
    // A documented limit of the kernel (e.g. its head counts), not a wrong answer.
    r.cuda = "not supported on CUDA for this problem: " + s.message();
    return false;
  }
  if (!s.ok()) {
    r.cuda = "FAIL: " + s.message();
    g_failed = true;
    return false;
  }
  if (e != cudaSuccess) {
    r.cuda = std::string("FAIL: CUDA error after the call: ") + cudaGetErrorString(e);
    g_failed = true;
    return false;
  }
  return true;
}


void cuda_bitexact(Row& r, double secs, int64_t diffs, int64_t total, const char* what) {
  if (diffs == 0) {
    r.cuda = "ok  " + time_str(secs) + "  bit-exact " + what;
  } else {
    r.cuda = "FAIL  " + time_str(secs) + "  " + std::to_string(diffs) + " of " +
             std::to_string(total) + " " + what + " differ from the CPU reference (must be bit-exact)";
    g_failed = true;
  }
}
#endif

// ---- float64 checks, straight from the SPEC formulas --------------------------------------------

// YaRN frequencies (SPEC §3.3) in float64.
std::vector<double> yarn_freqs() {
  const double pi = 3.14159265358979323846;
  auto corr = [&](double r) { return 64 * std::log(4096 / (2 * pi * r)) / (2 * std::log(10000.0)); };
  const double low = std::max(std::floor(corr(32)), 0.0), high = std::min(std::ceil(corr(1)), 63.0);
  std::vector<double> f(32);
  for (int i = 0; i < 32; ++i) {
    const double base = 1.0 / std::pow(10000.0, 2.0 * i / 64);
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    const double smooth = 1 - ramp;
    f[i] = base / 40 * (1 - smooth) + base * smooth;
  }
  return f;
}

// Indexer RoPE (non-interleaved, dims [0, 64)) then H128/√128, in float64, on one 128-vector.
void idx_rope_hadamard(const bf16_t* x, int32_t pos, const std::vector<float>& cos,
                       const std::vector<float>& sin, double* y) {
  double v[128];
  for (int d = 0; d < 128; ++d) v[d] = bf(x[d]);
  for (int i = 0; i < 32; ++i) {
    const double c = cos[pos * 32 + i], s = sin[pos * 32 + i];
    const double a = v[i], b = v[i + 32];
    v[i] = a * c - b * s;
    v[i + 32] = a * s + b * c;
  }
  for (int r = 0; r < 128; ++r) {
    double acc = 0;
    for (int c = 0; c < 128; ++c) acc += (__builtin_popcount(r & c) & 1) ? -v[c] : v[c];
    y[r] = acc / std::sqrt(128.0);
  }
}

// Sparse (or dense, when `sel` lists every key) MQA attention of one query row in float64.
void attention_row(const bf16_t* q_row, const std::vector<bf16_t>& kv, const std::vector<int64_t>& sel,
                   int heads, double scale, std::vector<double>& out, std::vector<double>& lse) {
  out.assign(static_cast<size_t>(heads) * 512, 0.0);
  lse.assign(heads, std::numeric_limits<double>::infinity());
  if (sel.empty()) return;
  std::vector<double> z(sel.size());
  for (int h = 0; h < heads; ++h) {
    const bf16_t* q = q_row + static_cast<size_t>(h) * 576;
    double mx = -std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < sel.size(); ++i) {
      const bf16_t* k = kv.data() + sel[i] * 576;
      double acc = 0;
      for (int d = 0; d < 576; ++d) acc += bf(q[d]) * bf(k[d]);
      z[i] = scale * acc;
      mx = std::max(mx, z[i]);
    }
    double sum = 0;
    for (double zi : z) sum += std::exp(zi - mx);
    lse[h] = mx + std::log(sum);
    double* o = out.data() + static_cast<size_t>(h) * 512;
    for (size_t i = 0; i < sel.size(); ++i) {
      const double pw = std::exp(z[i] - lse[h]);
      const bf16_t* v = kv.data() + sel[i] * 576;
      for (int d = 0; d < 512; ++d) o[d] += pw * bf(v[d]);
    }
  }
}

// Bad flag values or a failed run() are reported in the row; later stages that need the output
// are then skipped.
bool run_ok(Row& r, const dsa::Status& s) {
  if (s.ok()) return true;
  if (s.code() == dsa::StatusCode::kNotImplemented)
    fail(r, std::string("not implemented: ") + s.message());
  else
    fail(r, std::string(dsa::status_code_name(s.code())) + ": " + s.message());
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) {
    usage();
    return 2;
  }
  std::mt19937_64 gen(o.seed);
  const Problem P = make_problem(o, gen);
  const int64_t T = P.T;
  const int H = o.heads, HI = o.idx_heads, K = o.topk;
  const auto t_total = Clock::now();

  // ---- CUDA availability ----
  bool use_cuda = false;
  std::string cuda_note;
#if defined(DSA_WITH_CUDA)
  int ndev = 0;
  const cudaError_t ce = cudaGetDeviceCount(&ndev);
  if (o.device != "cpu") {
    if (ce == cudaSuccess && ndev > 0) {
      cudaDeviceProp prop{};
      cudaGetDeviceProperties(&prop, 0);
      use_cuda = true;
      cuda_note = std::string("CUDA device 0: ") + prop.name;
    } else {
      cuda_note = "no CUDA device found";
      cudaGetLastError();
    }
  } else {
    cuda_note = "CUDA column off (--device cpu)";
  }
#else
  cuda_note = "this build has no CUDA (DSA_ENABLE_CUDA=OFF or nvcc not found)";
#endif
  if (o.device == "cuda" && !use_cuda) {
    std::fprintf(stderr, "dsa_demo: --device cuda, but %s\n", cuda_note.c_str());
    return 2;
  }

  std::printf("dsa %s — one DeepSeek Sparse Attention layer (prefill), CPU reference via dsa::run\n",
              dsa::version_string());
  std::printf("problem: %lld tokens in %d ragged sequences (", (long long)T, o.seqs);
  for (size_t s = 0; s < P.seq_len.size(); ++s)
    std::printf("%s%lld", s ? " + " : "", (long long)P.seq_len[s]);
  std::printf("), MLA h_q %d (d_qk 576, d_v 512), indexer %d x 128, topk %d, page %d,\n"
              "         sm_scale %.10f (kSoftmaxScaleV32), seed %llu; %s\n",
              H, HI, K, o.page, (double)dsa::kSoftmaxScaleV32, (unsigned long long)o.seed,
              cuda_note.c_str());

  // ---- inputs (what the caller's projections would produce) ----
  const std::vector<bf16_t> idx_q = random_bf16(T * HI * 128, 1.0, gen);  // wq_b(c^Q)
  const std::vector<bf16_t> idx_k = random_bf16(T * 128, 1.0, gen);       // LayerNorm(wk(x))
  std::vector<float> idx_w(T * HI);                                        // weights_proj(x)
  {
    std::normal_distribution<float> nd(0.f, 1.f);
    for (float& x : idx_w) x = nd(gen);
  }
  const std::vector<bf16_t> mla_q = random_bf16(T * H * 576, 0.1, gen);   // [q̄ | q_pe]
  const std::vector<bf16_t> mla_kv = random_bf16(T * 576, 0.1, gen);      // [c^KV | k^R]
  const std::vector<int64_t> check = sample_rows(P, o.check_rows, gen);
  std::vector<int32_t> positions = P.positions, ks = P.ks, ke = P.ke, slots = P.slots;

  // ==== 1. RoPE table (OP-ROPE) ====
  std::vector<float> cos_t(static_cast<size_t>(P.max_pos) * 32), sin_t(cos_t.size());
  bool have_table = false;
  {
    Row& r = add_row("rope_table");
    dsa::RopeTableParams p;
    p.cos = dsa::make_view(cos_t.data(), DType::kF32, {P.max_pos, 32});
    p.sin = dsa::make_view(sin_t.data(), DType::kF32, {P.max_pos, 32});
    const auto t0 = Clock::now();
    const dsa::Status s = dsa::run(p);
    r.cpu_s = seconds_since(t0);
    r.rate = rate_per_s(double(P.max_pos), r.cpu_s, "pos/s");
    if (run_ok(r, s)) {
      have_table = true;
      // float64 YaRN vs the fp32 table. The fp32 angle fl32(p·f_i) carries a relative rounding of
      // a few ulps of p·f_i, hence the bound ~ 1e-6·max angle.
      const std::vector<double> f = yarn_freqs();
      std::vector<double> a, ref;
      double max_angle = 0;
      for (int32_t pos = 0; pos < P.max_pos; ++pos)
        for (int i = 0; i < 32; ++i) {
          const double th = pos * f[i];
          max_angle = std::max(max_angle, th);
          a.push_back(cos_t[pos * 32 + i]);
          ref.push_back(std::cos(th));
          a.push_back(sin_t[pos * 32 + i]);
          ref.push_back(std::sin(th));
        }
      r.m = compare(a, ref, nullptr);
      const double bound = 1e-6 + 1e-6 * max_angle;
      if (!(r.m.max_abs <= bound) || r.m.special_mismatch)
        fail(r, "cos/sin differ from float64 YaRN by " + fmt("%.2e", r.m.max_abs) + " > " +
                    fmt("%.2e", bound));
    }
#if defined(DSA_WITH_CUDA)
    if (use_cuda) {
      DevBuf dc(cos_t.size() * 4), ds(sin_t.size() * 4);
      dc.poison();
      ds.poison();
      dsa::RopeTableParams q = p;
      q.cos.data = dc.p;
      q.sin.data = ds.p;
      double secs = 0;
      if (cuda_call(r, [&] { return dsa::run(q); }, &secs)) {
        // f_i uses powf, which is not correctly rounded (SPEC §3.3): report, compare loosely.
        std::vector<double> a, ref;
        for (float x : dc.get<float>()) a.push_back(x);
        for (float x : ds.get<float>()) a.push_back(x);
        for (float x : cos_t) ref.push_back(x);
        for (float x : sin_t) ref.push_back(x);
        const Metrics m = compare(a, ref, nullptr);
        r.cuda = "ok  " + time_str(secs) + "  max abs vs CPU " + fmt("%.2e", m.max_abs);
      }
    }
#endif
  }

  // ==== 2. Indexer prep (OP-IDXPREP, FP8 mode) ====
  std::vector<uint8_t> q_fp8(T * HI * 128), k_fp8(T * 128);
  std::vector<float> w_fold(T * HI), k_scale(T);
  std::vector<uint8_t> idx_cache(static_cast<size_t>(P.num_blocks) * 132 * o.page, 0);
  bool have_prep = false;
  {
    Row& r = add_row("indexer_prep (FP8)");
    if (!have_table) {
      fail(r, "skipped: needs the RoPE table");
    } else {
      IdxPrepPtrs x{(void*)idx_q.data(), idx_w.data(), (void*)idx_k.data(), positions.data(),
                    cos_t.data(), sin_t.data(), q_fp8.data(), w_fold.data(), k_fp8.data(),
                    k_scale.data(), idx_cache.data(), slots.data()};
      const dsa::IndexerPrepParams p = prep_params(o, P, x);
      const auto t0 = Clock::now();
      const dsa::Status s = dsa::run(p);
      r.cpu_s = seconds_since(t0);
      r.rate = rate_per_s(double(T), r.cpu_s, "tok/s");
      if (run_ok(r, s)) {
        have_prep = true;
        // (a) The paged cache holds exactly k_out and k_scale_out (SPEC §7.2 page layout).
        int64_t cache_diff = 0;
        for (int64_t t = 0; t < T; ++t) {
          const int64_t page = slots[t] / o.page, off = slots[t] % o.page;
          const uint8_t* pg = idx_cache.data() + page * 132 * o.page;
          cache_diff += std::memcmp(pg + 128 * off, &k_fp8[t * 128], 128) != 0;
          cache_diff += std::memcmp(pg + 128 * o.page + 4 * off, &k_scale[t], 4) != 0;
        }
        if (cache_diff) fail(r, std::to_string(cache_diff) + " cache entries differ from k_out/k_scale_out");
        // (b) Weight fold, bit-exact: recover σ_q (a power of two) and refold (SPEC §4.2 step 5).
        std::vector<double> q_scale(T * HI);
        int64_t fold_diff = 0;
        for (int64_t i = 0; i < T * HI; ++i) {
          const double ratio = double(w_fold[i]) / (double(idx_w[i]) * 0.125 * dsa::kIndexerInvSqrtDim);
          const float sq = std::ldexp(1.0f, static_cast<int>(std::lround(std::log2(std::fabs(ratio)))));
          q_scale[i] = sq;
          const float refold = dsa::indexer_fold_weight(idx_w[i], sq);
          fold_diff += std::memcmp(&refold, &w_fold[i], 4) != 0;
        }
        if (fold_diff) fail(r, std::to_string(fold_diff) + " folded weights are not w·2^-3·σq·128^-0.5");
        // (c) Dequantized q and k vs float64 RoPE + Hadamard of the raw inputs on sampled tokens.
        // e4m3 RNE keeps |error| ≤ 2^-4·|x| (normals), plus two bf16 roundings (2^-9 each) before
        // quantization: rel-L2 ≤ 0.07 is the bound.
        std::vector<double> a, ref;
        double y[128];
        for (int64_t t : check) {
          idx_rope_hadamard(&idx_k[t * 128], positions[t], cos_t, sin_t, y);
          for (int d = 0; d < 128; ++d) {
            a.push_back(dsa::e4m3_to_float(k_fp8[t * 128 + d]) * double(k_scale[t]));
            ref.push_back(y[d]);
          }
          for (int j = 0; j < HI; ++j) {
            idx_rope_hadamard(&idx_q[(t * HI + j) * 128], positions[t], cos_t, sin_t, y);
            for (int d = 0; d < 128; ++d) {
              a.push_back(dsa::e4m3_to_float(q_fp8[(t * HI + j) * 128 + d]) * q_scale[t * HI + j]);
              ref.push_back(y[d]);
            }
          }
        }
        r.m = compare(a, ref, nullptr);
        if (!(r.m.rel_l2 <= 0.07) || r.m.special_mismatch)
          fail(r, "dequantized q/k vs float64 RoPE+Hadamard: rel-L2 " + fmt("%.3e", r.m.rel_l2) + " > 0.07");
      }
#if defined(DSA_WITH_CUDA)
      if (use_cuda) {
        DevBuf dq(idx_q), dw(idx_w), dk(idx_k), dpos(positions), dcos(cos_t), dsin(sin_t), dslots(slots);
        DevBuf dqo(q_fp8.size()), dwo(w_fold.size() * 4), dko(k_fp8.size()), dkso(k_scale.size() * 4);
        DevBuf dcache(std::vector<uint8_t>(idx_cache.size(), 0));
        dqo.poison();
        dwo.poison();
        dko.poison();
        dkso.poison();
        IdxPrepPtrs y{dq.p, dw.p, dk.p, dpos.p, dcos.p, dsin.p, dqo.p, dwo.p, dko.p, dkso.p, dcache.p, dslots.p};
        const dsa::IndexerPrepParams pd = prep_params(o, P, y);
        double secs = 0;
        if (cuda_call(r, [&] { return dsa::run(pd); }, &secs)) {
          const int64_t diffs = count_diff(dqo.get<uint8_t>(), q_fp8) + count_diff(dwo.get<float>(), w_fold) +
                                count_diff(dko.get<uint8_t>(), k_fp8) + count_diff(dkso.get<float>(), k_scale) +
                                count_diff(dcache.get<uint8_t>(), idx_cache);
          cuda_bitexact(r, secs, diffs, int64_t(q_fp8.size() + w_fold.size() + k_fp8.size() + k_scale.size() + idx_cache.size()),
                        "codes/scales/weights/cache bytes");
        }
      }
#endif
    }
  }

  // ==== 3. Indexer logits (OP-IDXLOGITS) and 4. top-k (OP-TOPK), in query chunks ====
  // A query chunk is a row slice; the logits buffer holds at most ~256 MiB.
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(T, (int64_t{64} << 20) / T));
  std::vector<float> logits(static_cast<size_t>(chunk) * T);
  std::vector<int32_t> indices(static_cast<size_t>(T) * K);
  bool have_topk = false;
  {
    Row& rl = add_row("indexer_logits");
    Row& rt = add_row("topk");
    if (!have_prep) {
      fail(rl, "skipped: needs indexer_prep");
      fail(rt, "skipped: needs indexer_logits");
    } else {
      double t_logits = 0, t_topk = 0;
      bool ok_l = true, ok_t = true;
      std::vector<double> la, lr;  // sampled logits vs float64
      int64_t outside_bad = 0, topk_bad = 0, pairs = 0;
      std::string topk_first_bad;
      std::vector<uint8_t> picked(T, 0);
      for (int64_t r0 = 0; r0 < T && ok_l && ok_t; r0 += chunk) {
        const int64_t rows = std::min(chunk, T - r0);
        std::memset(logits.data(), 0xFF, rows * T * 4);  // poison: NaN
        const dsa::IndexerLogitsParams lp =
            logits_params(o, P, r0, rows, q_fp8.data(), k_fp8.data(), k_scale.data(), w_fold.data(),
                          ks.data(), ke.data(), logits.data());
        auto t0 = Clock::now();
        dsa::Status s = dsa::run(lp);
        t_logits += seconds_since(t0);
        if (!(ok_l = run_ok(rl, s))) break;
        const dsa::TopKParams tp = topk_params(o, P, r0, rows, logits.data(), ks.data(), ke.data(), indices.data());
        std::memset(&indices[r0 * K], 0x7F, rows * K * 4);  // poison
        t0 = Clock::now();
        s = dsa::run(tp);
        t_topk += seconds_since(t0);
        if (!(ok_t = run_ok(rt, s))) break;
        for (int64_t i = 0; i < rows; ++i) {
          const int64_t t = r0 + i;
          const float* row = &logits[i * T];
          pairs += ke[t] - ks[t];
          // −∞ outside [ks, ke) (clean_logits); finite inside.
          for (int64_t c = 0; c < T; ++c) {
            const bool in = c >= ks[t] && c < ke[t];
            if (in ? !std::isfinite(row[c]) : !(std::isinf(row[c]) && row[c] < 0)) ++outside_bad;
          }
          if (std::binary_search(check.begin(), check.end(), t)) {
            // I[t,s] = σk[s]·Σ_j w[t,j]·ReLU(Σ_d q̂·k̂) in float64 on the same codes (SPEC §4.2 step 7).
            for (int64_t c = ks[t]; c < ke[t]; ++c) {
              double acc = 0;
              for (int j = 0; j < HI; ++j) {
                double dot = 0;
                for (int d = 0; d < 128; ++d)
                  dot += double(dsa::e4m3_to_float(q_fp8[(t * HI + j) * 128 + d])) *
                         dsa::e4m3_to_float(k_fp8[c * 128 + d]);
                acc += double(w_fold[t * HI + j]) * std::max(dot, 0.0);
              }
              la.push_back(row[c]);
              lr.push_back(acc * k_scale[c]);
            }
          }
          // Top-k: k_eff = min(K, range) unique in-range causal columns in (score ↓, column ↑)
          // order, −1 after; every unselected valid column ranks below the last selected.
          const int32_t* idx = &indices[t * K];
          const int64_t range = ke[t] - ks[t], k_eff = std::min<int64_t>(K, range);
          auto bad = [&](const std::string& why) {
            if (topk_bad++ == 0) topk_first_bad = "row " + std::to_string(t) + ": " + why;
          };
          for (int64_t j = 0; j < K; ++j) {
            if (j >= k_eff) {
              if (idx[j] != -1) bad("slot " + std::to_string(j) + " past k_eff is not -1");
              continue;
            }
            const int32_t c = idx[j];
            if (c < ks[t] || c >= ke[t] || c > t) {
              bad("index " + std::to_string(c) + " outside [ks, ke) or not causal");
              continue;
            }
            if (picked[c]) bad("index " + std::to_string(c) + " repeated");
            picked[c] = 1;
            if (j > 0 && idx[j - 1] >= ks[t] && idx[j - 1] < ke[t]) {
              const float a = row[idx[j - 1]], b = row[c];
              if (!(a > b || (a == b && idx[j - 1] < c))) bad("not in (score desc, index asc) order");
            }
          }
          if (k_eff > 0 && idx[k_eff - 1] >= ks[t] && idx[k_eff - 1] < ke[t]) {
            const int32_t last = idx[k_eff - 1];
            const float ls = row[last];
            for (int64_t c = ks[t]; c < ke[t]; ++c)
              if (!picked[c] && (row[c] > ls || (row[c] == ls && c < last))) {
                bad("column " + std::to_string(c) + " outranks a selected one");
                break;
              }
          }
          for (int64_t j = 0; j < k_eff; ++j)
            if (idx[j] >= 0 && idx[j] < T) picked[idx[j]] = 0;
        }
      }
      rl.cpu_s = t_logits;
      rt.cpu_s = t_topk;
      if (ok_l) {
        rl.rate = rate_flops(2.0 * HI * 128 * double(pairs), t_logits);  // SPEC §10.2 indexer
        rl.m = compare(la, lr, nullptr);
        // Same FP8 codes, fp32 vs float64 accumulation: cos_diff ≤ 5e-6 (SPEC §9.4, DeepGEMM).
        if (rl.m.cos_diff > 5e-6 || rl.m.special_mismatch)
          fail(rl, "sampled rows vs float64: cos_diff " + fmt("%.2e", rl.m.cos_diff) + " > 5e-6");
        if (outside_bad) fail(rl, std::to_string(outside_bad) + " entries: not -inf outside [ks, ke) or not finite inside");
      }
      if (ok_t) {
        rt.rate = rate_per_s(double(T), t_topk, "rows/s") + fmt(", %.2f GB/s", pairs * 4.0 / t_topk * 1e-9);
        if (topk_bad) fail(rt, std::to_string(topk_bad) + " problems, first: " + topk_first_bad);
        else rt.status = "ok (unique, in range, causal, exact top-k order)";
        have_topk = rt.ok;
      }
#if defined(DSA_WITH_CUDA)
      if (use_cuda) {
        // The first query chunk on the device, on the CPU's own FP8 inputs and scores.
        const int64_t rows = std::min(chunk, T);
        DevBuf dq(q_fp8), dk(k_fp8), dks_(k_scale), dw(w_fold), dks(ks), dke(ke), dlog(size_t(rows) * T * 4);
        dlog.poison();
        const dsa::IndexerLogitsParams lp =
            logits_params(o, P, 0, rows, dq.p, dk.p, dks_.p, dw.p, dks.p, dke.p, dlog.p);
        double secs = 0;
        // CPU logits of chunk 0 again (the buffer holds the last chunk).
        std::vector<float> cpu_log(size_t(rows) * T);
        const bool cpu_ok = dsa::run(logits_params(o, P, 0, rows, q_fp8.data(), k_fp8.data(), k_scale.data(),
                                                   w_fold.data(), ks.data(), ke.data(), cpu_log.data()))
                                .ok();
        if (cuda_call(rl, [&] { return dsa::run(lp); }, &secs) && cpu_ok) {
          // SPEC §9.4: FP8 tensor cores vs CPU fp32 on the same codes: |Δ| ≤ 2e-3·max|row|, cos 5e-6.
          const std::vector<float> g = dlog.get<float>();
          std::vector<double> a(g.begin(), g.end()), ref(cpu_log.begin(), cpu_log.end());
          const Metrics m = compare(a, ref, nullptr);
          int64_t over = 0;
          for (int64_t i = 0; i < rows; ++i) {
            double mx = 0;
            for (int64_t c = ks[i]; c < ke[i]; ++c) mx = std::max(mx, std::fabs(ref[i * T + c]));
            for (int64_t c = ks[i]; c < ke[i]; ++c) over += std::fabs(a[i * T + c] - ref[i * T + c]) > 2e-3 * mx;
          }
          const bool ok = over == 0 && m.special_mismatch == 0 && m.cos_diff <= 5e-6;
          rl.cuda = std::string(ok ? "ok  " : "FAIL  ") + time_str(secs) + "  " +
                    rate_flops(2.0 * HI * 128 * double(std::accumulate(ke.begin(), ke.begin() + rows, int64_t{0}) -
                                                       std::accumulate(ks.begin(), ks.begin() + rows, int64_t{0})),
                               secs) +
                    "  max abs " + fmt("%.2e", m.max_abs) + "  cos_diff " + fmt("%.2e", m.cos_diff);
          if (!ok) g_failed = true;
        }
        if (cpu_ok) {
          // Top-k on the CPU's scores must match the CPU's indices bit for bit (SPEC §9.1).
          DevBuf dscore(cpu_log), didx(size_t(rows) * K * 4);
          cudaMemset(didx.p, 0x7F, didx.bytes);
          const dsa::TopKParams tp = topk_params(o, P, 0, rows, dscore.p, dks.p, dke.p, didx.p);
          // topk_params offsets indices by r0 = 0: the device buffer holds just this chunk.
          if (cuda_call(rt, [&] { return dsa::run(tp); }, &secs)) {
            std::vector<int32_t> want(indices.begin(), indices.begin() + rows * K);
            cuda_bitexact(rt, secs, count_diff(didx.get<int32_t>(), want), rows * K, "indices");
          }
        }
      }
#endif
      // The fused op on the first chunk: the indices of logits + top-k, without a logits tensor.
      if (ok_l && ok_t) {
        Row& rf = add_row("indexer_topk (fused)");
        const int64_t rows = std::min(chunk, T);
        std::vector<int32_t> fidx(size_t(rows) * K, 0x7F7F7F7F);
        const auto t0 = Clock::now();
        const dsa::Status s = dsa::run(fused_params(o, P, rows, q_fp8.data(), k_fp8.data(), k_scale.data(),
                                                    w_fold.data(), ks.data(), ke.data(), fidx.data()));
        rf.cpu_s = seconds_since(t0);
        rf.rate = rate_per_s(double(rows), rf.cpu_s, "rows/s");
        if (run_ok(rf, s)) {
          const std::vector<int32_t> want(indices.begin(), indices.begin() + rows * K);
          const int64_t d = count_diff(fidx, want);
          if (d) fail(rf, std::to_string(d) + " indices differ from indexer_logits + topk");
          else rf.status = "ok (bit-exact: indexer_logits + topk)";
        }
#if defined(DSA_WITH_CUDA)
        if (use_cuda) {
          // Against the device's own logits + top-k (the tensor cores' scores, not the CPU's).
          DevBuf dq(q_fp8), dk(k_fp8), dks_(k_scale), dw(w_fold), dks(ks), dke(ke), dlog(size_t(rows) * T * 4),
              dpair(size_t(rows) * K * 4), dfused(size_t(rows) * K * 4);
          cudaMemset(dpair.p, 0x7F, dpair.bytes);
          cudaMemset(dfused.p, 0x7F, dfused.bytes);
          double secs = 0;
          const bool pair_ok =
              dsa::run(logits_params(o, P, 0, rows, dq.p, dk.p, dks_.p, dw.p, dks.p, dke.p, dlog.p)).ok() &&
              dsa::run(topk_params(o, P, 0, rows, dlog.p, dks.p, dke.p, dpair.p)).ok();
          const dsa::IndexerTopKParams fp = fused_params(o, P, rows, dq.p, dk.p, dks_.p, dw.p, dks.p, dke.p, dfused.p);
          const size_t ws_bytes = dsa::workspace_size(fp);
          DevBuf ws(ws_bytes);
          if (!pair_ok) {
            rf.cuda = "FAIL  the device's indexer_logits + topk did not run";
            g_failed = true;
          } else if (cuda_call(rf, [&] { return dsa::run(fp, ws.p, ws_bytes); }, &secs)) {
            const int64_t d = count_diff(dfused.get<int32_t>(), dpair.get<int32_t>());
            const char* path = ws_bytes == 0 ? "streaming, no workspace" : "chunked";
            rf.cuda = d == 0 ? "ok  " + time_str(secs) + "  bit-exact vs the device's logits + topk (" + path + ")"
                             : "FAIL  " + std::to_string(d) + " of " + std::to_string(rows * K) +
                                   " indices differ from the device's logits + topk (" + path + ")";
            if (d) g_failed = true;
          }
        }
#endif
      }
    }
  }

  // ==== 5. MLA cache write (OP-MLACACHE, FP8 656 B) and the FP8 round trip of the latent ====
  std::vector<uint8_t> mla_cache(static_cast<size_t>(P.num_blocks) * o.page * 656, 0);
  std::vector<bf16_t> kv_fp8(static_cast<size_t>(T) * 576);  // dequantized latent | k_pe, token order
  bool have_cache = false;
  {
    Row& r = add_row("mla_cache_write (FP8)");
    const dsa::MlaCacheWriteParams p = cache_params(o, P, (void*)mla_kv.data(), slots.data(), mla_cache.data());
    const auto t0 = Clock::now();
    const dsa::Status s = dsa::run(p);
    r.cpu_s = seconds_since(t0);
    r.rate = rate_per_s(double(T), r.cpu_s, "tok/s");
    if (run_ok(r, s)) {
      // Dequantize the latent straight out of the cache pages with strided views: codes are
      // bytes 0–511 of each 656-byte slot, the 4 fp32 scales bytes 512–527 (SPEC §7.1).
      const int64_t nslots = P.num_blocks * o.page;
      std::vector<bf16_t> slot_deq(static_cast<size_t>(nslots) * 576);
      dsa::DequantizeParams d;
      d.codes = dsa::make_view(mla_cache.data(), DType::kE4M3, {nslots, 512}, {656, 1});
      d.scales = dsa::make_view(mla_cache.data() + 512, DType::kF32, {nslots, 4}, {164, 1});
      d.out = dsa::make_view(slot_deq.data(), DType::kBF16, {nslots, 512}, {576, 1});
      if (run_ok(r, dsa::run(d))) {
        std::vector<double> a, ref;
        int64_t pe_diff = 0, bound_fail = 0, scale_not_pow2 = 0;
        for (int64_t t = 0; t < T; ++t) {
          const uint8_t* slot = mla_cache.data() + int64_t(slots[t]) * 656;
          std::memcpy(&kv_fp8[t * 576], &slot_deq[int64_t(slots[t]) * 576], 512 * 2);
          std::memcpy(&kv_fp8[t * 576 + 512], slot + 528, 64 * 2);  // k_pe, never quantized
          pe_diff += std::memcmp(slot + 528, &mla_kv[t * 576 + 512], 128) != 0;
          for (int tile = 0; tile < 4; ++tile) {
            float sc;
            std::memcpy(&sc, slot + 512 + 4 * tile, 4);
            int e;
            scale_not_pow2 += std::frexp(sc, &e) != 0.5f;
            for (int d = tile * 128; d < tile * 128 + 128; ++d) {
              const double x = bf(mla_kv[t * 576 + d]), y = bf(kv_fp8[t * 576 + d]);
              // e4m3 RNE: half an ulp, ≤ 2^-4·|x| for normals, 2^-10·s in the subnormal range.
              // (+ the fp32 rounding of x / s that the quantizer rounds, as tests/cpu/test_quant.cpp)
              bound_fail += std::fabs(y - x) > std::max(std::fabs(x) * 0.0625, sc * 0x1p-10) + std::fabs(x) * 0x1p-24;
              a.push_back(y);
              ref.push_back(x);
            }
          }
        }
        r.m = compare(a, ref, nullptr);
        have_cache = true;
        if (pe_diff) fail(r, std::to_string(pe_diff) + " k_pe rows differ from the input");
        if (scale_not_pow2) fail(r, std::to_string(scale_not_pow2) + " ue8m0 scales are not powers of two");
        if (bound_fail) fail(r, std::to_string(bound_fail) + " latent values exceed the e4m3 rounding bound");
        if (r.ok) r.status = "ok (k_pe exact, FP8 error within e4m3 half-ulp)";
      }
    }
#if defined(DSA_WITH_CUDA)
    if (use_cuda) {
      DevBuf dkv(mla_kv), dslots(slots), dcache(std::vector<uint8_t>(mla_cache.size(), 0));
      const dsa::MlaCacheWriteParams pd = cache_params(o, P, dkv.p, dslots.p, dcache.p);
      double secs = 0;
      if (cuda_call(r, [&] { return dsa::run(pd); }, &secs))
        cuda_bitexact(r, secs, count_diff(dcache.get<uint8_t>(), mla_cache), int64_t(mla_cache.size()), "cache bytes");
    }
#endif
  }

  // ==== 6. Sparse MLA forward (OP-SMLA-FWD) on the FP8-round-tripped latent ====
  std::vector<bf16_t> out(static_cast<size_t>(T) * H * 512);
  std::vector<float> lse(static_cast<size_t>(T) * H), max_logits(lse.size());
  bool have_sparse = false;
  {
    Row& r = add_row("sparse_mla_fwd");
    if (!have_topk || !have_cache) {
      fail(r, "skipped: needs topk and mla_cache_write");
    } else {
      std::memset(out.data(), 0xFF, out.size() * 2);
      std::memset(lse.data(), 0xFF, lse.size() * 4);
      const dsa::SparseMlaFwdParams p =
          sparse_params(o, P, (void*)mla_q.data(), kv_fp8.data(), indices.data(), out.data(), lse.data(), max_logits.data());
      const auto t0 = Clock::now();
      const dsa::Status s = dsa::run(p);
      r.cpu_s = seconds_since(t0);
      // SPEC §10.2: 2·h_q·topk·(d_qk + d_v) per query token, every slot counted.
      r.rate = rate_flops(2.0 * H * K * (576 + 512) * double(T), r.cpu_s);
      if (run_ok(r, s)) {
        have_sparse = true;
        // float64 attention over exactly the selected keys, on sampled rows.
        std::vector<double> a, ref, la, lr, o64, l64;
        for (int64_t t : check) {
          std::vector<int64_t> sel;
          for (int j = 0; j < K; ++j)
            if (indices[t * K + j] >= 0) sel.push_back(indices[t * K + j]);
          attention_row(&mla_q[t * H * 576], kv_fp8, sel, H, dsa::kSoftmaxScaleV32, o64, l64);
          for (int64_t i = 0; i < int64_t(H) * 512; ++i) {
            a.push_back(bf(out[t * H * 512 + i]));
            ref.push_back(o64[i]);
          }
          for (int h = 0; h < H; ++h) {
            la.push_back(lse[t * H + h]);
            lr.push_back(l64[h]);
          }
        }
        r.m = compare(a, ref, &kPrefillOut);
        const Metrics ml = compare(la, lr, &kPrefillLse);
        if (!within(r.m, kPrefillOut))
          fail(r, "out vs float64 on " + std::to_string(check.size()) + " rows: " +
                      std::to_string(r.m.elem_fail) + " elements outside tolerance, cos_diff " + fmt("%.2e", r.m.cos_diff));
        if (!within(ml, kPrefillLse))
          fail(r, "lse vs float64: " + std::to_string(ml.elem_fail) + " outside tolerance, max abs " + fmt("%.2e", ml.max_abs));
        if (r.ok) r.status = "ok (vs float64 on " + std::to_string(check.size()) + " rows; lse max abs " + fmt("%.1e", ml.max_abs) + ")";
      }
#if defined(DSA_WITH_CUDA)
      if (use_cuda) {
        DevBuf dq(mla_q), dkv(kv_fp8), didx(indices), dout(out.size() * 2), dlse(lse.size() * 4), dml(lse.size() * 4);
        dout.poison();
        dlse.poison();
        const dsa::SparseMlaFwdParams pd = sparse_params(o, P, dq.p, dkv.p, didx.p, dout.p, dlse.p, dml.p);
        double secs = 0;
        if (cuda_call(r, [&] { return dsa::run(pd); }, &secs) && have_sparse) {
          const std::vector<bf16_t> g = dout.get<bf16_t>();
          std::vector<double> a(g.size()), ref(g.size());
          for (size_t i = 0; i < g.size(); ++i) {
            a[i] = bf(g[i]);
            ref[i] = bf(out[i]);
          }
          const Metrics m = compare(a, ref, &kPrefillOut);
          const bool ok = within(m, kPrefillOut);
          r.cuda = std::string(ok ? "ok  " : "FAIL  ") + time_str(secs) + "  " +
                   rate_flops(2.0 * H * K * (576 + 512) * double(T), secs) + "  vs CPU: max abs " +
                   fmt("%.2e", m.max_abs) + "  cos_diff " + fmt("%.2e", m.cos_diff);
          if (!ok) g_failed = true;
        }
      }
#endif
    }
  }

  // ==== 7. Dense MLA forward on rows whose causal range ≤ topk: there top-k keeps every key, so
  //         sparse and dense attention must agree (SPEC §9.4 prefill tolerance). ====
  {
    Row& r = add_row("dense_mla_fwd (check)");
    if (!have_sparse) {
      fail(r, "skipped: needs sparse_mla_fwd");
    } else {
      double secs = 0, flop = 0;
      std::vector<double> a, ref, la, lr;
      int64_t rows_checked = 0;
      bool ok = true;
      for (size_t sq = 0; sq < P.seq_start.size() && ok; ++sq) {
        const int64_t r0 = P.seq_start[sq], n = std::min<int64_t>(P.seq_len[sq], K);
        std::vector<bf16_t> dout(static_cast<size_t>(n) * H * 512);
        std::vector<float> dlse(static_cast<size_t>(n) * H);
        std::memset(dout.data(), 0xFF, dout.size() * 2);
        dsa::DenseMlaFwdParams d;
        d.q = dsa::make_view(&mla_q[r0 * H * 576], DType::kBF16, {n, H, 576});
        d.kv = dsa::make_view(kv_fp8.data(), DType::kBF16, {T, 576});
        d.ks = dsa::make_view(&ks[r0], DType::kI32, {n});
        d.ke = dsa::make_view(&ke[r0], DType::kI32, {n});
        d.out = dsa::make_view(dout.data(), DType::kBF16, {n, H, 512});
        d.lse = dsa::make_view(dlse.data(), DType::kF32, {n, H});
        d.sm_scale = dsa::kSoftmaxScaleV32;
        const auto t0 = Clock::now();
        const dsa::Status s = dsa::run(d);
        secs += seconds_since(t0);
        if (!(ok = run_ok(r, s))) break;
        for (int64_t i = 0; i < n; ++i) flop += 2.0 * H * (576 + 512) * (ke[r0 + i] - ks[r0 + i]);
        rows_checked += n;
        for (int64_t i = 0; i < n * H * 512; ++i) {
          a.push_back(bf(out[r0 * H * 512 + i]));
          ref.push_back(bf(dout[i]));
        }
        for (int64_t i = 0; i < n * H; ++i) {
          la.push_back(lse[r0 * H + i]);
          lr.push_back(dlse[i]);
        }
      }
      r.cpu_s = secs;
      r.rate = rate_flops(flop, secs);
      if (ok) {
        r.m = compare(a, ref, &kPrefillOut);
        const Metrics ml = compare(la, lr, &kPrefillLse);
        if (!within(r.m, kPrefillOut))
          fail(r, "sparse vs dense out: " + std::to_string(r.m.elem_fail) + " elements outside tolerance, cos_diff " +
                      fmt("%.2e", r.m.cos_diff));
        if (!within(ml, kPrefillLse)) fail(r, "sparse vs dense lse: max abs " + fmt("%.2e", ml.max_abs));
        if (r.ok) r.status = "ok (sparse == dense on " + std::to_string(rows_checked) + " rows with range <= topk)";
      }
    }
  }

  print_table(use_cuda);
  std::printf("\nrates: indexer 2·h_idx·d_idx per scored pair, sparse MLA 2·h_q·topk·(d_qk+d_v) per query "
              "(SPEC §10.2); errors vs float64 computed in this demo (dense check: vs sparse output).\n");
  std::printf("total %.2f s — %s\n", seconds_since(t_total), g_failed ? "SOME CHECKS FAILED" : "all checks passed");
  return g_failed ? 1 : 0;
}
