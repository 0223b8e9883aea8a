// bench_loss_cpu — the CPU reference of the indexer KL losses (OP-LOSS-DENSE, OP-LOSS-SPARSE):
// loss + dq_idx + dk_idx + dweights per call, through dsa::run on host pointers. The teacher's lse
// comes from the library's own forward (dense_mla_fwd / sparse_mla_fwd) in the setup, untimed.
// Rates: scored (query, key) pairs per second; "teacher_flop" counts the teacher's score GEMM
// (2·h_q·d_qk per pair), the dominant term. Wall-clock time (UseRealTime): the reference runs on
// std::threads (DSA_NUM_THREADS overrides their count).
//
//   bench_loss_cpu --benchmark_filter='Dense/T:4096'     (the 4K-token, 128-head warm-up layer)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "bench_common.hpp"

namespace {

using benchmark::Counter;
using dsa::DType;
using dsa::make_view;
using namespace dsa::bench;

constexpr int64_t kDqk = 576, kDv = 512, kHidx = 64, kDidx = 128;

// One causal sequence of T tokens: teacher q/kv (bf16), indexer q/k (bf16), folded weights.
struct Inputs {
  int64_t T, h;
  std::vector<dsa::bf16_t> q, kv, qi, ki, out;
  std::vector<float> w, lse, loss{0.0f}, dq, dk, dw;
  std::vector<int32_t> ks, ke;
  Inputs(int64_t T_, int64_t h_) : T(T_), h(h_) {
    q = random_bf16(T * h * kDqk, 1.0, 1);
    kv = random_bf16(T * kDqk, 1.0, 2);
    qi = random_bf16(T * kHidx * kDidx, 1.0, 3);
    ki = random_bf16(T * kDidx, 1.0, 4);
    w = random_f32(T * kHidx, 0.05, 5);
    lse.assign(T * h, 0.0f);
    out.assign(T * h * kDv, dsa::bf16_t{});
    dq.assign(T * kHidx * kDidx, 0.0f);
    dk.assign(T * kDidx, 0.0f);
    dw.assign(T * kHidx, 0.0f);
    ks.assign(T, 0);
    ke.resize(T);
    std::iota(ke.begin(), ke.end(), 1);
  }
  template <class P>
  void fill(P& p) const {
    p.q = make_view(q.data(), DType::kBF16, {T, h, kDqk});
    p.kv = make_view(kv.data(), DType::kBF16, {T, kDqk});
    p.lse = make_view(lse.data(), DType::kF32, {T, h});
    p.sm_scale = dsa::kSoftmaxScaleV32;
    p.q_idx = make_view(qi.data(), DType::kBF16, {T, kHidx, kDidx});
    p.k_idx = make_view(ki.data(), DType::kBF16, {T, kDidx});
    p.weights = make_view(w.data(), DType::kF32, {T, kHidx});
    p.loss = make_view(loss.data(), DType::kF32, {1});
    p.dq_idx = make_view(dq.data(), DType::kF32, {T, kHidx, kDidx});
    p.dk_idx = make_view(dk.data(), DType::kF32, {T, kDidx});
    p.dweights = make_view(dw.data(), DType::kF32, {T, kHidx});
  }
};

// Dense warm-up: one causal sequence of T tokens, h_q heads.
void BM_LossDense(benchmark::State& state) {
  Inputs in(state.range(0), state.range(1));
  dsa::DenseMlaFwdParams f;
  f.q = make_view(in.q.data(), DType::kBF16, {in.T, in.h, kDqk});
  f.kv = make_view(in.kv.data(), DType::kBF16, {in.T, kDqk});
  f.ks = make_view(in.ks.data(), DType::kI32, {in.T});
  f.ke = make_view(in.ke.data(), DType::kI32, {in.T});
  f.out = make_view(in.out.data(), DType::kBF16, {in.T, in.h, kDv});
  f.lse = make_view(in.lse.data(), DType::kF32, {in.T, in.h});
  f.sm_scale = dsa::kSoftmaxScaleV32;
  DSA_BENCH_CHECK(state, dsa::run(f));
  dsa::IndexerLossDenseParams p;
  in.fill(p);
  p.ks = f.ks;
  p.ke = f.ke;
  for (auto _ : state) DSA_BENCH_CHECK(state, dsa::run(p));
  const double pairs = double(in.T) * double(in.T + 1) / 2;
  state.counters["pairs/s"] = rate(pairs);
  state.counters["teacher_flop/s"] = rate(2.0 * in.h * kDqk * pairs);
  state.counters["loss"] = in.loss[0];
}
BENCHMARK(BM_LossDense)
    ->ArgNames({"T", "h_q"})
    ->Args({512, 16})
    ->Args({1024, 128})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LossDense)
    ->ArgNames({"T", "h_q"})
    ->Args({4096, 128})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);

// Sparse stage: top-k random keys among each row's causal prefix (all of them when t < topk).
void BM_LossSparse(benchmark::State& state) {
  Inputs in(state.range(0), state.range(1));
  const int64_t topk = state.range(2);
  std::vector<int32_t> idx(in.T * topk, -1);
  std::mt19937_64 gen(7);
  std::vector<int32_t> all;
  for (int64_t t = 0; t < in.T; ++t) {
    all.resize(t + 1);
    std::iota(all.begin(), all.end(), 0);
    if (t + 1 > topk) std::shuffle(all.begin(), all.end(), gen);
    std::copy(all.begin(), all.begin() + std::min<int64_t>(topk, t + 1), idx.begin() + t * topk);
  }
  dsa::SparseMlaFwdParams f;
  f.q = make_view(in.q.data(), DType::kBF16, {in.T, in.h, kDqk});
  f.kv = make_view(in.kv.data(), DType::kBF16, {in.T, kDqk});
  f.indices = make_view(idx.data(), DType::kI32, {in.T, topk});
  f.out = make_view(in.out.data(), DType::kBF16, {in.T, in.h, kDv});
  f.lse = make_view(in.lse.data(), DType::kF32, {in.T, in.h});
  f.sm_scale = dsa::kSoftmaxScaleV32;
  DSA_BENCH_CHECK(state, dsa::run(f));
  dsa::IndexerLossSparseParams p;
  in.fill(p);
  p.indices = f.indices;
  for (auto _ : state) DSA_BENCH_CHECK(state, dsa::run(p));
  double pairs = 0;
  for (int64_t t = 0; t < in.T; ++t) pairs += double(std::min<int64_t>(topk, t + 1));
  state.counters["pairs/s"] = rate(pairs);
  state.counters["teacher_flop/s"] = rate(2.0 * in.h * kDqk * pairs);
  state.counters["loss"] = in.loss[0];
}
BENCHMARK(BM_LossSparse)
    ->ArgNames({"T", "h_q", "topk"})
    ->Args({1024, 16, 256})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LossSparse)
    ->ArgNames({"T", "h_q", "topk"})
    ->Args({4096, 128, 2048})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);

}  // namespace

BENCHMARK_MAIN();
