// tests/support/metrics.hpp — the comparison metrics of SPEC §9.3 (FlashMLA kernelkit / DeepGEMM).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dsa::test {

struct Tolerance {
  double abs_tol = 0;   // element passes if |a − r| < abs_tol ...
  double rel_tol = 0;   // ... or |a − r| / (|r| + 1e-6) < rel_tol
  double cos_tol = -1;  // cos_diff ≤ cos_tol (negative: not checked)
};

// SPEC §9.4 rows.
inline constexpr Tolerance kPrefillOut{8e-4, 3.01 / 128, 7e-6};
inline constexpr Tolerance kPrefillLse{1e-6, 2.01 / 65536, 1e-7};
inline constexpr Tolerance kDecodeOut{1e-3, 2.01 / 128, 5e-6};
inline constexpr Tolerance kDecodeLse{1e-6, 8.01 / 65536, 1e-7};

struct Report {
  bool ok = true;
  int64_t count = 0;
  int64_t failures = 0;          // elements outside both abs and rel tolerance
  int64_t special_mismatch = 0;  // ±inf / NaN position or sign mismatches
  double max_abs = 0, max_rel = 0;
  double cos_diff = 0;
  int64_t worst = -1;            // flat index of the largest abs error
  double worst_a = 0, worst_r = 0;
  std::string what;
  std::string describe() const;  // all metrics, the worst coordinate
};

// a = the implementation under test, r = the reference. Both as doubles, same length.
// FlashMLA semantics (SPEC §9.3): element test, exact special values, and cos_diff (0 when
// Σr² < 1e-12). DeepGEMM's calc_diff is cos_diff() below.
Report compare(const std::string& what, const std::vector<double>& a, const std::vector<double>& r,
               const Tolerance& tol);

// 1 − 2Σar / Σ(a² + r²) in float64, with ±inf/NaN positions zeroed (0 when Σ(a²+r²) == 0).
double cos_diff(const std::vector<double>& a, const std::vector<double>& r);

}  // namespace dsa::test
