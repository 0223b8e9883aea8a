// bench_reference_cpu — the CPU reference of every inference op, through dsa::run on host pointers,
// at moderate sizes, plus one 4K-token sparse MLA forward layer (s_q 4096, h_q 128, topk 2048) as a
// single iteration. Rates use the SPEC §10.2 formulas (bench_common.hpp). Wall-clock time
// (UseRealTime): the reference runs on std::threads (DSA_NUM_THREADS overrides their count).
//
//   bench_reference_cpu --benchmark_filter=SparseMla --benchmark_out=cpu.json
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_common.hpp"

namespace {

using benchmark::Counter;
using dsa::DType;
using dsa::make_view;
using namespace dsa::bench;

// ---- OP-ROPE ---------------------------------------------------------------------------------------

void BM_RopeTable(benchmark::State& state) {
  const int64_t max_pos = state.range(0);
  std::vector<float> cos(max_pos * 32), sin(max_pos * 32);
  dsa::RopeTableParams p;
  p.cos = make_view(cos.data(), DType::kF32, {max_pos, 32});
  p.sin = make_view(sin.data(), DType::kF32, {max_pos, 32});
  DSA_BENCH_CHECK(state, dsa::run(p));
  for (auto _ : state) benchmark::DoNotOptimize(dsa::run(p));
  state.counters["pos/s"] = rate(double(max_pos));
}
BENCHMARK(BM_RopeTable)->ArgNames({"max_pos"})->Arg(4096)->Arg(65536)->UseRealTime()->Unit(benchmark::kMillisecond);

// Indexer RoPE (non-interleaved, dims [0, 64)) on q [s_q, h_idx, 128].
void BM_Rope(benchmark::State& state) {
  const int64_t n = state.range(0), h = state.range(1);
  std::vector<float> cos(n * 32), sin(n * 32);
  dsa::RopeTableParams t;
  t.cos = make_view(cos.data(), DType::kF32, {n, 32});
  t.sin = make_view(sin.data(), DType::kF32, {n, 32});
  DSA_BENCH_CHECK(state, dsa::run(t));
  const auto x = random_bf16(n * h * 128, 1.0, 1);
  std::vector<dsa::bf16_t> out(x.size());
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), 0);
  dsa::RopeParams p;
  p.x = make_view(x.data(), DType::kBF16, {n, h, 128});
  p.out = make_view(out.data(), DType::kBF16, {n, h, 128});
  p.positions = make_view(pos.data(), DType::kI32, {n});
  p.cos = t.cos;
  p.sin = t.sin;
  DSA_BENCH_CHECK(state, dsa::run(p));
  for (auto _ : state) benchmark::DoNotOptimize(dsa::run(p));
  state.counters["bytes/s"] = rate(2.0 * 2 * n * h * 128);
}
BENCHMARK(BM_Rope)->ArgNames({"s_q", "h_idx"})->Args({4096, 64})->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- OP-HAD / OP-QUANT ----------------------------------------------------------------------------

void BM_Hadamard(benchmark::State& state) {
  const int64_t n = state.range(0);
  const auto x = random_bf16(n * 128, 1.0, 2);
  std::vector<dsa::bf16_t> out(x.size());
  dsa::HadamardParams p;
  p.x = make_view(x.data(), DType::kBF16, {n, 128});
  p.out = make_view(out.data(), DType::kBF16, {n, 128});
  DSA_BENCH_CHECK(state, dsa::run(p));
  for (auto _ : state) benchmark::DoNotOptimize(dsa::run(p));
  state.counters["rows/s"] = rate(double(n));
  state.counters["bytes/s"] = rate(2.0 * 2 * n * 128);
}
BENCHMARK(BM_Hadamard)->ArgNames({"n"})->Arg(262144)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Quantize(benchmark::State& state) {
  const int64_t n = state.range(0), d = state.range(1);
  const auto x = random_bf16(n * d, 1.0, 3);
  std::vector<uint8_t> codes(n * d);
  std::vector<float> scales(n * d / 128);
  dsa::QuantizeParams p;
  p.x = make_view(x.data(), DType::kBF16, {n, d});
  p.codes = make_view(codes.data(), DType::kE4M3, {n, d});
  p.scales = make_view(scales.data(), DType::kF32, {n, d / 128});
  DSA_BENCH_CHECK(state, dsa::run(p));
  for (auto _ : state) benchmark::DoNotOptimize(dsa::run(p));
  state.counters["bytes/s"] = rate(n * d * 3.0 + n * d / 128 * 4.0);
}
BENCHMARK(BM_Quantize)->ArgNames({"n", "d"})->Args({65536, 512})->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Dequantize(benchmark::State& state) {
  const int64_t n = state.range(0), d = state.range(1);
  const auto codes = random_e4m3(n * d, 4);
  std::vector<float> scales(n * d / 128, 0.25f);
  std::vector<dsa::bf16_t> out(n * d);
  dsa::DequantizeParams p;
  p.codes = make_view(codes.data(), DType::kE4M3, {n, d});
  p.scales = make_view(scales.data(), DType::kF32, {n, d / 128});
  p.out = make_view(out.data(), DType::kBF16, {n, d});
  DSA_BENCH_CHECK(state, dsa::run(p));
  for (auto _ : state) benchmark::DoNotOptimize(dsa::run(p));
  state.counters["bytes/s"] = rate(n * d * 3.0 + n * d / 128 * 4.0);
}
BENCHMARK(BM_Dequantize)->ArgNames({"n", "d"})->Args({65536, 512})->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- OP-IDXPREP -------------------------------------------------------------------------------------

void BM_IndexerPrep(benchmark::State& state) {
  const int64_t T = state.range(0), h = state.range(1), P = 64;
  std::vector<float> cos(T * 32), sin(T * 32);
  dsa::RopeTableParams t;
  t.cos = make_view(cos.data(), DType::kF32, {T, 32});
  t.sin = make_view(sin.data(), DType::kF32, {T, 32});
  DSA_BENCH_CHECK(state, dsa::run(t));
  const auto q = random_bf16(T * h * 128, 1.0, 5), k = random_bf16(T * 128, 1.0, 6);
  const auto w = random_f32(T * h, 1.0, 7);
  std::vector<int32_t> pos(T), slots(T);
  std::iota(pos.begin(), pos.end(), 0);
  std::iota(slots.begin(), slots.end(), 0);
  const int64_t blocks = (T + P - 1) / P;
  std::vector<uint8_t> q_out(T * h * 128), k_out(T * 128), cache(blocks * 132 * P);
  std::vector<float> w_out(T * h), k_scale(T);
  dsa::IndexerPrepParams p;
  p.q = make_view(q.data(), DType::kBF16, {T, h, 128});
  p.weights = make_view(w.data(), DType::kF32, {T, h});
  p.k = make_view(k.data(), DType::kBF16, {T, 128});
  p.positions = make_view(pos.data(), DType::kI32, {T});
  p.rope_cos = t.cos;
  p.rope_sin = t.sin;
  p.q_out = make_view(q_out.data(), DType::kE4M3, {T, h, 128});
  p.weights_out = make_view(w_out.data(), DType::kF32, {T, h});
  p.k_out = make_view(k_out.data(), DType::kE4M3, {T, 128});
  p.k_scale_out = make_view(k_scale.data(), DType::kF32, {T});
  p.k_cache = make_view(cache.data(), DType::kU8, {blocks, 132 * P});
  p.slot_mapping = make_view(slots.data(), DType::kI32, {T});
  p.page_block_size = static_cast<int32_t>(P);
  DSA_BENCH_CHECK(state, dsa::run(p));
  for (auto _ : state) benchmark::DoNotOptimize(dsa::run(p));
  state.counters["tok/s"] = rate(double(T));
}
BENCHMARK(BM_IndexerPrep)->ArgNames({"s_q", "h_idx"})->Args({2048, 64})->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- OP-IDXLOGITS -----------------------------------------------------------------------------------

// Contiguous FP8 logits, every row over the whole key range (pairs = s_q·s_kv).
void BM_IndexerLogits(benchmark::State& state) {
  const int64_t s_q = state.range(0), s_kv = state.range(1), h = state.range(2), d = 128;
  const auto q = random_e4m3(s_q * h * d, 8), k = random_e4m3(s_kv * d, 9);
  const auto w = random_f32(s_q * h, 0.01, 10);
  std::vector<float> k_scale(s_kv, 0.0078125f), logits(s_q * s_kv);
  std::vector<int32_t> ks(s_q, 0), ke(s_q, static_cast<int32_t>(s_kv));
  dsa::IndexerLogitsParams p;
  p.q = make_view(q.data(), DType::kE4M3, {s_q, h, d});
  p.k = make_view(k.data(), DType::kE4M3, {s_kv, d});
  p.k_scale = make_view(k_scale.data(), DType::kF32, {s_kv});
  p.weights = make_view(w.data(), DType::kF32, {s_q, h});
  p.ks = make_view(ks.data(), DType::kI32, {s_q});
  p.ke = make_view(ke.data(), DType::kI32, {s_q});
  p.logits = make_view(logits.data(), DType::kF32, {s_q, s_kv});
  DSA_BENCH_CHECK(state, dsa::run(p));
  for (auto _ : state) benchmark::DoNotOptimize(dsa::run(p));
  state.counters["FLOP/s"] = rate(indexer_flops(double(s_q) * s_kv, double(h), double(d)));
}
BENCHMARK(BM_IndexerLogits)->ArgNames({"s_q", "s_kv", "h_idx"})->Args({512, 8192, 64})->UseRealTime()->Unit(benchmark::kMillisecond);

// Paged FP8 logits from the 132-byte cache, 1-D context_lens (SPEC §12.4).
void BM_IndexerPagedLogits(benchmark::State& state) {
  const int64_t b = state.range(0), next_n = state.range(1), ctx = state.range(2), h = 64, d = 128, P = 64;
  const int64_t pages_per = (ctx + P - 1) / P, blocks = b * pages_per;
  const auto q = random_e4m3(b * next_n * h * d, 11);
  const auto w = random_f32(b * next_n * h, 0.01, 12);
  std::vector<uint8_t> cache(blocks * 132 * P);
  const auto codes = random_e4m3(blocks * 128 * P, 13);
  for (int64_t pg = 0; pg < blocks; ++pg) {
    std::memcpy(&cache[pg * 132 * P], &codes[pg * 128 * P], 128 * P);
    for (int64_t i = 0; i < P; ++i) {
      const float s = 0.0078125f;
      std::memcpy(&cache[pg * 132 * P + 128 * P + 4 * i], &s, 4);
    }
  }
  std::vector<int32_t> lens(b, static_cast<int32_t>(ctx)), table(b * pages_per);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(14));
  std::vector<float> logits(b * next_n * ctx);
  dsa::IndexerPagedLogitsParams p;
  p.q = make_view(q.data(), DType::kE4M3, {b, next_n, h, d});
  p.k_cache = make_view(cache.data(), DType::kU8, {blocks, 132 * P});
  p.weights = make_view(w.data(), DType::kF32, {b * next_n, h});
  p.context_lens = make_view(lens.data(), DType::kI32, {b});
  p.block_table = make_view(table.data(), DType::kI32, {b, pages_per});
  p.logits = make_view(logits.data(), DType::kF32, {b * next_n, ctx});
  p.page_block_size = static_cast<int32_t>(P);
  DSA_BENCH_CHECK(state, dsa::run(p));
  for (auto _ : state) benchmark::DoNotOptimize(dsa::run(p));
  // Token j of request b sees ctx − next_n + 1 + j keys (1-D form).
  double pairs = 0;
  for (int64_t j = 0; j < next_n; ++j) pairs += double(b) * (ctx - next_n + 1 + j);
  state.counters["FLOP/s"] = rate(indexer_flops(pairs, double(h), double(d)));
}
BENCHMARK(BM_IndexerPagedLogits)->ArgNames({"b", "next_n", "s_kv"})->Args({32, 2, 8192})->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- OP-TOPK ----------------------------------------------------------------------------------------

void BM_TopK(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1), k = state.range(2);
  // ReLU-sum-like scores: half the keys on the exact 0.0 plateau, the rest positive.
  std::vector<float> scores(rows * cols);
  std::mt19937_64 gen(15);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (float& s : scores) s = std::max(0.f, nd(gen));
  std::vector<int32_t> idx(rows * k);
  dsa::TopKParams p;
  p.scores = make_view(scores.data(), DType::kF32, {rows, cols});
  p.indices = make_view(idx.data(), DType::kI32, {rows, k});
  DSA_BENCH_CHECK(state, dsa::run(p));
  for (auto _ : state) benchmark::DoNotOptimize(dsa::run(p));
  state.counters["rows/s"] = rate(double(rows));
  state.counters["bytes/s"] = rate(4.0 * rows * cols);
}
BENCHMARK(BM_TopK)->ArgNames({"rows", "s_kv", "topk"})->Args({64, 131072, 2048})->Args({2048, 8192, 2048})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- OP-MLACACHE ------------------------------------------------------------------------------------

void BM_MlaCacheWrite(benchmark::State& state) {
  const int64_t n = state.range(0), P = 64, blocks = (n + P - 1) / P;
  const auto kv = random_bf16(n * 576, 0.1, 16);
  std::vector<int32_t> slots(n);
  std::iota(slots.begin(), slots.end(), 0);
  std::vector<uint8_t> cache(blocks * P * 656);
  dsa::MlaCacheWriteParams p;
  p.kv = make_view(kv.data(), DType::kBF16, {n, 576});
  p.slot_mapping = make_view(slots.data(), DType::kI32, {n});
  p.cache = make_view(cache.data(), DType::kU8, {blocks, P, 656});
  DSA_BENCH_CHECK(state, dsa::run(p));
  for (auto _ : state) benchmark::DoNotOptimize(dsa::run(p));
  state.counters["tok/s"] = rate(double(n));
  state.counters["bytes/s"] = rate(n * (576 * 2.0 + 656));
}
BENCHMARK(BM_MlaCacheWrite)->ArgNames({"n"})->Arg(16384)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- OP-SMLA-FWD ------------------------------------------------------------------------------------

// Each row picks `topk` distinct random keys of [0, s_kv).
std::vector<int32_t> random_indices(int64_t rows, int64_t topk, int64_t s_kv, uint64_t seed) {
  std::vector<int32_t> idx(rows * topk), perm(s_kv);
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 gen(seed);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < topk; ++j) {  // partial Fisher–Yates
      std::uniform_int_distribution<int64_t> u(j, s_kv - 1);
      std::swap(perm[j], perm[u(gen)]);
      idx[r * topk + j] = perm[j];
    }
  }
  return idx;
}

void BM_SparseMlaFwd(benchmark::State& state) {
  const int64_t s_q = state.range(0), h = state.range(1), topk = state.range(2), s_kv = state.range(3);
  const auto q = random_bf16(s_q * h * 576, 0.1, 17), kv = random_bf16(s_kv * 576, 0.1, 18);
  const auto idx = random_indices(s_q, topk, s_kv, 19);
  std::vector<dsa::bf16_t> out(s_q * h * 512);
  std::vector<float> lse(s_q * h);
  dsa::SparseMlaFwdParams p;
  p.q = make_view(q.data(), DType::kBF16, {s_q, h, 576});
  p.kv = make_view(kv.data(), DType::kBF16, {s_kv, 576});
  p.indices = make_view(idx.data(), DType::kI32, {s_q, topk});
  p.out = make_view(out.data(), DType::kBF16, {s_q, h, 512});
  p.lse = make_view(lse.data(), DType::kF32, {s_q, h});
  p.sm_scale = dsa::kSoftmaxScaleV32;
  // The single-iteration layer entry is its own measurement: no separate check run.
  if (state.max_iterations != 1) DSA_BENCH_CHECK(state, dsa::run(p));
  for (auto _ : state) {
    const dsa::Status s = dsa::run(p);
    if (!s.ok()) {
      state.SkipWithError(s.message().c_str());
      break;
    }
  }
  state.counters["FLOP/s"] = rate(sparse_mla_fwd_flops(double(s_q), double(h), double(topk)));
  state.counters["bytes/s"] = rate(sparse_mla_fwd_bytes(double(s_q) * topk, double(s_q), double(h)));
}
BENCHMARK(BM_SparseMlaFwd)->Name("BM_SparseMlaFwd")->ArgNames({"s_q", "h_q", "topk", "s_kv"})
    ->Args({128, 128, 2048, 8192})->Args({256, 64, 512, 4096})->UseRealTime()->Unit(benchmark::kMillisecond);
// The 4K-token layer of SPEC §10.3 (2.34e12 FLOP): one iteration.
BENCHMARK(BM_SparseMlaFwd)->Name("BM_SparseMlaFwd_Layer4K")->ArgNames({"s_q", "h_q", "topk", "s_kv"})
    ->Args({4096, 128, 2048, 8192})->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);

// ---- OP-SMLA-DEC ------------------------------------------------------------------------------------

void BM_SparseMlaDecode(benchmark::State& state) {
  const int64_t b = state.range(0), s_q = state.range(1), h = state.range(2), topk = state.range(3),
                s_k = state.range(4), P = 64, blocks = (s_k + P - 1) / P;
  // A real FP8 cache: s_k random latent rows written by OP-MLACACHE.
  const auto kv = random_bf16(s_k * 576, 1.0, 20);
  std::vector<int32_t> slots(s_k);
  std::iota(slots.begin(), slots.end(), 0);
  std::vector<uint8_t> cache(blocks * P * 656);
  dsa::MlaCacheWriteParams w;
  w.kv = make_view(kv.data(), DType::kBF16, {s_k, 576});
  w.slot_mapping = make_view(slots.data(), DType::kI32, {s_k});
  w.cache = make_view(cache.data(), DType::kU8, {blocks, P, 656});
  DSA_BENCH_CHECK(state, dsa::run(w));
  const auto q = random_bf16(b * s_q * h * 576, 1.0, 21);
  const auto idx = random_indices(b * s_q, topk, s_k, 22);
  std::vector<dsa::bf16_t> out(b * s_q * h * 512);
  std::vector<float> lse(b * s_q * h);
  dsa::SparseMlaDecodeParams p;
  p.q = make_view(q.data(), DType::kBF16, {b, s_q, h, 576});
  p.cache = w.cache;
  p.indices = make_view(idx.data(), DType::kI32, {b, s_q, topk});
  p.out = make_view(out.data(), DType::kBF16, {b, s_q, h, 512});
  p.lse = make_view(lse.data(), DType::kF32, {b, s_q, h});
  p.sm_scale = dsa::kSoftmaxScaleV32;
  DSA_BENCH_CHECK(state, dsa::run(p));
  for (auto _ : state) benchmark::DoNotOptimize(dsa::run(p));
  std::vector<uint8_t> seen(s_k, 0);
  double unique = 0;
  for (int32_t i : idx) unique += seen[i] ? 0 : (seen[i] = 1);
  state.counters["FLOP/s"] = rate(sparse_mla_fwd_flops(double(b * s_q), double(h), double(topk)));
  state.counters["bytes/s"] = rate(sparse_mla_decode_bytes(double(b), double(s_q), double(h), unique));
}
BENCHMARK(BM_SparseMlaDecode)->ArgNames({"b", "s_q", "h_q", "topk", "s_kv"})->Args({16, 2, 128, 2048, 32768})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- dense MLA forward ------------------------------------------------------------------------------

// The last s_q tokens of one causal sequence of s_kv tokens.
void BM_DenseMlaFwd(benchmark::State& state) {
  const int64_t s_q = state.range(0), h = state.range(1), s_kv = state.range(2);
  const auto q = random_bf16(s_q * h * 576, 0.1, 23), kv = random_bf16(s_kv * 576, 0.1, 24);
  std::vector<int32_t> ks(s_q, 0), ke(s_q);
  double pairs = 0;
  for (int64_t t = 0; t < s_q; ++t) pairs += (ke[t] = static_cast<int32_t>(s_kv - s_q + t + 1));
  std::vector<dsa::bf16_t> out(s_q * h * 512);
  std::vector<float> lse(s_q * h);
  dsa::DenseMlaFwdParams p;
  p.q = make_view(q.data(), DType::kBF16, {s_q, h, 576});
  p.kv = make_view(kv.data(), DType::kBF16, {s_kv, 576});
  p.ks = make_view(ks.data(), DType::kI32, {s_q});
  p.ke = make_view(ke.data(), DType::kI32, {s_q});
  p.out = make_view(out.data(), DType::kBF16, {s_q, h, 512});
  p.lse = make_view(lse.data(), DType::kF32, {s_q, h});
  p.sm_scale = dsa::kSoftmaxScaleV32;
  DSA_BENCH_CHECK(state, dsa::run(p));
  for (auto _ : state) benchmark::DoNotOptimize(dsa::run(p));
  state.counters["FLOP/s"] = rate(dense_mla_fwd_flops(pairs, double(h)));
}
BENCHMARK(BM_DenseMlaFwd)->ArgNames({"s_q", "h_q", "s_kv"})->Args({128, 128, 2048})->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("dsa_version", dsa::version_string());
  benchmark::AddCustomContext("backend", "CPU reference (dsa::run, host pointers)");
  const char* nt = std::getenv("DSA_NUM_THREADS");
  benchmark::AddCustomContext("threads", nt ? nt : std::to_string(std::thread::hardware_concurrency()) + " (hardware_concurrency)");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
