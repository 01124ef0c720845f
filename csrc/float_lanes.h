// Vector loads and stores that hand the kernels opmath values (float for fp32, bf16 and
// fp16, double for fp64), and the update direction shared by secant_stats and update.
//
// A block is Vectorized<scalar_t>::size() elements: one opmath vector for fp32/fp64, two
// float vectors for bf16/fp16. Blocks shorter than that (a segment's tail) go through a
// zero-filled buffer, so they run the same vector code and the padding adds exact zeros to
// every sum.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstring>
#include <type_traits>

namespace secant_ext {

template <typename scalar_t>
struct Lanes {
  using opmath_t = at::opmath_type<scalar_t>;
  using fVec = at::vec::Vectorized<opmath_t>;
  using sVec = at::vec::Vectorized<scalar_t>;
  static constexpr int64_t kWidth = sVec::size();
  static constexpr int kVecs = static_cast<int>(kWidth / fVec::size());
  using Block = fVec[kVecs];

  static void load(const scalar_t* p, int64_t count, Block& out) {
    if (count == kWidth) {
      load_full(p, out);
    } else {
      scalar_t buf[kWidth];
      std::memset(static_cast<void*>(buf), 0, sizeof(buf));
      std::memcpy(static_cast<void*>(buf), p, count * sizeof(scalar_t));
      load_full(buf, out);
    }
  }

  static void store(scalar_t* p, int64_t count, const Block& in) {
    if (count == kWidth) {
      store_full(p, in);
    } else {
      scalar_t buf[kWidth];
      store_full(buf, in);
      std::memcpy(static_cast<void*>(p), buf, count * sizeof(scalar_t));
    }
  }

  // body(offset, count) for consecutive blocks of [begin, end); only the last may be short.
  template <typename F>
  static void blocks(int64_t begin, int64_t end, const F& body) {
    int64_t i = begin;
    for (; i + kWidth <= end; i += kWidth) body(i, kWidth);
    if (i < end) body(i, end - i);
  }

  // A hint that the block `ahead` elements past p will be read soon. Streams read right
  // after a training closure come from far caches; with the sums' arithmetic in the loop
  // the out-of-order window alone does not reach far enough ahead to hide that.
  static void prefetch(const scalar_t* p) { __builtin_prefetch(p + kAhead, 0, 3); }
  static constexpr int64_t kAhead = 2048 / sizeof(scalar_t);

  // Lane sum in a fixed order.
  static opmath_t hsum(const Block& acc) {
    opmath_t total = 0;
    for (int j = 0; j < kVecs; ++j) {
      opmath_t lanes[fVec::size()];
      acc[j].store(lanes);
      for (int k = 0; k < fVec::size(); ++k) total += lanes[k];
    }
    return total;
  }

  // torch.sign: -1, 0 or 1, and NaN stays NaN.
  static fVec sign(const fVec& d) {
    const fVec zero(0);
    return fVec::blendv(d.gt(zero) - d.lt(zero), d, d != d);
  }

 private:
  static void load_full(const scalar_t* p, Block& out) {
    if constexpr (kVecs == 1) {
      out[0] = fVec::loadu(p);
    } else {
      auto [lo, hi] = at::vec::convert_to_float<scalar_t>(sVec::loadu(p));
      out[0] = lo;
      out[1] = hi;
    }
  }

  static void store_full(scalar_t* p, const Block& in) {
    if constexpr (kVecs == 1) {
      in[0].store(p);
    } else {
      at::vec::convert_from_float<scalar_t>(in[0], in[1]).store(p);
    }
  }
};

// Sums of blocks in a fixed three-level cascade: each level adds at most 16 runs of the
// level below, so a lane's running sum takes ~16 additions per level instead of one per
// block of the chunk. Measured on bf16 input: a plain running sum over 1023 elements erred
// 3.5 times more than torch.sum (which cascades too); this keeps the error at torch's
// level for the cost of a counter. Deterministic: the levels fold at fixed block counts.
template <typename scalar_t, int kSums, int kGroups = 1>
struct CascadeSum {
  using L = Lanes<scalar_t>;
  using fVec = typename L::fVec;
  static constexpr int kFold = 16;
  typename L::Block level[3][kSums];
  int64_t blocks = 0;

  CascadeSum() {
    for (auto& lv : level)
      for (auto& sum : lv)
        for (auto& v : sum) v = fVec(0);
  }

  // The accumulators the caller adds the next block's values to; call done() after.
  typename L::Block* front() { return level[0]; }

  void done() {
    if (++blocks % kFold != 0) return;
    fold(0);
    if (blocks % (kFold * kFold) == 0) fold(1);
  }

  // The blocks of [begin, end) added in order, exactly as one block after another through
  // front() and done() would be; add(offset, count, acc) adds one block (only the last may
  // be short) into the accumulators acc[kSums]. A lone chain of adds waits on one vector
  // add's latency per block, so runs of kGroups whole groups of kFold blocks go into
  // kGroups sets of accumulators side by side: each group's sum starts from zero, as level
  // 0 does after a fold, and the groups are folded in their order, so every sum keeps its
  // bits. The groups are kFold blocks apart, so each input is read as kGroups streams: in
  // a step, where the inputs come from memory, one stream per input was faster for every
  // size measured (docs/PERFORMANCE.md, 'SecantAdam's memory'), so one group is the
  // default; a microbenchmark on warm data favours two (an MNIST MLP's 269,322 elements
  // in half the time).
  template <typename F>
  void add_blocks(int64_t begin, int64_t end, const F& add) {
    constexpr int64_t kWidth = L::kWidth;
    constexpr int64_t kRun = kGroups * kFold * kWidth;
    int64_t i = begin;
    for (; i + kWidth <= end && blocks % kFold != 0; i += kWidth) {
      add(i, kWidth, level[0]);
      done();
    }
    for (; i + kRun <= end; i += kRun) {  // (blocks % kFold == 0)
      typename L::Block group[kGroups][kSums];
      for (int q = 0; q < kGroups; ++q) {
        for (int k = 0; k < kSums; ++k) {
          for (int j = 0; j < L::kVecs; ++j) group[q][k][j] = fVec(0);
        }
      }
      for (int b = 0; b < kFold; ++b) {
        for (int q = 0; q < kGroups; ++q) add(i + (q * kFold + b) * kWidth, kWidth, group[q]);
      }
      for (int q = 0; q < kGroups; ++q) fold_group(group[q]);
    }
    for (; i + kWidth <= end; i += kWidth) {
      add(i, kWidth, level[0]);
      done();
    }
    if (i < end) {
      add(i, end - i, level[0]);
      done();
    }
  }

  typename L::opmath_t total(int k) const {
    typename L::Block sum;
    for (int j = 0; j < L::kVecs; ++j) sum[j] = (level[2][k][j] + level[1][k][j]) + level[0][k][j];
    return L::hsum(sum);
  }

 private:
  // done() for a whole group of kFold blocks summed in `group` (level 0 is zero).
  void fold_group(const typename L::Block* group) {
    for (int k = 0; k < kSums; ++k) {
      for (int j = 0; j < L::kVecs; ++j) level[1][k][j] = level[1][k][j] + group[k][j];
    }
    blocks += kFold;
    if (blocks % (kFold * kFold) == 0) fold(1);
  }

  void fold(int lv) {
    for (int k = 0; k < kSums; ++k) {
      for (int j = 0; j < L::kVecs; ++j) {
        level[lv + 1][k][j] = level[lv + 1][k][j] + level[lv][k][j];
        level[lv][k][j] = fVec(0);
      }
    }
  }
};

// The hyperparameters of the update direction, as the reference applies them: Python floats
// cast to the compute type, (1 - momentum) formed in double first.
template <typename opmath_t>
struct Direction {
  bool has_momentum;  // a momentum list was given
  bool ready;         // the buffer holds an average (otherwise it restarts as g)
  bool nesterov;
  bool has_decay;
  opmath_t momentum, one_minus_momentum, weight_decay;

  Direction(bool has_m, bool ready_, bool nesterov_, double mu, double wd)
      : has_momentum(has_m), ready(ready_), nesterov(nesterov_), has_decay(wd != 0),
        momentum(static_cast<opmath_t>(mu)),
        one_minus_momentum(static_cast<opmath_t>(1.0 - mu)),
        weight_decay(static_cast<opmath_t>(wd)) {}

  // Whether apply() reads m and x.
  bool reads_momentum() const { return has_momentum && ready; }
  bool reads_params() const { return has_decay; }

  // d and the new momentum m_new (meaningful only with has_momentum), from g, x and m.
  template <typename V>
  void apply(const V& g, const V& x, const V& m, V& d, V& m_new) const {
    apply_as(has_decay, has_momentum, ready, nesterov, g, x, m, d, m_new);
  }

  // apply() with the variant given by the caller: with compile-time constants the branches
  // fold away after inlining, which is what update's specialized inner loop relies on.
  template <typename V>
  [[gnu::always_inline]] inline void apply_as(bool decay, bool with_momentum, bool is_ready,
                                              bool use_nesterov, V g, const V& x, const V& m,
                                              V& d, V& m_new) const {
    if (decay) g = g + V(weight_decay) * x;
    if (!with_momentum) {
      d = g;
      return;
    }
    m_new = is_ready ? V(momentum) * m + V(one_minus_momentum) * g : g;
    d = use_nesterov ? V(momentum) * m_new + V(one_minus_momentum) * g : m_new;
  }
};

// Which terms of the direction (and, for update, the step) a call has, fixed at compile
// time. With these as runtime flags the bf16 update loop ran at half the speed of
// torch.optim.SGD(fused=True): the compiler kept the branches and reloaded the
// hyperparameters after every (may-alias) vector store. secant_stats and update both use it.
template <bool kDecay, bool kMomentum, bool kReady, bool kNesterov, bool kSign>
struct Variant {
  static constexpr bool decay = kDecay, momentum = kMomentum, ready = kReady,
                        nesterov = kNesterov, sign = kSign;
};

// f(std::true_type{}) or f(std::false_type{}): a runtime flag turned into a compile-time one.
template <typename F>
void with_flag(bool flag, const F& f) {
  if (flag) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

}  // namespace secant_ext
