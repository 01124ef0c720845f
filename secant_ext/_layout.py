"""Shared layout of the small device tensors the three phases exchange.

Every backend (reference, C++, Triton) reads and writes these tensors the same way;
this file is the one place their layout is written down.

Group state: a float64 tensor of ``STATE_SIZE`` on the parameters' device, one per param
group. float64 so that counters are exact up to 2**53 and alpha keeps full precision.

Stats table: the ``secant_stats`` op returns a ``[P, K]`` table of partial sums
(float64 for float64 buckets, float32 otherwise). Column sums, taken in row order, are the
statistics; ``K = NUM_STATS`` plus one column per tensor for the sign variant.
"""

# --- group state fields -------------------------------------------------------------
# Where a field means something else for SecantAdam, the comment says so ("Adam:").
ALPHA = 0          # current learning rate alpha_t (1.0 before the first step); Adam: eta
STEP = 1           # steps attempted (skipped ones included)
TAKEN = 2          # steps whose update was applied
SKIPPED = 3        # steps skipped for a non-finite statistic
CLIPPED = 4        # steps whose curvature was clipped by the safeguard (Adam: GUARDED)
LAST_SKIPPED = 5   # 1.0 if the latest step was skipped
LAST_CLIPPED = 6   # 1.0 if the latest step's curvature was clipped (Adam: LAST_GUARDED)
MOMENTUM_READY = 7 # 1.0 if the momentum buffer held an average before the latest step
DOT = 8            # a = <s, y> of the latest step (Adam: ADAM_LAST_A)
S_SQ = 9           # b = |s|^2 (Adam: ADAM_LAST_B)
Y_SQ = 10          # c = |y|^2 (Adam too)
G_SQ = 11          # |g|^2 of the training gradient
STALLED = 12       # steps whose lookahead did not move: |s|^2 > 0 but |y|^2 == 0 exactly
                   # (the evaluation never saw x + s; see SecantOptimizer's lookahead option)
# Inputs the optimizer writes before each step (per param group), and what the rule makes
# of them: the step the update applies is STEP_SIZE = alpha * LR * clip, with
# clip = min(1, MAX_GRAD_NORM / (|g| + 1e-6)) (1 when MAX_GRAD_NORM is inf: no clipping).
LR = 13            # the user's multiplier of alpha (param_groups[i]["lr"], 1.0 by default)
MAX_GRAD_NORM = 14 # param_groups[i]["max_grad_norm"], inf when None
STEP_SIZE = 15     # alpha * LR * clip: what the update multiplies the direction by
# The carry of curvature_every=k: steps that do not measure use the bias-corrected EMA of
# the measured alphas, ALPHA_EMA / (1 - BETA_POWER) (BETA_POWER = CARRY_BETA ** MEASURED,
# kept as a running product so every backend rounds it alike).
ALPHA_EMA = 16     # EMA of the measured alphas (weight CARRY_BETA on the old value)
BETA_POWER = 17    # CARRY_BETA ** MEASURED
MEASURED = 18      # steps that measured the curvature (and were not skipped)
LAST_MEASURED = 19 # 1.0 if the latest step measured the curvature
CARRY_BETA = 20    # input: the EMA's weight on its old value (0.9)
# average=True: avg <- avg + w (x - avg) after each applied update, w = max(1 / TAKEN,
# AVG_FLOOR): the plain mean of the iterates, then an EMA over the last ~1/AVG_FLOOR.
AVG_WEIGHT = 21    # w of the latest step (written by secant_alpha)
AVG_FLOOR = 22     # input: the floor of w (0.01)
# max_grad_norm clips by the norm over the whole model, as clip_grad_norm_(model.parameters())
# does, whatever the param groups: the clip's norm is sqrt(G_SQ + CLIP_G_SQ_OTHERS).
CLIP_G_SQ_OTHERS = 23  # input: |g|^2 of the optimizer's other param groups (0 with one)
# SecantAdam (docs/ALGORITHM.md, 'SecantAdam'): ALPHA is the measured step size eta of Adam's
# direction d; a measurement looks back along the previous step u = x_(t-1) - x_t, taken
# with step size PREV_STEP_SCALE, and gives a = <u, y> / scale^2 (the curvature along d),
# c = <u, g_plus> / scale (the slope at the previous iterate); both divided by
# n = |c| + scale |a| before they are averaged; eta follows ADAM_REACH * ADAM_C / ADAM_A.
ADAM_A = 24        # EMA of a / n (weight ADAM_EMA on the old value)
ADAM_C = 25        # EMA of c / n
PREV_STEP_SCALE = 26  # step size of the kept previous step u (0: none kept, no measurement)
BETA1_POWER = 27   # beta1 ** (applied steps): Adam's bias corrections, as running products
BETA2_POWER = 28   # beta2 ** (applied steps)
STATE_SIZE = 29
# SecantAdam's names for the fields it shares with the SGD family (the same slots):
ADAM_LAST_A = DOT           # a = <u, y> / scale^2 of the latest measurement
ADAM_LAST_B = S_SQ          # b = <u, s> / scale
GUARDED = CLIPPED           # measurements whose A, C were not both positive
LAST_GUARDED = LAST_CLIPPED # 1.0 if the latest step was such a measurement

# --- stats table columns -------------------------------------------------------------
COL_DOT = 0        # <s, y> (adam_stats: COL_UY)
COL_S_SQ = 1       # |s|^2 (adam_stats: COL_US)
COL_Y_SQ = 2       # |y|^2
COL_G_SQ = 3       # |g|^2 of the training gradient
NUM_STATS = 4      # column NUM_STATS + i: sum |v_i| of tensor i (sign variant only)
# adam_stats' names for the columns it fills (the same columns):
COL_UY = COL_DOT   # <u, y>
COL_US = COL_S_SQ  # <u, s>

# --- codes passed to the ops ---------------------------------------------------------
RULES = {"secant": 0, "steffensen": 1, "bb2": 2}
SIGN_NONE = 0      # not a sign method: the direction is used as it is
SIGN_SCALED = 1    # alpha * mean(|v|) * sign(v), per tensor
SIGN_UNSCALED = 2  # alpha * sign(v)


# SecantAdam's rule: the averages' weight, the largest growth (and shrink) of eta per
# measurement, eta before the first measurement, and the multiple of the measured step to
# the minimum that eta takes (docs/ALGORITHM.md, 'SecantAdam'). ADAM_REACH is written into
# the kernels' formulas (csrc/adam.cpp, _triton/adam.py); tests check they agree.
ADAM_EMA = 0.9
ADAM_GROWTH = 1.1
ADAM_ETA0 = 1e-5
ADAM_REACH = 2.0
ADAM_AVG_FLOOR = 0.03  # SecantAdam's averaged iterate: about the last 33 iterates

CARRY_BETA_DEFAULT = 0.9
AVG_FLOOR_DEFAULT = 0.01

# The C++ kernels cut a call's elements, end to end, into chunks of this many: one row of
# the stats table each (csrc/flat_lists.h, kChunkNumel; the Triton kernels chunk their own way)
CHUNK_NUMEL = 1 << 15


def initial_state_values():
    """Values of a fresh group state (alpha starts at 1.0, counters at 0)."""
    values = [0.0] * STATE_SIZE
    values[ALPHA] = 1.0
    values[LR] = 1.0
    values[MAX_GRAD_NORM] = float("inf")
    values[STEP_SIZE] = 1.0
    values[BETA_POWER] = 1.0
    values[CARRY_BETA] = CARRY_BETA_DEFAULT
    values[AVG_WEIGHT] = 1.0
    values[AVG_FLOOR] = AVG_FLOOR_DEFAULT
    values[BETA1_POWER] = 1.0
    values[BETA2_POWER] = 1.0
    return values
