#include "support/metrics.hpp"

#include <cmath>
#include <cstdio>

namespace dsa::test {

double cos_diff(const std::vector<double>& a, const std::vector<double>& r) {
  double ar = 0, aa_rr = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = std::isfinite(a[i]) ? a[i] : 0.0, y = std::isfinite(r[i]) ? r[i] : 0.0;
    ar += x * y;
    aa_rr += x * x + y * y;
  }
  return aa_rr == 0 ? 0.0 : 1.0 - 2.0 * ar / aa_rr;
}

Report compare(const std::string& what, const std::vector<double>& a, const std::vector<double>& r,
               const Tolerance& tol) {
  Report rep;
  rep.what = what;
  rep.count = static_cast<int64_t>(a.size());
  if (a.size() != r.size()) {
    rep.ok = false;
    rep.special_mismatch = 1;
    return rep;
  }
  bool worst_is_special = false;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = a[i], y = r[i];
    if (!std::isfinite(x) || !std::isfinite(y)) {
      const bool same = (std::isnan(x) && std::isnan(y)) ||
                        (std::isinf(x) && std::isinf(y) && (x > 0) == (y > 0));
      if (!same) {
        if (!worst_is_special) rep.worst = static_cast<int64_t>(i), rep.worst_a = x, rep.worst_r = y;
        worst_is_special = true;
        ++rep.special_mismatch;
      }
      continue;
    }
    const double err = std::fabs(x - y), rel = err / (std::fabs(y) + 1e-6);
    if (!worst_is_special && (rep.worst < 0 || err > rep.max_abs))
      rep.worst = static_cast<int64_t>(i), rep.worst_a = x, rep.worst_r = y;
    rep.max_abs = std::fmax(rep.max_abs, err);
    rep.max_rel = std::fmax(rep.max_rel, rel);
    if (!(err < tol.abs_tol || rel < tol.rel_tol)) ++rep.failures;
  }
  // SPEC §9.3 (FlashMLA's compare): cos_diff is 0 by definition when Σr² < 1e-12 — a reference
  // that is zero up to rounding (e.g. a row whose only valid slot gives dZ = 0 exactly) has no
  // direction to compare; the element test above still bounds every value.
  double rr = 0;
  for (double y : r) rr += std::isfinite(y) ? y * y : 0.0;
  rep.cos_diff = rr < 1e-12 ? 0.0 : cos_diff(a, r);
  rep.ok = rep.failures == 0 && rep.special_mismatch == 0 && (tol.cos_tol < 0 || rep.cos_diff <= tol.cos_tol);
  return rep;
}

std::string Report::describe() const {
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "%s: %s — n=%lld failures=%lld special-mismatch=%lld max_abs=%.3e max_rel=%.3e "
                "cos_diff=%.3e worst[%lld]: got %.9g, ref %.9g",
                what.c_str(), ok ? "ok" : "FAIL", (long long)count, (long long)failures,
                (long long)special_mismatch, max_abs, max_rel, cos_diff, (long long)worst, worst_a, worst_r);
  return buf;
}

}  // namespace dsa::test
