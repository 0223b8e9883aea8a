// The fused indexer → top-k (IndexerTopKParams) CPU reference: bitwise equal to the OP-IDXLOGITS
// reference followed by the OP-TOPK reference on the full logits, over shapes, FP8 and exact
// modes, full / causal ragged / random ranges, chunk sizes 1, 3, 8, automatic and larger than
// s_q, both index domains, sorted and unsorted, optional outputs; and bad input for every argument
// (the message names it, the poisoned outputs stay untouched).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "dsa/dsa.hpp"
#include "support/random.hpp"

using namespace dsa;

namespace {

enum class Ranges { kFull, kCausalRagged, kRandom };

struct Problem {
  int64_t s_q, s_kv, h, d, topk;
  DType dt;
  std::vector<uint8_t> q8, k8;
  std::vector<bf16_t> qb, kb;
  std::vector<float> qf, kf, ksc, w;
  std::vector<int32_t> ks, ke;

  Problem(test::Rng& rng, int64_t s_q_, int64_t s_kv_, int64_t h_, int64_t d_, int64_t topk_, DType dt_, Ranges r)
      : s_q(s_q_), s_kv(s_kv_), h(h_), d(d_), topk(topk_), dt(dt_) {
    const size_t nq = s_q * h * d, nk = s_kv * d;
    if (dt == DType::kE4M3) {
      for (size_t i = 0; i < nq; ++i) q8.push_back(float_to_e4m3(static_cast<float>(rng.normal() * 2.0)));
      for (size_t i = 0; i < nk; ++i) k8.push_back(float_to_e4m3(static_cast<float>(rng.normal() * 2.0)));
      for (int64_t s = 0; s < s_kv; ++s) ksc.push_back(std::ldexp(1.0f, static_cast<int>(rng.integer(-9, -5))));
    } else if (dt == DType::kBF16) {
      qb = test::randn_bf16(rng, nq, 1.0);
      kb = test::randn_bf16(rng, nk, 1.0);
    } else {
      qf = test::randn_f32(rng, nq);
      kf = test::randn_f32(rng, nk);
    }
    // Coarse weights (multiples of 1/8) make equal logits, hence ties, more likely.
    for (int64_t i = 0; i < s_q * h; ++i) w.push_back(static_cast<float>(rng.integer(-8, 8)) / 8.0f);
    ks.assign(s_q, 0);
    ke.assign(s_q, static_cast<int32_t>(s_kv));
    if (r == Ranges::kCausalRagged) {
      // Packed sequences whose keys are their own tokens, after a shared prefix of s_kv − s_q keys.
      const int64_t prefix = s_kv - s_q;
      int64_t t = 0;
      while (t < s_q) {
        const int64_t len = std::min<int64_t>(s_q - t, rng.integer(1, std::max<int64_t>(1, s_q / 2)));
        for (int64_t i = 0; i < len; ++i) {
          ks[t + i] = static_cast<int32_t>(prefix + t);
          ke[t + i] = static_cast<int32_t>(prefix + t + i + 1);
        }
        t += len;
      }
    } else if (r == Ranges::kRandom) {
      for (int64_t t = 0; t < s_q; ++t) {
        int64_t a = rng.integer(0, s_kv), b = rng.integer(0, s_kv);
        if (a > b) std::swap(a, b);
        if (rng.integer(0, 7) == 0) b = a;  // some empty rows
        ks[t] = static_cast<int32_t>(a);
        ke[t] = static_cast<int32_t>(b);
      }
    }
  }

  const void* qdata() const { return dt == DType::kE4M3 ? (const void*)q8.data() : dt == DType::kBF16 ? (const void*)qb.data() : (const void*)qf.data(); }
  const void* kdata() const { return dt == DType::kE4M3 ? (const void*)k8.data() : dt == DType::kBF16 ? (const void*)kb.data() : (const void*)kf.data(); }

  IndexerLogitsParams logits_params(std::vector<float>& logits) const {
    IndexerLogitsParams p;
    p.q = make_view(qdata(), dt, {s_q, h, d});
    p.k = make_view(kdata(), dt, {s_kv, d});
    if (dt == DType::kE4M3) p.k_scale = make_view(ksc.data(), DType::kF32, {s_kv});
    p.weights = make_view(w.data(), DType::kF32, {s_q, h});
    p.ks = make_view(ks.data(), DType::kI32, {s_q});
    p.ke = make_view(ke.data(), DType::kI32, {s_q});
    logits.assign(std::max<int64_t>(1, s_q * s_kv), 0.0f);
    p.logits = make_view(logits.data(), DType::kF32, {s_q, s_kv});
    return p;
  }
};

struct Outputs {
  std::vector<int32_t> idx, keff;
  std::vector<float> sc;
};

struct Options {
  IndexDomain domain = IndexDomain::kAbsolute;
  bool sorted = true, with_scores = true, with_keff = true;
  int32_t chunk_rows = 0;
};

void alloc(const Problem& pb, Outputs& o) {
  o.idx.resize(std::max<int64_t>(1, pb.s_q * pb.topk));
  o.sc.resize(std::max<int64_t>(1, pb.s_q * pb.topk));
  o.keff.resize(std::max<int64_t>(1, pb.s_q));
  test::poison_index(o.idx);
  test::poison_float(o.sc);
  test::poison_index(o.keff);
}

Outputs unfused(const Problem& pb, const Options& opt) {
  std::vector<float> logits;
  const IndexerLogitsParams lp = pb.logits_params(logits);
  REQUIRE(ref::run(lp).ok());
  Outputs o;
  alloc(pb, o);
  TopKParams tp;
  tp.scores = lp.logits;
  tp.ks = lp.ks;
  tp.ke = lp.ke;
  tp.indices = make_view(o.idx.data(), DType::kI32, {pb.s_q, pb.topk});
  if (opt.with_scores) tp.out_scores = make_view(o.sc.data(), DType::kF32, {pb.s_q, pb.topk});
  if (opt.with_keff) tp.k_eff = make_view(o.keff.data(), DType::kI32, {pb.s_q});
  tp.domain = opt.domain;
  tp.sorted = opt.sorted;
  const Status s = ref::run(tp);
  INFO(s.message());
  REQUIRE(s.ok());
  return o;
}

IndexerTopKParams fused_params(const Problem& pb, const Options& opt, Outputs& o) {
  std::vector<float> unused;
  const IndexerLogitsParams lp = pb.logits_params(unused);
  alloc(pb, o);
  IndexerTopKParams p;
  p.q = lp.q;
  p.k = lp.k;
  p.k_scale = lp.k_scale;
  p.weights = lp.weights;
  p.ks = lp.ks;
  p.ke = lp.ke;
  p.indices = make_view(o.idx.data(), DType::kI32, {pb.s_q, pb.topk});
  if (opt.with_scores) p.out_scores = make_view(o.sc.data(), DType::kF32, {pb.s_q, pb.topk});
  if (opt.with_keff) p.k_eff = make_view(o.keff.data(), DType::kI32, {pb.s_q});
  p.domain = opt.domain;
  p.sorted = opt.sorted;
  p.chunk_rows = opt.chunk_rows;
  return p;
}

void require_same(const Problem& pb, const Options& opt, const Outputs& a, const Outputs& b) {
  const size_t n = static_cast<size_t>(pb.s_q * pb.topk);
  CHECK(std::memcmp(a.idx.data(), b.idx.data(), n * 4) == 0);
  if (opt.with_scores) CHECK(std::memcmp(a.sc.data(), b.sc.data(), n * 4) == 0);
  if (opt.with_keff) CHECK(std::memcmp(a.keff.data(), b.keff.data(), pb.s_q * 4) == 0);
}

}  // namespace

TEST_CASE("indexer_topk reference equals indexer_logits + topk bitwise", "[indexer_topk]") {
  test::Rng rng(0x1d7091);
  struct Shape {
    int64_t s_q, s_kv, h, d, topk;
  };
  const Shape shapes[] = {{1, 1, 1, 1, 1},     {5, 17, 2, 16, 4},      {37, 100, 4, 32, 7},
                          {70, 300, 8, 64, 64}, {130, 257, 3, 24, 300}, {20, 200, 64, 128, 16},
                          {67, 67, 5, 16, 10}};
  const DType dts[] = {DType::kE4M3, DType::kBF16, DType::kF32};
  const Ranges ranges[] = {Ranges::kFull, Ranges::kCausalRagged, Ranges::kRandom};
  const int32_t chunks[] = {1, 3, 8, 0, 1000};
  int iter = 0;
  for (const Shape& sh : shapes)
    for (DType dt : dts)
      for (Ranges r : ranges) {
        if (r == Ranges::kCausalRagged && sh.s_kv < sh.s_q) continue;
        const Problem pb(rng, sh.s_q, sh.s_kv, sh.h, sh.d, sh.topk, dt, r);
        Options opt;
        opt.domain = (iter % 2) ? IndexDomain::kRelative : IndexDomain::kAbsolute;
        opt.sorted = (iter % 3) != 2;
        opt.with_scores = (iter % 4) != 3;
        opt.with_keff = (iter % 5) != 4;
        ++iter;
        const Outputs want = unfused(pb, opt);
        for (int32_t chunk : chunks) {
          opt.chunk_rows = chunk;
          INFO("s_q " << sh.s_q << " s_kv " << sh.s_kv << " h " << sh.h << " d " << sh.d << " k " << sh.topk
                      << " dtype " << dtype_name(dt) << " ranges " << (int)r << " chunk_rows " << chunk
                      << " domain " << (int)opt.domain << " sorted " << opt.sorted);
          Outputs got;
          const IndexerTopKParams p = fused_params(pb, opt, got);
          const Status s = ref::run(p);
          INFO(s.message());
          REQUIRE(s.ok());
          require_same(pb, opt, got, want);
          // The dispatching API on host pointers is the same reference, with no workspace.
          CHECK(workspace_size(p) == 0);
          Outputs got2;
          const IndexerTopKParams p2 = fused_params(pb, opt, got2);
          REQUIRE(run(p2).ok());
          require_same(pb, opt, got2, want);
        }
      }
}

TEST_CASE("indexer_topk: empty problems", "[indexer_topk]") {
  test::Rng rng(0x1d7092);
  for (const auto& sh : {std::vector<int64_t>{0, 10, 4}, {6, 0, 4}, {6, 10, 0}}) {
    const Problem pb(rng, sh[0], sh[1], 2, 16, sh[2], DType::kE4M3, Ranges::kFull);
    Options opt;
    const Outputs want = unfused(pb, opt);
    Outputs got;
    const IndexerTopKParams p = fused_params(pb, opt, got);
    const Status s = ref::run(p);
    INFO(s.message());
    REQUIRE(s.ok());
    require_same(pb, opt, got, want);
  }
}

TEST_CASE("indexer_topk rejects bad input, naming the argument, and writes nothing", "[indexer_topk][validation]") {
  test::Rng rng(0x1d7093);
  const Problem pb(rng, 9, 40, 4, 32, 5, DType::kE4M3, Ranges::kCausalRagged);
  const Problem pbx(rng, 9, 40, 4, 32, 5, DType::kBF16, Ranges::kFull);
  std::vector<int32_t> bad_i32(64, 0);
  std::vector<float> bad_f32(4096, 0.0f);
  std::vector<int32_t> ks_bad = pb.ks, ke_bad = pb.ke, ke_lt = pb.ke;
  ks_bad[4] = -1;
  ke_bad[6] = 41;
  ke_lt[2] = pb.ks[2] - 1;  // ks >= 31 here: the causal rows follow a 31-key prefix

  struct Case {
    const char* what;
    const char* needle;
    void (*edit)(IndexerTopKParams&, void*);
  };
  // Each case breaks one argument; `ctx` holds replacement buffers.
  struct Ctx {
    std::vector<int32_t>* i32;
    std::vector<float>* f32;
    std::vector<int32_t>*ks_bad, *ke_bad, *ke_lt;
  } ctx{&bad_i32, &bad_f32, &ks_bad, &ke_bad, &ke_lt};
  const Case cases[] = {
      {"q dtype", "q", [](IndexerTopKParams& p, void* c) { p.q = make_view(static_cast<Ctx*>(c)->i32->data(), DType::kI32, {9, 4, 1}); }},
      {"q absent", "q", [](IndexerTopKParams& p, void*) { p.q = TensorView(); }},
      {"k d_idx", "k", [](IndexerTopKParams& p, void*) { p.k.shape[1] = 16; p.k.stride[0] = 16; }},
      {"k_scale missing", "k_scale", [](IndexerTopKParams& p, void*) { p.k_scale = TensorView(); }},
      {"k_scale length", "k_scale", [](IndexerTopKParams& p, void*) { p.k_scale.shape[0] = 39; }},
      {"weights shape", "weights", [](IndexerTopKParams& p, void*) { p.weights.shape[1] = 3; p.weights.stride[0] = 3; }},
      {"ks dtype", "ks", [](IndexerTopKParams& p, void* c) { p.ks = make_view(static_cast<Ctx*>(c)->f32->data(), DType::kF32, {9}); }},
      {"ke length", "ke", [](IndexerTopKParams& p, void*) { p.ke.shape[0] = 8; }},
      {"indices rows", "indices", [](IndexerTopKParams& p, void*) { p.indices.shape[0] = 8; }},
      {"indices absent", "indices", [](IndexerTopKParams& p, void*) { p.indices = TensorView(); }},
      {"indices dtype", "indices", [](IndexerTopKParams& p, void*) { p.indices.dtype = DType::kF32; }},
      {"out_scores k", "out_scores", [](IndexerTopKParams& p, void*) { p.out_scores.shape[1] = 4; }},
      {"k_eff length", "k_eff", [](IndexerTopKParams& p, void*) { p.k_eff.shape[0] = 10; }},
      {"domain paged", "domain", [](IndexerTopKParams& p, void*) { p.domain = IndexDomain::kPagedSlot; }},
      {"domain value", "domain", [](IndexerTopKParams& p, void*) { p.domain = static_cast<IndexDomain>(7); }},
      {"chunk_rows", "chunk_rows", [](IndexerTopKParams& p, void*) { p.chunk_rows = -1; }},
      {"indices overlaps ks", "indices overlaps ks", [](IndexerTopKParams& p, void*) {
         p.indices = make_view(p.ks.data, DType::kI32, {9, 1});
         p.out_scores = TensorView();
       }},
      {"ks value", "ks[4]", [](IndexerTopKParams& p, void* c) { p.ks.data = static_cast<Ctx*>(c)->ks_bad->data(); }},
      {"ke value", "ke[6]", [](IndexerTopKParams& p, void* c) { p.ke.data = static_cast<Ctx*>(c)->ke_bad->data(); }},
      {"ke < ks", "ke[2]", [](IndexerTopKParams& p, void* c) { p.ke.data = static_cast<Ctx*>(c)->ke_lt->data(); }},
  };
  for (const Case& cs : cases) {
    for (int32_t chunk : {0, 2}) {
      INFO(cs.what << " chunk_rows " << chunk);
      Options opt;
      opt.chunk_rows = chunk;
      Outputs o;
      IndexerTopKParams p = fused_params(pb, opt, o);
      cs.edit(p, &ctx);
      const std::vector<int32_t> idx0 = o.idx, keff0 = o.keff;
      const std::vector<float> sc0 = o.sc;
      for (int api = 0; api < 2; ++api) {
        const Status s = api == 0 ? ref::run(p) : run(p);
        INFO(s.message());
        CHECK(!s.ok());
        CHECK(s.message().find("indexer_topk") != std::string::npos);
        CHECK(s.message().find(cs.needle) != std::string::npos);
        CHECK(std::string(last_error()) == s.message());
        // Range values are checked by the reference only (validation never reads contents).
        if (std::strchr(cs.needle, '[') == nullptr) CHECK(!supports(p).ok());
      }
      CHECK(std::memcmp(o.idx.data(), idx0.data(), idx0.size() * 4) == 0);
      CHECK(std::memcmp(o.sc.data(), sc0.data(), sc0.size() * 4) == 0);
      CHECK(std::memcmp(o.keff.data(), keff0.data(), keff0.size() * 4) == 0);
    }
  }
  // Exact mode takes no key scale.
  Options opt;
  Outputs o;
  IndexerTopKParams p = fused_params(pbx, opt, o);
  p.k_scale = make_view(bad_f32.data(), DType::kF32, {40});
  const Status s = ref::run(p);
  CHECK(!s.ok());
  CHECK(s.message().find("k_scale") != std::string::npos);
}
