// tests/support/random.hpp — fresh random inputs from the run's printed seed (never zeros).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "dsa/numerics.hpp"

namespace dsa::test {

// The Catch2 run seed (printed by the runner; `--rng-seed N` reproduces).
uint32_t run_seed();

// A generator per test: the run seed mixed with a per-test salt.
class Rng {
 public:
  explicit Rng(uint64_t salt = 0) : gen_(static_cast<uint64_t>(run_seed()) * 0x9E3779B97F4A7C15ull ^ salt) {}
  double normal() { return normal_(gen_); }
  double uniform(double lo = 0, double hi = 1) { return std::uniform_real_distribution<double>(lo, hi)(gen_); }
  int64_t integer(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(gen_); }  // [lo, hi]
  std::mt19937_64& engine() { return gen_; }

 private:
  std::mt19937_64 gen_;
  std::normal_distribution<double> normal_{0.0, 1.0};
};

// FlashMLA's prefill recipe (SPEC §9.5): bf16(randn/10) + offset, offset ~ U[−0.05, 0.05].
std::vector<bf16_t> randn_bf16(Rng& rng, size_t n, double scale = 0.1, double offset_range = 0.05,
                               double clamp = 10.0);
std::vector<float> randn_f32(Rng& rng, size_t n, double scale = 1.0);

std::vector<double> to_double(const std::vector<bf16_t>& v);
std::vector<double> to_double(const std::vector<float>& v);

// Poison: 0xFF bytes (NaN in f32/bf16/e4m3fn) for float outputs, 0x7F bytes for index outputs.
template <typename T>
void poison_float(std::vector<T>& v) {
  std::fill(reinterpret_cast<uint8_t*>(v.data()), reinterpret_cast<uint8_t*>(v.data() + v.size()), 0xFF);
}
template <typename T>
void poison_index(std::vector<T>& v) {
  std::fill(reinterpret_cast<uint8_t*>(v.data()), reinterpret_cast<uint8_t*>(v.data() + v.size()), 0x7F);
}

}  // namespace dsa::test
