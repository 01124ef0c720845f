// The rule's division: sum the stats table (float64, row order), turn a = <s,y>, b = |s|^2,
// c = |y|^2 into alpha, and update the group state in place. Scalar code, as the reference:
//   secant      alpha = b / (a + b)   safeguard: a clipped at 0 (counted), alpha in (0, 1]
//   steffensen  alpha = b / a         safeguard: a <= 0 keeps the previous alpha (counted)
//   bb2         alpha = a / (c + b)   safeguard: a <= 0 keeps the previous alpha (counted)
// b == 0 keeps the previous alpha; a non-finite sum skips the step. A lookahead gradient equal
// to the probe gradient to the last bit (b > 0, c == 0) is counted in STALLED: the evaluation
// never saw x + s.

#include <ATen/ATen.h>

#include <cmath>
#include <torch/library.h>

#include "flat_lists.h"
#include "direct_calls.h"
#include "step_size_end.h"

namespace secant_ext {


void secant_alpha_cpu(const at::Tensor& stats_in, const at::Tensor& state, int64_t rule,
                      bool safeguard, bool measure) {
  const char* op = "secant_ext::secant_alpha";
  check_state(op, state);
  TORCH_CHECK(rule == layout::RULE_SECANT || rule == layout::RULE_STEFFENSEN ||
                  rule == layout::RULE_BB2,
              op, ": unknown rule code ", rule, " (", layout::RULE_SECANT, " secant, ",
              layout::RULE_STEFFENSEN, " steffensen, ", layout::RULE_BB2, " bb2)");
  double sums[layout::NUM_STATS];
  stats_column_sums(op, stats_in, sums);

  double a = sums[layout::COL_DOT];
  const double b = sums[layout::COL_S_SQ], c = sums[layout::COL_Y_SQ];
  bool finite = true;
  for (double v : sums) finite = finite && std::isfinite(v);

  bool clipped = false;
  double alpha;
  if (rule == layout::RULE_SECANT) {
    if (safeguard) {
      clipped = a < 0;
      if (clipped) a = 0;  // a NaN stays NaN (and skips the step), as clamp(min=0) does
    }
    alpha = b / (a + b);
  } else if (rule == layout::RULE_STEFFENSEN) {
    clipped = safeguard && a <= 0;
    alpha = b / a;
  } else {
    clipped = safeguard && a <= 0;
    alpha = a / (c + b);
  }
  double* st = state.data_ptr<double>();
  const double prev = st[layout::ALPHA];
  if (b == 0 || (clipped && rule != layout::RULE_SECANT)) alpha = prev;
  clipped = clipped && finite && b != 0 && measure;

  st[layout::MOMENTUM_READY] = st[layout::TAKEN] >= 1 ? 1.0 : 0.0;  // before TAKEN moves
  count_step(st, finite, sums[layout::COL_G_SQ]);
  st[layout::LAST_CLIPPED] = clipped ? 1.0 : 0.0;
  st[layout::LAST_MEASURED] = measure ? 1.0 : 0.0;
  double step;  // the alpha the update applies, before lr and clipping
  if (measure) {
    st[layout::ALPHA] = finite ? alpha : prev;
    st[layout::CLIPPED] += clipped ? 1.0 : 0.0;
    st[layout::DOT] = sums[layout::COL_DOT];
    st[layout::S_SQ] = sums[layout::COL_S_SQ];
    st[layout::Y_SQ] = sums[layout::COL_Y_SQ];
    st[layout::STALLED] += (b > 0 && c == 0) ? 1.0 : 0.0;
    if (finite) {  // the carry for the steps that do not measure
      const double beta = st[layout::CARRY_BETA];
      st[layout::ALPHA_EMA] = beta * st[layout::ALPHA_EMA] + (1.0 - beta) * st[layout::ALPHA];
      st[layout::BETA_POWER] *= beta;
      st[layout::MEASURED] += 1.0;
    }
    step = st[layout::ALPHA];
  } else {  // a step without a lookahead: the bias-corrected EMA of the measured alphas
    step = st[layout::MEASURED] > 0 ? st[layout::ALPHA_EMA] / (1.0 - st[layout::BETA_POWER])
                                    : st[layout::ALPHA];
  }
  finish_step_size(st, sums[layout::COL_G_SQ], step);
}

}  // namespace secant_ext

// The CPU kernels of this file's ops and their direct calls (direct_calls.h); their schemas
// are secant_ext/_op_table.py's, which secant_ext._ops defines before the ops are used.
TORCH_LIBRARY_IMPL(secant_ext, CPU, m) {
  secant_ext::direct_calls::impl<&secant_ext::secant_alpha_cpu>(m, "secant_alpha");
}
