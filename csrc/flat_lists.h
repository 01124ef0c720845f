// Validation of the tensor lists an op receives, and the chunk table every kernel walks.
//
// Each op takes parallel lists (x[i], s[i], ... belong to parameter i). The tensors of one
// parameter share sizes and strides and are dense, so each is walked as `numel` contiguous
// elements of storage from its data pointer, and element k of one is element k of the others.
//
// All parameters of a call are laid end to end in one global index space, cut into chunks of
// kChunkNumel elements. A chunk may span several tensors, so it is a run of segments
// (tensor, begin, end). Chunk boundaries depend on the tensor sizes only: every row of the
// stats table is one chunk, and its sums do not depend on which thread ran it.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <vector>

namespace secant_ext {

// 32768 elements: 128 KiB per fp32 stream, so a chunk's few streams stay in L2 while the
// chunk list of a 2^24-element bucket (512 chunks) still splits evenly over the threads.
constexpr int64_t kChunkNumel = int64_t{1} << 15;

// The C++ copy of secant_ext/_layout.py: group-state fields, stats-table columns, rule codes
// and sign modes. Every constant is exported by name from secant_ext._C (kExported below),
// and secant_ext._ops compares them with _layout.py when the extension loads, so a copy that
// drifts fails the import instead of reading the wrong field.
namespace layout {
constexpr int64_t ALPHA = 0, STEP = 1, TAKEN = 2, SKIPPED = 3, CLIPPED = 4, LAST_SKIPPED = 5,
                  LAST_CLIPPED = 6, MOMENTUM_READY = 7, DOT = 8, S_SQ = 9, Y_SQ = 10,
                  G_SQ = 11, STALLED = 12, LR = 13, MAX_GRAD_NORM = 14, STEP_SIZE = 15,
                  ALPHA_EMA = 16, BETA_POWER = 17, MEASURED = 18, LAST_MEASURED = 19,
                  CARRY_BETA = 20, AVG_WEIGHT = 21, AVG_FLOOR = 22,
                  CLIP_G_SQ_OTHERS = 23, ADAM_A = 24, ADAM_C = 25, PREV_STEP_SCALE = 26,
                  BETA1_POWER = 27, BETA2_POWER = 28, STATE_SIZE = 29;
// SecantAdam's names for the slots it shares with the SGD family
constexpr int64_t ADAM_LAST_A = DOT, ADAM_LAST_B = S_SQ, GUARDED = CLIPPED,
                  LAST_GUARDED = LAST_CLIPPED;
constexpr int64_t COL_DOT = 0, COL_S_SQ = 1, COL_Y_SQ = 2, COL_G_SQ = 3, NUM_STATS = 4;
constexpr int64_t COL_UY = COL_DOT, COL_US = COL_S_SQ;  // adam_stats' names
// _layout.RULES["secant"], ["steffensen"], ["bb2"]
constexpr int64_t RULE_SECANT = 0, RULE_STEFFENSEN = 1, RULE_BB2 = 2;
constexpr int64_t SIGN_NONE = 0, SIGN_SCALED = 1, SIGN_UNSCALED = 2;

struct NamedConstant {
  const char* name;
  int64_t value;
};

constexpr NamedConstant kExported[] = {
    {"ALPHA", ALPHA}, {"STEP", STEP}, {"TAKEN", TAKEN}, {"SKIPPED", SKIPPED},
    {"CLIPPED", CLIPPED}, {"LAST_SKIPPED", LAST_SKIPPED}, {"LAST_CLIPPED", LAST_CLIPPED},
    {"MOMENTUM_READY", MOMENTUM_READY}, {"DOT", DOT}, {"S_SQ", S_SQ}, {"Y_SQ", Y_SQ},
    {"G_SQ", G_SQ}, {"STALLED", STALLED}, {"LR", LR}, {"MAX_GRAD_NORM", MAX_GRAD_NORM},
    {"STEP_SIZE", STEP_SIZE}, {"ALPHA_EMA", ALPHA_EMA}, {"BETA_POWER", BETA_POWER},
    {"MEASURED", MEASURED}, {"LAST_MEASURED", LAST_MEASURED}, {"CARRY_BETA", CARRY_BETA},
    {"AVG_WEIGHT", AVG_WEIGHT}, {"AVG_FLOOR", AVG_FLOOR},
    {"CLIP_G_SQ_OTHERS", CLIP_G_SQ_OTHERS}, {"ADAM_A", ADAM_A}, {"ADAM_C", ADAM_C},
    {"PREV_STEP_SCALE", PREV_STEP_SCALE}, {"BETA1_POWER", BETA1_POWER},
    {"BETA2_POWER", BETA2_POWER}, {"STATE_SIZE", STATE_SIZE},
    {"ADAM_LAST_A", ADAM_LAST_A}, {"ADAM_LAST_B", ADAM_LAST_B}, {"GUARDED", GUARDED},
    {"LAST_GUARDED", LAST_GUARDED},
    {"COL_DOT", COL_DOT}, {"COL_S_SQ", COL_S_SQ}, {"COL_Y_SQ", COL_Y_SQ},
    {"COL_G_SQ", COL_G_SQ}, {"NUM_STATS", NUM_STATS}, {"COL_UY", COL_UY}, {"COL_US", COL_US},
    {"RULE_SECANT", RULE_SECANT}, {"RULE_STEFFENSEN", RULE_STEFFENSEN},
    {"RULE_BB2", RULE_BB2},
    {"SIGN_NONE", SIGN_NONE}, {"SIGN_SCALED", SIGN_SCALED}, {"SIGN_UNSCALED", SIGN_UNSCALED},
};
}  // namespace layout

struct NamedList {
  const char* name;
  at::TensorList tensors;
  bool may_be_empty;  // an empty list means "not given" (g, m)
};

// Checks that the given lists can be walked together and returns the common dtype (kFloat
// when every list is empty). `lists[0]` sets the length; lists marked may_be_empty are either
// empty or of that length. Every tensor: on the CPU, one floating dtype (fp32, fp64, bf16,
// fp16), and per parameter the sizes and strides of lists[0]'s tensor, dense.
at::ScalarType check_lists(const char* op, const std::vector<NamedList>& lists);

// Checks the group-state tensor: float64, on the CPU, contiguous, STATE_SIZE elements.
void check_state(const char* op, const at::Tensor& state);

// Checks a sign_mode argument: SIGN_NONE, SIGN_SCALED or SIGN_UNSCALED.
void check_sign_mode(const char* op, int64_t sign_mode);

// Checks a [P, K] stats table (on the CPU, K >= NUM_STATS, float32 or float64) and sums its
// first NUM_STATS columns in float64, rows in order: the same table gives the same bits.
void stats_column_sums(const char* op, const at::Tensor& stats, double (&sums)[layout::NUM_STATS]);

struct Segment {
  int64_t tensor;
  int64_t begin;  // element offsets inside the tensor's storage
  int64_t end;
};

struct ChunkTable {
  std::vector<Segment> segments;   // in global order
  std::vector<int64_t> first;      // chunk c owns segments [first[c], first[c + 1])
  int64_t num_chunks() const { return static_cast<int64_t>(first.size()) - 1; }
};

// At least one chunk, even for no elements (it then owns no segment).
ChunkTable make_chunks(at::TensorList tensors);

// Runs body(chunk, segment_begin, segment_end) for every chunk, in one at::parallel_for.
template <typename F>
void for_each_chunk(const ChunkTable& table, const F& body) {
  const Segment* segs = table.segments.data();
  const int64_t* first = table.first.data();
  at::parallel_for(0, table.num_chunks(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      body(c, segs + first[c], segs + first[c + 1]);
    }
  });
}

template <typename scalar_t>
std::vector<scalar_t*> data_ptrs(at::TensorList tensors) {
  std::vector<scalar_t*> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(static_cast<scalar_t*>(t.data_ptr()));
  return out;
}

}  // namespace secant_ext
