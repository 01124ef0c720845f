// The [P, K] table of partial sums of one bucket: per chunk, <s,y>, |s|^2, |y|^2, |g|^2 and,
// for the sign variant, sum |v_i| of each tensor's update direction (y = g_plus - s).
// secant_alpha sums the rows in order, in float64.
#include <ATen/Dispatch.h>

#include <algorithm>
#include <vector>
#include <torch/library.h>

#include "float_lanes.h"
#include "flat_lists.h"
#include "direct_calls.h"

namespace secant_ext {

namespace {

// One table row: the sums of chunk segments [seg, seg_end). kHasG: a separate g was given
// (else g = s); V: the sign variant's direction terms (V::sign false: no sign columns). As
// runtime flags these branches stayed inside the vector loop. Pointers and dir are passed by
// value so the locals stay in registers.
template <bool kHasG, typename V, typename scalar_t, typename opmath_t>
void stats_row(opmath_t* row, int64_t K, const Segment* seg, const Segment* seg_end,
               const scalar_t* const* sp, const scalar_t* const* gpp, const scalar_t* const* gp,
               const scalar_t* const* xp, const scalar_t* const* mp,
               const Direction<opmath_t> dir) {
  using L = Lanes<scalar_t>;
  using fVec = typename L::fVec;
  constexpr bool kReadsX = V::sign && V::decay;
  constexpr bool kReadsM = V::sign && V::momentum && V::ready;
  std::fill(row, row + K, opmath_t(0));
  // dot, |s|^2, |y|^2, |g|^2 of the chunk, in one chain of blocks: in a step its inputs
  // come from memory, where two chains side by side (two streams per input) were slower
  // (docs/PERFORMANCE.md, "SecantAdam's memory", the statistics' chains)
  CascadeSum<scalar_t, layout::NUM_STATS, 1> sums;
  for (; seg != seg_end; ++seg) {
    const int64_t t = seg->tensor;
    const scalar_t* st = sp[t];
    const scalar_t* gpt = gpp[t];
    const scalar_t* gt = kHasG ? gp[t] : nullptr;
    const scalar_t* xt = kReadsX ? xp[t] : nullptr;
    const scalar_t* mt = kReadsM ? mp[t] : nullptr;
    // the block at i into acc: <s,y>, |s|^2, |y|^2, |g|^2
    auto add = [&](int64_t i, int64_t cnt, typename L::Block* acc) {
      typename L::Block sv, gpv, gv;
      L::prefetch(st + i);
      L::prefetch(gpt + i);
      if constexpr (kHasG) L::prefetch(gt + i);
      L::load(st + i, cnt, sv);
      L::load(gpt + i, cnt, gpv);
      if constexpr (kHasG) L::load(gt + i, cnt, gv);
      for (int j = 0; j < L::kVecs; ++j) {
        const fVec y = gpv[j] - sv[j];
        acc[layout::COL_DOT][j] = acc[layout::COL_DOT][j] + sv[j] * y;
        acc[layout::COL_S_SQ][j] = acc[layout::COL_S_SQ][j] + sv[j] * sv[j];
        acc[layout::COL_Y_SQ][j] = acc[layout::COL_Y_SQ][j] + y * y;
        if constexpr (kHasG) acc[layout::COL_G_SQ][j] = acc[layout::COL_G_SQ][j] + gv[j] * gv[j];
      }
    };
    if constexpr (!V::sign) {
      sums.add_blocks(seg->begin, seg->end, add);
    } else {  // the same sums block by block, beside sum |v| of the direction
      CascadeSum<scalar_t, 1> abs_sum;  // sum |v| of this tensor's part of the chunk
      L::blocks(seg->begin, seg->end, [&](int64_t i, int64_t cnt) {
        add(i, cnt, sums.front());
        sums.done();
        typename L::Block sv, gv, xv, mv;
        L::load(st + i, cnt, sv);
        if constexpr (kHasG) L::load(gt + i, cnt, gv);
        if constexpr (kReadsX) L::load(xt + i, cnt, xv);
        if constexpr (kReadsM) L::load(mt + i, cnt, mv);
        auto* abs_acc = abs_sum.front();
        for (int j = 0; j < L::kVecs; ++j) {
          fVec d, m_new;
          dir.apply_as(V::decay, V::momentum, V::ready, V::nesterov, kHasG ? gv[j] : sv[j],
                       xv[j], mv[j], d, m_new);
          abs_acc[0][j] = abs_acc[0][j] + d.abs();
        }
        abs_sum.done();
      });
      row[layout::NUM_STATS + t] = abs_sum.total(0);
    }
  }
  row[layout::COL_DOT] = sums.total(layout::COL_DOT);
  row[layout::COL_S_SQ] = sums.total(layout::COL_S_SQ);
  row[layout::COL_Y_SQ] = sums.total(layout::COL_Y_SQ);
  // Without a separate g, g = s: the same sum, in the same order.
  row[layout::COL_G_SQ] = kHasG ? sums.total(layout::COL_G_SQ) : row[layout::COL_S_SQ];
}

// f(std::integral_constant<bool, has_g>, Variant<...>{}). Without sign the direction is not
// formed, so one variant serves; with it, ready and nesterov only matter with momentum: 11
// instantiations per dtype instead of 64.
template <typename F>
void dispatch_stats(bool has_g, bool sign, bool decay, bool momentum, bool ready, bool nesterov,
                    const F& f) {
  with_flag(has_g, [&](auto kHasG) {
    if (!sign) return f(kHasG, Variant<false, false, false, false, false>{});
    with_flag(decay, [&](auto kDecay) {
      if (!momentum) return f(kHasG, Variant<kDecay.value, false, false, false, true>{});
      with_flag(ready, [&](auto kReady) {
        with_flag(nesterov, [&](auto kNesterov) {
          f(kHasG, Variant<kDecay.value, true, kReady.value, kNesterov.value, true>{});
        });
      });
    });
  });
}

}  // namespace

at::Tensor secant_stats_cpu(at::TensorList s, at::TensorList g_plus, at::TensorList g,
                            at::TensorList x, at::TensorList m, const at::Tensor& state,
                            double momentum, bool nesterov, double weight_decay,
                            int64_t sign_mode) {
  const char* op = "secant_ext::secant_stats";
  check_state(op, state);
  check_sign_mode(op, sign_mode);
  // Only the scaled sign step reads sum |v| per tensor; the other modes need no extra columns.
  const bool sign = sign_mode == layout::SIGN_SCALED;
  const auto dtype = check_lists(op, {{"s", s, false}, {"g_plus", g_plus, false},
                                      {"g", g, true}, {"x", x, true}, {"m", m, true}});
  TORCH_CHECK(!sign || weight_decay == 0 || !x.empty(), op,
              ": the sign variant with weight_decay=", weight_decay,
              " needs the parameters x to form its direction, got an empty x");
  const int64_t n = static_cast<int64_t>(s.size());
  const int64_t K = layout::NUM_STATS + (sign ? n : 0);
  const ChunkTable chunks = make_chunks(s);
  const auto table_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor table = at::empty({chunks.num_chunks(), K}, state.options().dtype(table_dtype));
  const bool ready = state.data_ptr<double>()[layout::TAKEN] >= 1;
  const bool has_g = !g.empty();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "secant_ext::secant_stats", [&] {
    using opmath_t = typename Lanes<scalar_t>::opmath_t;
    const Direction<opmath_t> dir(!m.empty(), ready, nesterov, momentum, weight_decay);
    const std::vector<scalar_t*> sp = data_ptrs<scalar_t>(s), gpp = data_ptrs<scalar_t>(g_plus);
    const std::vector<scalar_t*> gp = data_ptrs<scalar_t>(g), xp = data_ptrs<scalar_t>(x);
    const std::vector<scalar_t*> mp = data_ptrs<scalar_t>(m);
    opmath_t* rows = table.data_ptr<opmath_t>();

    dispatch_stats(has_g, sign, dir.has_decay, dir.has_momentum, ready, nesterov,
                   [&](auto kHasG, auto variant) {
      for_each_chunk(chunks, [&](int64_t c, const Segment* seg, const Segment* seg_end) {
        stats_row<decltype(kHasG)::value, decltype(variant), scalar_t>(
            rows + c * K, K, seg, seg_end, sp.data(), gpp.data(), gp.data(), xp.data(),
            mp.data(), dir);
      });
    });
  });
  return table;
}

}  // namespace secant_ext

// The CPU kernels of this file's ops and their direct calls (direct_calls.h); their schemas
// are secant_ext/_op_table.py's, which secant_ext._ops defines before the ops are used.
TORCH_LIBRARY_IMPL(secant_ext, CPU, m) {
  secant_ext::direct_calls::impl<&secant_ext::secant_stats_cpu>(m, "secant_stats");
}
