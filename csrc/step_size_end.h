// What every step-size phase (secant_alpha, adam_alpha) does around its rule, written once:
// the step counters, and the end (the applied step and the averaged iterate's weight).
// secant_ext/reference.py's _count_step and _finish_step_size are the specification.
#pragma once

#include <cmath>

#include "flat_lists.h"

namespace secant_ext {

// The step, taken or skipped (a non-finite sum), and the training gradient's |g|^2.
inline void count_step(double* st, bool finite, double g_sq) {
  st[layout::STEP] += 1;
  st[layout::TAKEN] += finite ? 1.0 : 0.0;
  st[layout::SKIPPED] += finite ? 0.0 : 1.0;
  st[layout::LAST_SKIPPED] = finite ? 0.0 : 1.0;
  st[layout::G_SQ] = g_sq;
}

// After count_step: the applied step eta * lr * clip into STEP_SIZE (returned), clip being
// torch's clip_grad_norm_ coefficient over the whole model (the other param groups' |g|^2
// added; 0 with one group), eta measured on the unclipped gradients; NaN (a skipped step)
// and inf / inf give clip 1, as clip < 1 is false. Then the averaged iterate's weight for
// this step: 1 / steps taken, floored at AVG_FLOOR.
inline double finish_step_size(double* st, double g_sq, double eta) {
  const double clip_g_sq = g_sq + st[layout::CLIP_G_SQ_OTHERS];
  double clip = st[layout::MAX_GRAD_NORM] / (std::sqrt(clip_g_sq) + 1e-6);
  clip = clip < 1.0 ? clip : 1.0;
  const double step = eta * st[layout::LR] * clip;
  st[layout::STEP_SIZE] = step;
  const double taken = st[layout::TAKEN];
  double weight = taken > 0 ? 1.0 / taken : 1.0;
  weight = weight > st[layout::AVG_FLOOR] ? weight : st[layout::AVG_FLOOR];
  st[layout::AVG_WEIGHT] = weight;
  return step;
}

}  // namespace secant_ext
