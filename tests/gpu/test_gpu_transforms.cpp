// GPU tests of the transform ops (OP-QUANT, OP-HAD, OP-ROPE apply, OP-MLACACHE, OP-IDXPREP): the
// CUDA path on fresh random data is bitwise equal to the CPU reference on the same bytes (SPEC
// §9.1), every output is written (outputs start poisoned), reruns are bitwise identical, and the
// dispatch rules hold (an op without a kernel answers kNotImplemented; mixed host/device pointers
// are rejected naming both arguments).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "dsa/dsa.hpp"
#include "gpu/gpu_util.hpp"
#include "support/random.hpp"

using namespace dsa;
using dsa::test::Mirror;
using dsa::test::require_same_bytes;

namespace {

void fill_bf16(Mirror& m, test::Rng& rng, size_t n, double scale = 0.5) {
  auto v = test::randn_bf16(rng, n, scale, 0.05, 1e4);
  std::memcpy(m.host(), v.data(), n * sizeof(bf16_t));
}

// Random fp32 values spanning magnitudes, so blocks hit the 1e-4 amax floor, subnormal codes and
// large scales.
float random_magnitude(test::Rng& rng) {
  static const float mags[] = {1e-7f, 3e-5f, 1e-3f, 0.1f, 1.0f, 37.0f, 3000.0f};
  return mags[rng.integer(0, 6)];
}

void require_ok(const Status& s, const char* what) {
  INFO(what << ": " << status_code_name(s.code()) << ": " << s.message());
  REQUIRE(s.ok());
}

}  // namespace

TEST_CASE("gpu quantize: codes and scales bitwise equal to the CPU reference", "[gpu][quant]") {
  test::Rng rng(0xA001);
  struct Shape { int64_t n, d, pad; };
  for (Shape sh : {Shape{1, 128, 0}, Shape{3, 256, 128}, Shape{17, 512, 0}, Shape{64, 1024, 256},
                   Shape{130, 128, 0}, Shape{0, 256, 0}})
    for (DType xt : {DType::kBF16, DType::kF32})
      for (ScaleFormat fmt : {ScaleFormat::kUe8m0, ScaleFormat::kRaw}) {
        const int64_t n = sh.n, d = sh.d, xs = d + sh.pad, blocks = d / 128;
        CAPTURE(n, d, xs, (int)xt, (int)fmt);
        Mirror x(n * xs * dtype_size(xt)), codes(n * xs), scales(n * (blocks + 1) * 4);
        for (int64_t r = 0; r < n; ++r)
          for (int64_t b = 0; b < blocks; ++b) {
            const float mag = random_magnitude(rng);
            for (int64_t i = 0; i < 128; ++i) {
              const float v = static_cast<float>(rng.normal()) * mag;
              const int64_t e = r * xs + b * 128 + i;
              if (xt == DType::kF32) x.host_as<float>()[e] = v;
              else x.host_as<bf16_t>()[e] = float_to_bf16(v);
            }
          }
        x.upload();
        codes.poison(0xFF);
        scales.poison(0xFF);
        auto make = [&](bool dev) {
          QuantizeParams p;
          p.x = x.view(dev, xt, {n, d}, {xs, 1});
          p.codes = codes.view(dev, DType::kE4M3, {n, d}, {xs, 1});
          p.scales = scales.view(dev, DType::kF32, {n, blocks}, {blocks + 1, 1});
          p.scale_format = fmt;
          return p;
        };
        require_ok(run(make(false)), "cpu");
        require_ok(run(make(true)), "cuda");
        test::sync_ok();
        require_same_bytes("codes", codes);
        require_same_bytes("scales", scales);
        // Every output element was written (finite inputs never give a NaN code or scale).
        for (int64_t r = 0; r < n; ++r) {
          for (int64_t i = 0; i < d; ++i) REQUIRE((codes.host()[r * xs + i] & 0x7F) != 0x7F);
          for (int64_t b = 0; b < blocks; ++b) REQUIRE(std::isfinite(scales.host_as<float>()[r * (blocks + 1) + b]));
        }
        // Rerun: bitwise identical.
        const auto first_codes = codes.download(), first_scales = scales.download();
        GPU_REQUIRE(cudaMemset(codes.dev(), 0xFF, codes.bytes()));
        GPU_REQUIRE(cudaMemset(scales.dev(), 0xFF, scales.bytes()));
        require_ok(run(make(true)), "cuda rerun");
        test::sync_ok();
        REQUIRE(codes.download() == first_codes);
        REQUIRE(scales.download() == first_scales);
      }
}

TEST_CASE("gpu dequantize: bitwise equal to the CPU reference", "[gpu][quant]") {
  test::Rng rng(0xA002);
  for (int64_t n : {1, 5, 77})
    for (int64_t d : {128, 384})
      for (DType ot : {DType::kBF16, DType::kF32})
        for (bool pow2 : {true, false}) {
          const int64_t blocks = d / 128, os = d + 64;
          CAPTURE(n, d, (int)ot, pow2);
          Mirror codes(n * d), scales(n * blocks * 4), out(n * os * dtype_size(ot));
          for (int64_t i = 0; i < n * d; ++i) {
            uint8_t c;
            do c = static_cast<uint8_t>(rng.integer(0, 255)); while ((c & 0x7F) == 0x7F);  // no NaN codes
            codes.host()[i] = c;
          }
          for (int64_t i = 0; i < n * blocks; ++i)
            scales.host_as<float>()[i] = pow2 ? std::ldexp(1.0f, static_cast<int>(rng.integer(-24, 12)))
                                              : static_cast<float>(rng.uniform(1e-6, 2.0));
          codes.upload();
          scales.upload();
          out.poison(0xFF);
          auto make = [&](bool dev) {
            DequantizeParams p;
            p.codes = codes.view(dev, DType::kE4M3, {n, d});
            p.scales = scales.view(dev, DType::kF32, {n, blocks});
            p.out = out.view(dev, ot, {n, d}, {os, 1});
            return p;
          };
          require_ok(run(make(false)), "cpu");
          require_ok(run(make(true)), "cuda");
          test::sync_ok();
          require_same_bytes("out", out);
          for (int64_t r = 0; r < n; ++r)
            for (int64_t i = 0; i < d; ++i) {
              const double v = ot == DType::kF32 ? out.host_as<float>()[r * os + i]
                                                 : bf16_to_float(out.host_as<bf16_t>()[r * os + i]);
              REQUIRE(std::isfinite(v));
            }
        }
}

TEST_CASE("gpu hadamard: bitwise equal to the CPU reference, in place too", "[gpu][hadamard]") {
  test::Rng rng(0xA003);
  for (int64_t n : {1, 7, 64, 1000, 0})
    for (int64_t pad : {0, 64})
      for (bool in_place : {false, true}) {
        const int64_t xs = 128 + pad;
        CAPTURE(n, pad, in_place);
        Mirror x(n * xs * 2), out(n * xs * 2);
        for (int64_t r = 0; r < n; ++r) {
          const double mag = random_magnitude(rng) + 0.01;
          auto v = test::randn_bf16(rng, 128, mag, 0.05, 1e4);
          std::memcpy(x.host() + r * xs * 2, v.data(), 256);
        }
        x.upload();
        const std::vector<uint8_t> x_orig = x.host_bytes();
        out.poison(0xFF);
        auto make = [&](bool dev) {
          HadamardParams p;
          p.x = x.view(dev, DType::kBF16, {n, 128}, {xs, 1});
          p.out = in_place ? p.x : out.view(dev, DType::kBF16, {n, 128}, {xs, 1});
          return p;
        };
        require_ok(run(make(false)), "cpu");
        require_ok(run(make(true)), "cuda");
        test::sync_ok();
        Mirror& res = in_place ? x : out;
        require_same_bytes("out", res);
        // Fully written: no poison (bf16 0xFFFF is NaN) and, in place, every row changed or is a
        // fixed point of the transform.
        for (int64_t r = 0; r < n; ++r)
          for (int i = 0; i < 128; ++i)
            REQUIRE(std::isfinite(bf16_to_float(res.host_as<bf16_t>()[r * xs + i])));
        // Sanity against the float64 definition: |y − H·x/√128| within bf16 rounding plus fp32 slack.
        for (int64_t r = 0; r < std::min<int64_t>(n, 8); ++r) {
          const bf16_t* xr = reinterpret_cast<const bf16_t*>(x_orig.data()) + r * xs;
          double norm = 0;
          for (int c = 0; c < 128; ++c) norm += std::fabs(bf16_to_float(xr[c]));
          for (int o = 0; o < 128; ++o) {
            double y = 0;
            for (int c = 0; c < 128; ++c)
              y += (__builtin_popcount(o & c) & 1 ? -1.0 : 1.0) * bf16_to_float(xr[c]);
            y /= std::sqrt(128.0);
            const double got = bf16_to_float(res.host_as<bf16_t>()[r * xs + o]);
            REQUIRE(std::fabs(got - y) <= std::fabs(y) * (1.0 / 256) + norm * 1e-6);
          }
        }
        // Rerun (not in place, where the input is gone): bitwise identical.
        if (!in_place) {
          const auto first = out.download();
          GPU_REQUIRE(cudaMemset(out.dev(), 0xFF, out.bytes()));
          require_ok(run(make(true)), "cuda rerun");
          test::sync_ok();
          REQUIRE(out.download() == first);
        }
      }
}

namespace {
struct RopeShape {
  int64_t n, heads, d;
  int32_t offset, rope_dim;
  RopeStyle style;
};
}  // namespace

TEST_CASE("gpu rope: both pairings, inverse, in place: bitwise equal to the CPU reference", "[gpu][rope]") {
  test::Rng rng(0xA004);
  const int64_t max_pos = 300;
  for (RopeShape sh : {RopeShape{37, 64, 128, 0, 64, RopeStyle::kNonInterleaved},   // indexer q
                       RopeShape{5, 16, 576, 512, 64, RopeStyle::kInterleaved},     // MLA q (MQA)
                       RopeShape{33, 1, 64, 0, 64, RopeStyle::kInterleaved},        // k_pe
                       RopeShape{3, 2, 40, 6, 16, RopeStyle::kNonInterleaved},      // odd slice
                       RopeShape{4, 3, 40, 6, 16, RopeStyle::kInterleaved},
                       RopeShape{0, 4, 128, 0, 64, RopeStyle::kNonInterleaved}})
    for (bool inverse : {false, true})
      for (bool in_place : {false, true}) {
        const int64_t n = sh.n, h = sh.heads, d = sh.d, half = sh.rope_dim / 2;
        const int64_t hs = d + 8;  // head stride (padded)
        CAPTURE(n, h, d, sh.offset, sh.rope_dim, (int)sh.style, inverse, in_place);
        Mirror x(n * h * hs * 2 + 2), out(n * h * hs * 2 + 2), pos(n * 4 + 4), cs(max_pos * half * 4),
            sn(max_pos * half * 4);
        fill_bf16(x, rng, n * h * hs, 1.0);
        for (int64_t t = 0; t < n; ++t) pos.host_as<int32_t>()[t] = static_cast<int32_t>(rng.integer(0, max_pos - 1));
        for (int64_t i = 0; i < max_pos * half; ++i) {
          const double th = rng.uniform(-100, 100);
          cs.host_as<float>()[i] = static_cast<float>(std::cos(th));
          sn.host_as<float>()[i] = static_cast<float>(std::sin(th));
        }
        x.upload();
        pos.upload();
        cs.upload();
        sn.upload();
        out.poison(0xFF);
        auto make = [&](bool dev) {
          RopeParams p;
          p.x = x.view(dev, DType::kBF16, {n, h, d}, {h * hs, hs, 1});
          p.out = in_place ? p.x : out.view(dev, DType::kBF16, {n, h, d}, {h * hs, hs, 1});
          p.positions = pos.view(dev, DType::kI32, {n});
          p.cos = cs.view(dev, DType::kF32, {max_pos, half});
          p.sin = sn.view(dev, DType::kF32, {max_pos, half});
          p.style = sh.style;
          p.rope_offset = sh.offset;
          p.rope_dim = sh.rope_dim;
          p.inverse = inverse;
          return p;
        };
        require_ok(run(make(false)), "cpu");
        require_ok(run(make(true)), "cuda");
        test::sync_ok();
        Mirror& res = in_place ? x : out;
        require_same_bytes("out", res);
        for (int64_t t = 0; t < n; ++t)
          for (int64_t j = 0; j < h; ++j)
            for (int64_t i = 0; i < d; ++i)
              REQUIRE(std::isfinite(bf16_to_float(res.host_as<bf16_t>()[(t * h + j) * hs + i])));
      }
}

TEST_CASE("gpu rope: an out-of-range position gives NaN rows on the CUDA path", "[gpu][rope]") {
  test::Rng rng(0xA005);
  const int64_t n = 4, h = 2, d = 128, max_pos = 16, half = 32;
  Mirror x(n * h * d * 2), out(n * h * d * 2), pos(n * 4), cs(max_pos * half * 4), sn(max_pos * half * 4);
  fill_bf16(x, rng, n * h * d);
  const int32_t positions[] = {3, max_pos, -1, 0};
  std::memcpy(pos.host(), positions, sizeof(positions));
  for (int64_t i = 0; i < max_pos * half; ++i) {
    cs.host_as<float>()[i] = static_cast<float>(std::cos(0.1 * i));
    sn.host_as<float>()[i] = static_cast<float>(std::sin(0.1 * i));
  }
  x.upload(), pos.upload(), cs.upload(), sn.upload();
  out.poison(0x11);
  auto make = [&](bool dev) {
    RopeParams p;
    p.x = x.view(dev, DType::kBF16, {n, h, d});
    p.out = out.view(dev, DType::kBF16, {n, h, d});
    p.positions = pos.view(dev, DType::kI32, {n});
    p.cos = cs.view(dev, DType::kF32, {max_pos, half});
    p.sin = sn.view(dev, DType::kF32, {max_pos, half});
    return p;
  };
  const Status cpu = run(make(false));
  CHECK(cpu.code() == StatusCode::kInvalidArgument);
  CHECK(cpu.message().find("positions[1]") != std::string::npos);
  require_ok(run(make(true)), "cuda");
  test::sync_ok();
  const auto got = out.download();
  const uint16_t* o = reinterpret_cast<const uint16_t*>(got.data());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < h * d; ++i) {
      const float v = bf16_to_float(bf16_t{o[t * h * d + i]});
      if (t == 1 || t == 2) REQUIRE(std::isnan(v));
      else REQUIRE(std::isfinite(v));
    }
}

namespace {
// Test-side writer of one 656-byte FP8 MLA cache entry (SPEC §7.1), straight from the layout and
// the §4.4 rule through the public codecs.
void oracle_mla_entry(const bf16_t* kv, ScaleFormat fmt, uint8_t* dst) {
  for (int tile = 0; tile < 4; ++tile) {
    double amax = 0;
    for (int i = 0; i < 128; ++i) amax = std::max(amax, std::fabs((double)bf16_to_float(kv[tile * 128 + i])));
    const float s = fmt == ScaleFormat::kUe8m0 ? fp8_scale_ue8m0(static_cast<float>(amax))
                                               : fp8_scale_raw(static_cast<float>(amax));
    for (int i = 0; i < 128; ++i) dst[tile * 128 + i] = fp8_quantize_value(bf16_to_float(kv[tile * 128 + i]), s);
    std::memcpy(dst + 512 + 4 * tile, &s, 4);
  }
  std::memcpy(dst + 528, kv + 512, 128);
}
}  // namespace

TEST_CASE("gpu mla_cache_write: FP8 and bf16 caches bitwise equal to the reference and the layout", "[gpu][mlacache]") {
  test::Rng rng(0xA006);
  for (int64_t P : {1, 16, 64})
    for (int fmt_i = 0; fmt_i < 3; ++fmt_i) {  // 0: FP8 ue8m0, 1: FP8 raw, 2: bf16
      const bool fp8 = fmt_i < 2;
      const ScaleFormat fmt = fmt_i == 1 ? ScaleFormat::kRaw : ScaleFormat::kUe8m0;
      const int64_t n = 45, num_blocks = (n + P - 1) / P + 2, slots = num_blocks * P;
      const int64_t tok = fp8 ? 656 : 576;                // elements per token
      const int64_t page = P * tok + (fp8 ? 48 : 16);     // padded page stride, elements
      CAPTURE(P, fmt_i);
      Mirror kv(n * 576 * 2), map(n * 4), cache(num_blocks * page * (fp8 ? 1 : 2));
      for (int64_t t = 0; t < n; ++t) {
        auto v = test::randn_bf16(rng, 576, 0.1, 0.05, 10.0);
        if (rng.integer(0, 3) == 0)  // a tiny tile: the 1e-4 amax floor and the ue8m0/raw difference
          for (int i = 0; i < 128; ++i) v[128 + i] = float_to_bf16(bf16_to_float(v[128 + i]) * 1e-4f);
        std::memcpy(kv.host() + t * 1152, v.data(), 1152);
      }
      std::vector<int32_t> perm(slots);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng.engine());
      for (int64_t t = 0; t < n; ++t) map.host_as<int32_t>()[t] = rng.integer(0, 6) == 0 ? -1 : perm[t];
      kv.upload();
      map.upload();
      cache.poison(0xFF);
      auto make = [&](bool dev) {
        MlaCacheWriteParams p;
        p.kv = kv.view(dev, DType::kBF16, {n, 576});
        p.slot_mapping = map.view(dev, DType::kI32, {n});
        p.cache = cache.view(dev, fp8 ? DType::kU8 : DType::kBF16, {num_blocks, P, tok}, {page, tok, 1});
        p.scale_format = fmt;
        return p;
      };
      require_ok(run(make(true)), "cuda");
      test::sync_ok();
      const auto got = cache.download();
      // The layout oracle, byte by byte; slots not written keep their poison.
      std::vector<uint8_t> expect(cache.bytes(), 0xFF);
      const int64_t esz = fp8 ? 1 : 2;
      for (int64_t t = 0; t < n; ++t) {
        const int32_t s = map.host_as<int32_t>()[t];
        if (s < 0) continue;
        uint8_t* dst = expect.data() + ((s / P) * page + (s % P) * tok) * esz;
        const bf16_t* src = reinterpret_cast<const bf16_t*>(kv.host() + t * 1152);
        if (fp8) oracle_mla_entry(src, fmt, dst);
        else std::memcpy(dst, src, 1152);
      }
      size_t diffs = 0;
      for (size_t i = 0; i < got.size(); ++i) diffs += got[i] != expect[i];
      REQUIRE(diffs == 0);
      // And the CPU reference writes the same bytes.
      require_ok(run(make(false)), "cpu");
      require_same_bytes("cache", cache);
    }
}

namespace {
struct PrepCase {
  IndexerMode mode;
  bool hadamard;
  ScaleFormat fmt;
  bool with_q, with_k, with_cache;
};
}  // namespace

TEST_CASE("gpu indexer_prep: q, weights, k, scales and the paged cache bitwise equal to the reference", "[gpu][idxprep]") {
  test::Rng rng(0xA007);
  const int64_t max_pos = 512;
  for (PrepCase pc : {PrepCase{IndexerMode::kFp8, true, ScaleFormat::kUe8m0, true, true, true},
                      PrepCase{IndexerMode::kFp8, true, ScaleFormat::kRaw, true, true, true},
                      PrepCase{IndexerMode::kFp8, true, ScaleFormat::kUe8m0, false, true, true},
                      PrepCase{IndexerMode::kFp8, true, ScaleFormat::kUe8m0, true, false, false},
                      PrepCase{IndexerMode::kFp8, true, ScaleFormat::kUe8m0, false, true, false},
                      PrepCase{IndexerMode::kExact, true, ScaleFormat::kUe8m0, true, true, false},
                      PrepCase{IndexerMode::kExact, false, ScaleFormat::kUe8m0, true, true, false}})
    for (int64_t H : {64, 3})
      for (int64_t T : {37, 1}) {
        const bool fp8 = pc.mode == IndexerMode::kFp8;
        const int64_t P = 16, num_blocks = 4, page_bytes = 132 * P + 40;
        CAPTURE((int)pc.mode, pc.hadamard, (int)pc.fmt, pc.with_q, pc.with_k, pc.with_cache, H, T);
        const int64_t qs = 136;  // padded head stride of q
        Mirror q(T * H * qs * 2), w(T * H * 4), k(T * 128 * 2), pos(T * 4), cs(max_pos * 32 * 4),
            sn(max_pos * 32 * 4), q_out(T * H * 128 * (fp8 ? 1 : 2)), w_out(T * H * 4),
            k_out(T * 128 * (fp8 ? 1 : 2)), k_scale(T * 4), cache(num_blocks * page_bytes), map(T * 4);
        fill_bf16(q, rng, T * H * qs, 1.0);
        fill_bf16(k, rng, T * 128, 1.0);
        for (int64_t i = 0; i < T * H; ++i) w.host_as<float>()[i] = static_cast<float>(rng.normal());
        for (int64_t t = 0; t < T; ++t) pos.host_as<int32_t>()[t] = static_cast<int32_t>(rng.integer(0, max_pos - 1));
        for (int64_t i = 0; i < max_pos * 32; ++i) {
          const double th = rng.uniform(-50, 50);
          cs.host_as<float>()[i] = static_cast<float>(std::cos(th));
          sn.host_as<float>()[i] = static_cast<float>(std::sin(th));
        }
        std::vector<int32_t> perm(num_blocks * P);
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), rng.engine());
        for (int64_t t = 0; t < T; ++t) map.host_as<int32_t>()[t] = rng.integer(0, 5) == 0 ? -1 : perm[t];
        for (Mirror* m : {&q, &w, &k, &pos, &cs, &sn, &map}) m->upload();
        for (Mirror* m : {&q_out, &w_out, &k_out, &k_scale, &cache}) m->poison(0xFF);
        const DType od = fp8 ? DType::kE4M3 : DType::kBF16;
        auto make = [&](bool dev) {
          IndexerPrepParams p;
          p.positions = pos.view(dev, DType::kI32, {T});
          p.rope_cos = cs.view(dev, DType::kF32, {max_pos, 32});
          p.rope_sin = sn.view(dev, DType::kF32, {max_pos, 32});
          p.mode = pc.mode;
          p.hadamard = pc.hadamard;
          p.scale_format = pc.fmt;
          if (pc.with_q) {
            p.q = q.view(dev, DType::kBF16, {T, H, 128}, {H * qs, qs, 1});
            p.weights = w.view(dev, DType::kF32, {T, H});
            p.q_out = q_out.view(dev, od, {T, H, 128});
            p.weights_out = w_out.view(dev, DType::kF32, {T, H});
          }
          if (pc.with_k) {
            p.k = k.view(dev, DType::kBF16, {T, 128});
            const bool k_out_given = !pc.with_cache || T > 1;  // cache-only for the single-token case
            if (k_out_given) {
              p.k_out = k_out.view(dev, od, {T, 128});
              if (fp8) p.k_scale_out = k_scale.view(dev, DType::kF32, {T});
            }
            if (pc.with_cache) {
              p.k_cache = cache.view(dev, DType::kU8, {num_blocks, page_bytes});
              p.slot_mapping = map.view(dev, DType::kI32, {T});
              p.page_block_size = static_cast<int32_t>(P);
            }
          }
          return p;
        };
        require_ok(run(make(false)), "cpu");
        require_ok(run(make(true)), "cuda");
        test::sync_ok();
        if (pc.with_q) {
          require_same_bytes("q_out", q_out);
          require_same_bytes("weights_out", w_out);
          for (int64_t i = 0; i < T * H; ++i) REQUIRE(std::isfinite(w_out.host_as<float>()[i]));
          if (fp8)
            for (int64_t i = 0; i < T * H * 128; ++i) REQUIRE((q_out.host()[i] & 0x7F) != 0x7F);
        }
        if (pc.with_k) {
          require_same_bytes("k_out", k_out);
          require_same_bytes("k_scale_out", k_scale);
          require_same_bytes("k_cache", cache);
          if (pc.with_cache) {  // every mapped slot was written
            for (int64_t t = 0; t < T; ++t) {
              const int32_t s = map.host_as<int32_t>()[t];
              if (s < 0) continue;
              float sc;
              std::memcpy(&sc, cache.host() + (s / P) * page_bytes + P * 128 + (s % P) * 4, 4);
              REQUIRE(std::isfinite(sc));
            }
          }
        }
        // Rerun: bitwise identical.
        const auto first_q = q_out.download(), first_c = cache.download(), first_k = k_out.download();
        require_ok(run(make(true)), "cuda rerun");
        test::sync_ok();
        REQUIRE(q_out.download() == first_q);
        REQUIRE(cache.download() == first_c);
        REQUIRE(k_out.download() == first_k);
      }
}

TEST_CASE("gpu: an op without a CUDA kernel answers kNotImplemented naming the op", "[gpu][dispatch]") {
  Mirror cs(16 * 32 * 4), sn(16 * 32 * 4);
  cs.poison(0x7F);
  sn.poison(0x7F);
  RopeTableParams p;
  p.cos = cs.view(true, DType::kF32, {16, 32});
  p.sin = sn.view(true, DType::kF32, {16, 32});
  const Status s = run(p);
  INFO(s.message());
  CHECK(s.code() == StatusCode::kNotImplemented);
  CHECK(s.message().find("rope_table") == 0);
  CHECK(s.message().find("CUDA") != std::string::npos);
  CHECK(supports(p).code() == StatusCode::kNotImplemented);
  test::sync_ok();
  for (uint8_t b : cs.download()) REQUIRE(b == 0x7F);  // nothing written
}

TEST_CASE("gpu: mixed host and device pointers are rejected naming both arguments", "[gpu][dispatch]") {
  test::Rng rng(0xA008);
  const int64_t n = 8;
  Mirror x(n * 256), out(n * 256);
  fill_bf16(x, rng, n * 128);
  x.upload();
  out.poison(0xFF);
  HadamardParams p;
  p.x = x.view(true, DType::kBF16, {n, 128});
  p.out = out.view(false, DType::kBF16, {n, 128});
  const Status s = run(p);
  INFO(s.message());
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("hadamard: ") == 0);
  CHECK(s.message().find("out is host memory") != std::string::npos);
  CHECK(s.message().find("x is device memory") != std::string::npos);
  for (uint8_t b : out.host_bytes()) REQUIRE(b == 0xFF);
  // The other way round names them too.
  HadamardParams p2;
  p2.x = x.view(false, DType::kBF16, {n, 128});
  p2.out = out.view(true, DType::kBF16, {n, 128});
  const Status s2 = run(p2);
  CHECK(s2.code() == StatusCode::kInvalidArgument);
  CHECK(s2.message().find("out is device memory") != std::string::npos);
  CHECK(s2.message().find("x is host memory") != std::string::npos);
  for (uint8_t b : out.download()) REQUIRE(b == 0xFF);
}

TEST_CASE("gpu quantize and indexer_prep: captured in a CUDA graph on a user stream, bitwise", "[gpu][graph]") {
  test::Rng rng(0xA009);
  const int64_t T = 20, H = 64, max_pos = 64, P = 64;
  Mirror q(T * H * 256), w(T * H * 4), k(T * 256), pos(T * 4), cs(max_pos * 128), sn(max_pos * 128),
      q_out(T * H * 128), w_out(T * H * 4), cache(132 * P), map(T * 4), codes(T * 128), scales(T * 4);
  fill_bf16(q, rng, T * H * 128, 1.0);
  fill_bf16(k, rng, T * 128, 1.0);
  for (int64_t i = 0; i < T * H; ++i) w.host_as<float>()[i] = static_cast<float>(rng.normal());
  for (int64_t t = 0; t < T; ++t) {
    pos.host_as<int32_t>()[t] = static_cast<int32_t>(rng.integer(0, max_pos - 1));
    map.host_as<int32_t>()[t] = static_cast<int32_t>(t * 3 % P);
  }
  for (int64_t i = 0; i < max_pos * 32; ++i) {
    cs.host_as<float>()[i] = static_cast<float>(std::cos(0.37 * i));
    sn.host_as<float>()[i] = static_cast<float>(std::sin(0.37 * i));
  }
  for (Mirror* m : {&q, &w, &k, &pos, &cs, &sn, &map}) m->upload();
  for (Mirror* m : {&q_out, &w_out, &cache, &codes, &scales}) m->poison(0xFF);
  auto prep = [&](bool dev) {
    IndexerPrepParams p;
    p.q = q.view(dev, DType::kBF16, {T, H, 128});
    p.weights = w.view(dev, DType::kF32, {T, H});
    p.k = k.view(dev, DType::kBF16, {T, 128});
    p.positions = pos.view(dev, DType::kI32, {T});
    p.rope_cos = cs.view(dev, DType::kF32, {max_pos, 32});
    p.rope_sin = sn.view(dev, DType::kF32, {max_pos, 32});
    p.q_out = q_out.view(dev, DType::kE4M3, {T, H, 128});
    p.weights_out = w_out.view(dev, DType::kF32, {T, H});
    p.k_cache = cache.view(dev, DType::kU8, {1, 132 * P});
    p.slot_mapping = map.view(dev, DType::kI32, {T});
    p.page_block_size = static_cast<int32_t>(P);
    return p;
  };
  auto quant = [&](bool dev) {
    QuantizeParams p;
    p.x = k.view(dev, DType::kBF16, {T, 128});
    p.codes = codes.view(dev, DType::kE4M3, {T, 128});
    p.scales = scales.view(dev, DType::kF32, {T, 1});
    return p;
  };
  cudaStream_t stream;
  GPU_REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  GPU_REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const Status s1 = run(prep(true), nullptr, 0, stream);
  const Status s2 = run(quant(true), nullptr, 0, stream);
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  INFO(s1.message() << " / " << s2.message());
  REQUIRE(s1.ok());
  REQUIRE(s2.ok());
  GPU_REQUIRE(end);
  cudaGraphExec_t exec;
  GPU_REQUIRE(cudaGraphInstantiate(&exec, graph, 0));
  GPU_REQUIRE(cudaGraphLaunch(exec, stream));
  GPU_REQUIRE(cudaStreamSynchronize(stream));
  require_ok(run(prep(false)), "cpu prep");
  require_ok(run(quant(false)), "cpu quant");
  require_same_bytes("q_out", q_out);
  require_same_bytes("weights_out", w_out);
  require_same_bytes("k_cache", cache);
  require_same_bytes("codes", codes);
  require_same_bytes("scales", scales);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// Timings (not run by default): `dsa_tests_gpu "[.perf]"`.
TEST_CASE("gpu transform timings", "[.perf]") {
  test::Rng rng(0xA00A);
  const int64_t T = 8192, H = 64, max_pos = 8192;
  Mirror q(T * H * 256), w(T * H * 4), pos(T * 4), cs(max_pos * 128), sn(max_pos * 128), q_out(T * H * 128),
      w_out(T * H * 4), scales(T * H * 4);
  fill_bf16(q, rng, T * H * 128, 1.0);
  for (int64_t t = 0; t < T; ++t) pos.host_as<int32_t>()[t] = static_cast<int32_t>(t);
  for (Mirror* m : {&q, &w, &pos, &cs, &sn}) m->upload();
  IndexerPrepParams p;
  p.q = q.view(true, DType::kBF16, {T, H, 128});
  p.weights = w.view(true, DType::kF32, {T, H});
  p.positions = pos.view(true, DType::kI32, {T});
  p.rope_cos = cs.view(true, DType::kF32, {max_pos, 32});
  p.rope_sin = sn.view(true, DType::kF32, {max_pos, 32});
  p.q_out = q_out.view(true, DType::kE4M3, {T, H, 128});
  p.weights_out = w_out.view(true, DType::kF32, {T, H});
  QuantizeParams qp;
  qp.x = q.view(true, DType::kBF16, {T * H, 128});
  qp.codes = q_out.view(true, DType::kE4M3, {T * H, 128});
  qp.scales = scales.view(true, DType::kF32, {T * H, 1});
  HadamardParams hp;
  hp.x = q.view(true, DType::kBF16, {T * H, 128});
  hp.out = hp.x;
  auto time = [&](const char* what, auto&& call, double bytes) {
    REQUIRE(call().ok());
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    const int iters = 20;
    cudaEventRecord(e0);
    for (int i = 0; i < iters; ++i) REQUIRE(call().ok());
    cudaEventRecord(e1);
    GPU_REQUIRE(cudaEventSynchronize(e1));
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    std::printf("PERF %s: %.3f ms/call, %.0f GB/s\n", what, ms / iters, bytes / (ms / iters * 1e-3) / 1e9);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  };
  const double rows = static_cast<double>(T * H);
  time("indexer_prep q (8192 x 64 heads, FP8)", [&] { return run(p); }, rows * (256 + 128 + 8));
  time("quantize bf16 (524288 x 128)", [&] { return run(qp); }, rows * (256 + 128 + 4));
  time("hadamard in place (524288 x 128)", [&] { return run(hp); }, rows * 512);
}
