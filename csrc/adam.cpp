// SecantAdam's three phases on the CPU (docs/ALGORITHM.md, 'SecantAdam'); the reference is
// secant_ext/reference.py (adam_stats, adam_alpha, adam_update), and every formula below is
// written in its order of operations.
//   adam_stats:  per chunk, <u, y>, <u, s>, |y|^2 and |g|^2 with y = g_plus - s
//   adam_alpha:  the measured step size eta from the averages of a and b, in float64
//   adam_update: Adam's moments and x <- x - eta (d + wd x), the step kept in u if asked, and
//                the averaged iterate (average_cpu's arithmetic) in the same pass if given
//   adam_previous_step: the step u the last update took, recomputed from x, m, v and the state
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <vector>
#include <torch/library.h>

#include "float_lanes.h"
#include "flat_lists.h"
#include "direct_calls.h"
#include "step_size_end.h"

namespace secant_ext {

namespace {

// eta takes this multiple of the measured step to the minimum along d (the largest step a
// quadratic along d is stable under; the averaged iterate takes the middle): layout's
// ADAM_REACH, which the tests compare with the reference.
constexpr double kAdamReach = 2.0;

// One table row of adam_stats. kMeasure: u and g_plus are given (else only |g|^2); kHasG: a
// separate g (else g = s).
template <bool kMeasure, bool kHasG, typename scalar_t, typename opmath_t>
void adam_stats_row(opmath_t* row, const Segment* seg, const Segment* seg_end,
                    const scalar_t* const* up, const scalar_t* const* gpp,
                    const scalar_t* const* sp, const scalar_t* const* gp) {
  using L = Lanes<scalar_t>;
  using fVec = typename L::fVec;
  // One chain of blocks at a time: in a step the inputs come from memory, where each group
  // side by side is one more stream per input, and slower (docs/PERFORMANCE.md, "SecantAdam's
  // memory"). Warm in cache, more groups would hide the adds' latency.
  CascadeSum<scalar_t, layout::NUM_STATS, 1> sums;
  for (; seg != seg_end; ++seg) {
    const int64_t t = seg->tensor;
    const scalar_t* ut = kMeasure ? up[t] : nullptr;
    const scalar_t* gpt = kMeasure ? gpp[t] : nullptr;
    const scalar_t* st = sp[t];
    const scalar_t* gt = kHasG ? gp[t] : nullptr;
    sums.add_blocks(seg->begin, seg->end, [&](int64_t i, int64_t cnt, typename L::Block* acc) {
      typename L::Block uv, gpv, sv, gv;
      L::prefetch(st + i);  // (the gradients come from memory after a closure)
      if constexpr (kMeasure) {
        L::prefetch(ut + i);
        L::prefetch(gpt + i);
      }
      if constexpr (kHasG) L::prefetch(gt + i);
      L::load(st + i, cnt, sv);
      if constexpr (kMeasure) {
        L::load(ut + i, cnt, uv);
        L::load(gpt + i, cnt, gpv);
      }
      if constexpr (kHasG) L::load(gt + i, cnt, gv);
      for (int j = 0; j < L::kVecs; ++j) {
        if constexpr (kMeasure) {
          const fVec y = gpv[j] - sv[j];
          acc[layout::COL_UY][j] = acc[layout::COL_UY][j] + uv[j] * y;
          acc[layout::COL_US][j] = acc[layout::COL_US][j] + uv[j] * sv[j];
          acc[layout::COL_Y_SQ][j] = acc[layout::COL_Y_SQ][j] + y * y;
        }
        const fVec& gj = kHasG ? gv[j] : sv[j];
        acc[layout::COL_G_SQ][j] = acc[layout::COL_G_SQ][j] + gj * gj;
      }
    });
  }
  for (int64_t k = 0; k < layout::NUM_STATS; ++k) row[k] = sums.total(static_cast<int>(k));
}

// Adam's direction d = (m c1) / (sqrt(v c2) + eps) (+ wd x with kDecay): adam_update's and
// adam_previous_step's, in their one order of operations (the reference's _adam_direction).
template <bool kDecay, typename fVec>
inline fVec adam_direction(const fVec& m, const fVec& v, const fVec& x, const fVec& c1,
                           const fVec& c2, const fVec& eps, const fVec& wd) {
  fVec d = (m * c1) / ((v * c2).sqrt() + eps);
  if constexpr (kDecay) d = d + wd * x;
  return d;
}

// x, m, v (u when kRecord, the average when kAverage) over [begin, end) of one tensor.
// kDecay: weight_decay != 0.
template <bool kDecay, bool kRecord, bool kAverage, typename scalar_t, typename opmath_t>
void adam_update_segment(scalar_t* x, const scalar_t* g, scalar_t* m, scalar_t* v, scalar_t* u,
                         scalar_t* avg, int64_t begin, int64_t end, opmath_t b1, opmath_t omb1,
                         opmath_t b2, opmath_t omb2, opmath_t c1, opmath_t c2, opmath_t eps,
                         opmath_t wd, opmath_t step, opmath_t avg_weight) {
  using L = Lanes<scalar_t>;
  using fVec = typename L::fVec;
  const fVec vb1(b1), vomb1(omb1), vb2(b2), vomb2(omb2), vc1(c1), vc2(c2), veps(eps),
      vwd(wd), vstep(step), vw(avg_weight);
  L::blocks(begin, end, [&](int64_t i, int64_t cnt) {
    typename L::Block xv, gv, mv, vv, uv, av;
    L::prefetch(x + i);  // (bound by its division and root, the loop alone runs too few
    L::prefetch(g + i);  // loads ahead to hide memory: docs/PERFORMANCE.md, "SecantAdam's
                         // memory")
    L::prefetch(m + i);
    L::prefetch(v + i);
    L::load(x + i, cnt, xv);
    L::load(g + i, cnt, gv);
    L::load(m + i, cnt, mv);
    L::load(v + i, cnt, vv);
    for (int j = 0; j < L::kVecs; ++j) {
      mv[j] = vb1 * mv[j] + vomb1 * gv[j];
      vv[j] = vb2 * vv[j] + vomb2 * (gv[j] * gv[j]);
      uv[j] = vstep * adam_direction<kDecay>(mv[j], vv[j], xv[j], vc1, vc2, veps, vwd);
      xv[j] = xv[j] - uv[j];
    }
    L::store(x + i, cnt, xv);
    L::store(m + i, cnt, mv);
    L::store(v + i, cnt, vv);
    if constexpr (kRecord) L::store(u + i, cnt, uv);
    if constexpr (kAverage) {  // average_cpu's arithmetic on x as stored (rounded to scalar_t)
      L::load(x + i, cnt, xv);
      L::load(avg + i, cnt, av);
      for (int j = 0; j < L::kVecs; ++j) av[j] = av[j] + vw * (xv[j] - av[j]);
      L::store(avg + i, cnt, av);
    }
  });
}


// u over [begin, end) of one tensor: the last update's step, from what it left (x, m, v).
// kDecay: weight_decay != 0 (then x' = x + u enters through the factor r = 1 / (1 - eta' wd)).
template <bool kDecay, typename scalar_t, typename opmath_t>
void adam_previous_step_segment(const scalar_t* x, const scalar_t* m, const scalar_t* v,
                                scalar_t* u, int64_t begin, int64_t end, opmath_t c1, opmath_t c2,
                                opmath_t eps, opmath_t wd, opmath_t step, opmath_t r) {
  using L = Lanes<scalar_t>;
  using fVec = typename L::fVec;
  const fVec vc1(c1), vc2(c2), veps(eps), vwd(wd), vstep(step), vr(r);
  L::blocks(begin, end, [&](int64_t i, int64_t cnt) {
    typename L::Block xv, mv, vv, uv;
    if constexpr (kDecay) L::load(x + i, cnt, xv);
    L::load(m + i, cnt, mv);
    L::load(v + i, cnt, vv);
    for (int j = 0; j < L::kVecs; ++j) {
      uv[j] = vstep * adam_direction<kDecay>(mv[j], vv[j], xv[j], vc1, vc2, veps, vwd);
      if constexpr (kDecay) uv[j] = uv[j] * vr;
    }
    L::store(u + i, cnt, uv);
  });
}

}  // namespace

at::Tensor adam_stats_cpu(at::TensorList u, at::TensorList g_plus, at::TensorList s,
                          at::TensorList g, const at::Tensor& state) {
  const char* op = "secant_ext::adam_stats";
  check_state(op, state);
  const auto dtype = check_lists(op, {{"s", s, false}, {"u", u, true}, {"g_plus", g_plus, true},
                                      {"g", g, true}});
  TORCH_CHECK(u.empty() == g_plus.empty(), op, ": u and g_plus are given together (a "
              "measuring step) or both empty, got ", u.size(), " and ", g_plus.size(), " tensors");
  const ChunkTable chunks = make_chunks(s);
  const auto table_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor table = at::empty({chunks.num_chunks(), layout::NUM_STATS},
                               state.options().dtype(table_dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "secant_ext::adam_stats", [&] {
    using opmath_t = typename Lanes<scalar_t>::opmath_t;
    const auto up = data_ptrs<scalar_t>(u), gpp = data_ptrs<scalar_t>(g_plus);
    const auto sp = data_ptrs<scalar_t>(s), gp = data_ptrs<scalar_t>(g);
    opmath_t* rows = table.data_ptr<opmath_t>();
    with_flag(!u.empty(), [&](auto kMeasure) {
      with_flag(!g.empty(), [&](auto kHasG) {
        for_each_chunk(chunks, [&](int64_t c, const Segment* seg, const Segment* seg_end) {
          adam_stats_row<decltype(kMeasure)::value, decltype(kHasG)::value, scalar_t>(
              rows + c * layout::NUM_STATS, seg, seg_end, up.data(), gpp.data(), sp.data(),
              gp.data());
        });
      });
    });
  });
  return table;
}

void adam_alpha_cpu(const at::Tensor& stats_in, const at::Tensor& state, double beta1,
                    double beta2, double ema, double growth, bool measure, bool record) {
  const char* op = "secant_ext::adam_alpha";
  check_state(op, state);
  double sums[layout::NUM_STATS];
  stats_column_sums(op, stats_in, sums);
  const double uy = sums[layout::COL_UY], us = sums[layout::COL_US];
  const double y_sq = sums[layout::COL_Y_SQ], g_sq = sums[layout::COL_G_SQ];
  bool finite = true;
  for (double x : sums) finite = finite && std::isfinite(x);

  double* st = state.data_ptr<double>();
  const double scale = st[layout::PREV_STEP_SCALE];
  const bool valid = finite && scale > 0 && measure;
  // per unit step along d: the curvature a, the descent left b, the slope at the previous
  // iterate c; a and c divided by n = |c| + scale |a| before they are averaged
  const double a = uy / (scale * scale), b = us / scale;
  const double c = (uy + us) / scale;
  const double n = (std::abs(uy + us) + std::abs(uy)) / scale;
  const double a_n = n > 0 ? a / n : 0.0, c_n = n > 0 ? c / n : 0.0;
  const double big_a = ema * st[layout::ADAM_A] + (1 - ema) * a_n;
  const double big_c = ema * st[layout::ADAM_C] + (1 - ema) * c_n;
  const bool positive = big_a > 0 && big_c > 0;
  const double prev = st[layout::ALPHA];
  const double grown = growth * prev;
  const double ratio = kAdamReach * big_c / big_a;
  // 2 C / A (capped) with a minimum ahead; grow without one; shrink when the step went uphill
  const double eta = big_c > 0 ? (big_a > 0 ? (ratio < grown ? ratio : grown) : grown)
                               : prev / growth;

  count_step(st, finite, g_sq);
  st[layout::LAST_MEASURED] = valid ? 1.0 : 0.0;
  st[layout::LAST_GUARDED] = valid && !positive ? 1.0 : 0.0;
  st[layout::GUARDED] += valid && !positive ? 1.0 : 0.0;
  st[layout::MEASURED] += valid ? 1.0 : 0.0;
  if (valid) {
    st[layout::ADAM_LAST_A] = a;
    st[layout::ADAM_LAST_B] = b;
    st[layout::Y_SQ] = y_sq;
    st[layout::STALLED] += y_sq == 0 ? 1.0 : 0.0;
    st[layout::ADAM_A] = big_a;
    st[layout::ADAM_C] = big_c;
    st[layout::ALPHA] = eta;
  }
  if (finite) {
    st[layout::BETA1_POWER] *= beta1;
    st[layout::BETA2_POWER] *= beta2;
  }
  const double step = finish_step_size(st, g_sq, st[layout::ALPHA]);
  // The kept previous step: this one when recorded, none after an applied step that is not
  // (x moved away from it); a skipped step leaves x, and so u, as they were.
  if (finite) st[layout::PREV_STEP_SCALE] = record ? step : 0.0;
}

void adam_update_cpu(at::TensorList x, at::TensorList g, at::TensorList m, at::TensorList v,
                     at::TensorList u, at::TensorList avg, const at::Tensor& state, double beta1,
                     double beta2, double eps, double weight_decay) {
  const char* op = "secant_ext::adam_update";
  check_state(op, state);
  const auto dtype = check_lists(op, {{"x", x, false}, {"g", g, false}, {"m", m, false},
                                      {"v", v, false}, {"u", u, true}, {"avg", avg, true}});
  const double* st = state.data_ptr<double>();
  if (st[layout::LAST_SKIPPED] != 0) return;
  const ChunkTable chunks = make_chunks(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "secant_ext::adam_update", [&] {
    using opmath_t = typename Lanes<scalar_t>::opmath_t;
    // Python floats cast to the compute type, (1 - beta) formed in double first, as the
    // reference's tensor-scalar arithmetic does; the float64 state fields cast once.
    const auto b1 = static_cast<opmath_t>(beta1), omb1 = static_cast<opmath_t>(1.0 - beta1);
    const auto b2 = static_cast<opmath_t>(beta2), omb2 = static_cast<opmath_t>(1.0 - beta2);
    // the bias corrections' reciprocals, formed in double (one division per element left)
    const auto c1 = static_cast<opmath_t>(1.0 / (1.0 - st[layout::BETA1_POWER]));
    const auto c2 = static_cast<opmath_t>(1.0 / (1.0 - st[layout::BETA2_POWER]));
    const auto e = static_cast<opmath_t>(eps), wd = static_cast<opmath_t>(weight_decay);
    const auto step = static_cast<opmath_t>(st[layout::STEP_SIZE]);
    const auto avg_weight = static_cast<opmath_t>(st[layout::AVG_WEIGHT]);
    const auto xp = data_ptrs<scalar_t>(x), gp = data_ptrs<scalar_t>(g);
    const auto mp = data_ptrs<scalar_t>(m), vp = data_ptrs<scalar_t>(v);
    const auto up = data_ptrs<scalar_t>(u), ap = data_ptrs<scalar_t>(avg);
    with_flag(weight_decay != 0, [&](auto kDecay) {
      with_flag(!u.empty(), [&](auto kRecord) {
        with_flag(!avg.empty(), [&](auto kAverage) {
          constexpr bool record = decltype(kRecord)::value, average = decltype(kAverage)::value;
          for_each_chunk(chunks, [&](int64_t, const Segment* seg, const Segment* seg_end) {
            for (; seg != seg_end; ++seg) {
              const int64_t t = seg->tensor;
              adam_update_segment<decltype(kDecay)::value, record, average>(
                  xp[t], gp[t], mp[t], vp[t], record ? up[t] : nullptr,
                  average ? ap[t] : nullptr, seg->begin, seg->end, b1, omb1, b2, omb2, c1, c2,
                  e, wd, step, avg_weight);
            }
          });
        });
      });
    });
  });
}

void adam_previous_step_cpu(at::TensorList x, at::TensorList m, at::TensorList v,
                            at::TensorList u, const at::Tensor& state, double eps,
                            double weight_decay) {
  const char* op = "secant_ext::adam_previous_step";
  check_state(op, state);
  const auto dtype = check_lists(op, {{"x", x, false}, {"m", m, false}, {"v", v, false},
                                      {"u", u, false}});
  const double* st = state.data_ptr<double>();
  const ChunkTable chunks = make_chunks(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "secant_ext::adam_previous_step", [&] {
    using opmath_t = typename Lanes<scalar_t>::opmath_t;
    // the state's float64 fields cast once, as adam_update casts them
    const double scale = st[layout::PREV_STEP_SCALE];
    const auto c1 = static_cast<opmath_t>(1.0 / (1.0 - st[layout::BETA1_POWER]));
    const auto c2 = static_cast<opmath_t>(1.0 / (1.0 - st[layout::BETA2_POWER]));
    const auto e = static_cast<opmath_t>(eps), wd = static_cast<opmath_t>(weight_decay);
    const auto step = static_cast<opmath_t>(scale);
    const auto r = static_cast<opmath_t>(1.0 / (1.0 - scale * weight_decay));
    const auto xp = data_ptrs<scalar_t>(x), mp = data_ptrs<scalar_t>(m);
    const auto vp = data_ptrs<scalar_t>(v), up = data_ptrs<scalar_t>(u);
    with_flag(weight_decay != 0, [&](auto kDecay) {
      for_each_chunk(chunks, [&](int64_t, const Segment* seg, const Segment* seg_end) {
        for (; seg != seg_end; ++seg) {
          const int64_t t = seg->tensor;
          adam_previous_step_segment<decltype(kDecay)::value>(
              xp[t], mp[t], vp[t], up[t], seg->begin, seg->end, c1, c2, e, wd, step, r);
        }
      });
    });
  });
}

}  // namespace secant_ext

// The CPU kernels of this file's ops and their direct calls (direct_calls.h); their schemas
// are secant_ext/_op_table.py's, which secant_ext._ops defines before the ops are used.
TORCH_LIBRARY_IMPL(secant_ext, CPU, m) {
  secant_ext::direct_calls::impl<&secant_ext::adam_stats_cpu>(m, "adam_stats");
  secant_ext::direct_calls::impl<&secant_ext::adam_alpha_cpu>(m, "adam_alpha");
  secant_ext::direct_calls::impl<&secant_ext::adam_update_cpu>(m, "adam_update");
  secant_ext::direct_calls::impl<&secant_ext::adam_previous_step_cpu>(m, "adam_previous_step");
}
