"""The math, written once: per-group IoU sums, their VJP, the loss from the sums.

Plain Python, imported by every layer above it and importing nothing of the
package. Array math goes through the caller's operators and a small array
namespace ``xp`` with the ``keras.ops`` names ``clip``, ``sigmoid``, ``where``,
``log``, ``exp`` and ``abs`` (``keras.ops`` itself, or the TensorFlow and JAX ones in
``_kernels``), so the TensorFlow, JAX and ``keras.ops`` kernels run these very functions; the C++
loops in ``kernels/`` implement the same ``SumsSpec`` (and are tested against it).

Notation, for one group (the whole batch, or one image with ``per_image``)::

    p̂ = clip(p, ε, 1-ε)            probabilities      q̂ = 1 - p̂
    p̂ = sigmoid(z), q̂ = sigmoid(-z)   from_logits (no clip; q̂ not rounded via 1 - p̂)
    m  = s · (w_b·(1 - y) + w_f·y)     pixel weighting (s: weight map, default 1)
    m  = s                             class weighting
    m  = 1                             seed weighting (its weights act in the reduction)

The sums, one row per group (``TERMS``)::

    seed:  I = Σ y·p̂,   U = Σ (y + p̂ - y·p̂),   Sy = Σ y
    pixel: I = Σ m·y·p̂, U = Σ m·(y + p̂ - y·p̂)
    class: I = Σ m·y·p̂, U = Σ m·(y + p̂ - y·p̂),
           I_b = Σ m·(1 - y)·q̂,  U_b = Σ m·((1 - y) + y·q̂)        (IoU of the background)

Every term t has ∂t/∂p̂ = m·(α·y + β·(1 - y)) with constants (α, β) per term
(``PROJECTION``). The VJP of the sums is therefore one elementwise pass::

    (a, b)_g = d_sums_g · PROJECTION                    (per group, two scalars)
    ∂/∂p_i  = m_i · (a·y_i + b·(1 - y_i)) · dp̂_i
    dp̂_i    = 1[ε ≤ p_i ≤ 1-ε]  (TensorFlow's clip rule, ties pass)   or   p̂_i·q̂_i (logits)

and everything after the sums (logs, class mixing, Keras's reduction) is a
handful of scalar ops that autodiff differentiates exactly.
"""

import dataclasses

# Blocked float32 sums under XLA (``_kernels.xla.blocked_row_sums``, ``_kernels.jax.row_sums``): each level
# adds SUM_BLOCK numbers in sequence into one partial sum, so the rounding error stays
# ~1e-7 at any size; after SUM_LEVELS levels 2^31 elements leave 2048 partial sums.
# Why 32: XLA:CPU fuses the elementwise terms into a reduction of at most 32 numbers,
# but rewrites a longer one into a reduce-window that writes the terms out first (three
# float32 copies of the input in the forward: 24 GiB at 2^31 elements).
SUM_BLOCK = 32
SUM_LEVELS = 4

# Staged sums on TPU and GPU (``reduction_stages``): no stage adds more than SUM_CHAIN_LIMIT
# numbers into one output, whatever the input's size, and no stage reshapes or copies the
# input (a TPU array is tiled in (8, 128) blocks of its two minor axes, so viewing it as
# (G, -1, 32) is a relayout copy, padded to 128 lanes).
SUM_CHAIN_LIMIT = 2**16
# The multi-class sums on XLA:CPU take the staged sums too, in stages of at most 2^10: on
# logits (B, H, W, C) they ran 1.7-2.9x faster there than the (G, n, C) rows' blocks of 32
# (whose reduction over a non-minor axis XLA:CPU loops over badly), as accurate (~1e-7 of
# float64 at 2^21 pixels per class), where stages of 2^16 were slower and less accurate.
CPU_SUM_CHAIN_LIMIT = 2**10
# On GPU each stage sums a run of adjacent axes (``contiguous_stages``) of at most the
# length XLA:GPU reduces in one kernel: its race-free bounds, 512 threads x 16 for a row
# reduction (the minor axis summed) and 32 x 128 for a column one (the minor axis kept).
# XLA:GPU splits a longer one itself (into about sqrt(n) x sqrt(n), writing the partials
# out), and a stage over non-adjacent axes it runs as two (the first writing one partial
# sum per kept row): 1.001-1.008x the naive formula's bytes on H100 with the stages of
# ``reduction_stages``, 1.000 with these; their chains are the naive formula's own.
GPU_ROW_STAGE_LIMIT = 8192
GPU_COLUMN_STAGE_LIMIT = 4096

# Rows: the terms of each weighting, in the order of the sums' columns.
TERMS = {
    "seed": ("y*p", "y+p-y*p", "y"),
    "pixel": ("y*p", "y+p-y*p"),
    "class": ("y*p", "y+p-y*p", "(1-y)*q", "(1-y)+y*q"),
}

# ∂term/∂p̂ = m·(α·y + β·(1 - y)): (α, β) per term.
_TERM_PROJECTION = {
    "y*p": (1.0, 0.0),
    "y+p-y*p": (0.0, 1.0),
    "y": (0.0, 0.0),
    "(1-y)*q": (0.0, -1.0),
    "(1-y)+y*q": (-1.0, 0.0),
}
PROJECTION = {mode: tuple(_TERM_PROJECTION[t] for t in terms) for mode, terms in TERMS.items()}


@dataclasses.dataclass(frozen=True)
class SumsSpec:
    """Static description of one fused sums computation (hashable: it keys traces)."""

    weighting: str = "seed"
    from_logits: bool = False
    per_image: bool = False
    epsilon: float = 1e-7
    weight_background: float = 1.0
    weight_foreground: float = 1.0

    @property
    def num_terms(self):
        return len(TERMS[self.weighting])

    @property
    def pixel_weights(self):
        """(c0, c1) with the per-pixel class weight w = c0 + c1·y (pixel mode), else (1, 0)."""
        if self.weighting == "pixel":
            return self.weight_background, self.weight_foreground - self.weight_background
        return 1.0, 0.0

    @classmethod
    def from_options(cls, options):
        return cls(
            weighting=options["weighting"],
            from_logits=options["from_logits"],
            per_image=options["per_image"],
            epsilon=options["epsilon"],
            weight_background=options["weight_background"],
            weight_foreground=options["weight_foreground"],
        )


def group_losses(sums, spec, log, log_fn):
    """Loss per group, shape (G,), from the sums (G, K); autodiff differentiates it.

    ``log_fn``: the backend's elementwise log (``keras.ops.log``, ``jnp.log``).

    ``L(I, U) = -log((I + ε)/(U + ε))`` (``log=True``) or ``1 - (I + ε)/(U + ε)``;
    class weighting mixes ``(w_f·L(I, U) + w_b·L(I_b, U_b)) / (w_f + w_b)``.
    """
    eps = spec.epsilon  # a Python float: weakly typed, it keeps the sums' dtype

    def one(inter, union):
        ratio = (inter + eps) / (union + eps)
        return -log_fn(ratio) if log else 1.0 - ratio

    foreground = one(sums[:, 0], sums[:, 1])
    if spec.weighting != "class":
        return foreground
    background = one(sums[:, 2], sums[:, 3])
    w_b, w_f = spec.weight_background, spec.weight_foreground
    return (w_f * foreground + w_b * background) / (w_f + w_b)



def seed_group_weight(sum_y, group_size, weight_background, weight_foreground):
    """Σ_i (w_b·(1 - y_i) + w_f·y_i) over one group, from its ``Sy`` and element count.

    Seed weighting without sample weights or masks: the loss map ``L_g·w_i`` reduces
    to ``Σ_g L_g · seed_group_weight(Sy_g, n_g)`` (over the element count for a mean),
    so the map is never built.
    """
    return weight_background * (group_size - sum_y) + weight_foreground * sum_y


def group_shape(dims, per_image):
    """(G, n): how a tensor with dimensions ``dims`` is viewed as groups of elements.

    G = the batch size with ``per_image`` (one IoU per image), else 1 (one IoU for
    the batch). ``dims``: Python ints or integer scalars (int64 under TensorFlow: a
    group may hold more than 2^31 elements); the product is exact.
    """
    n = 1
    for dim in (dims[1:] if per_image else dims):
        n = n * dim
    return (dims[0] if per_image else 1), n


def group_axes(ndim, per_image, keep_last=False):
    """The axes one group's sum runs over in an array's own shape: all, or all but the
    batch axis (``per_image``); ``keep_last`` keeps the class axis too."""
    return tuple(range(1 if per_image else 0, ndim - (1 if keep_last else 0)))


def accumulation_dtype(pred_dtype_name):
    """float32 for 16/32-bit predictions (never a 16-bit sum), float64 for float64."""
    return "float64" if pred_dtype_name == "float64" else "float32"


# The elementwise math, written with arithmetic operators and ``xp`` only, so that every
# kernel shares it (arrays of shape (G, n) in the accumulation dtype; m None means 1).

def probabilities(x, spec, xp):
    """(p̂, q̂): ``clip(x, ε, 1-ε)`` and ``1 - p̂``, or ``sigmoid(±x)`` for logits.

    The clip's bounds are ε and 1-ε rounded to x's dtype, as the seed's
    ``tf.clip_by_value(p, ε, 1-ε)`` rounds them. q̂ is None where nothing reads it
    (probabilities without class weighting): eager backends would compute it anyway.
    """
    if spec.from_logits:
        return xp.sigmoid(x), xp.sigmoid(-x)
    p = xp.clip(x, spec.epsilon, 1.0 - spec.epsilon)
    return p, (1.0 - p if spec.weighting == "class" else None)


def sums_terms(y, x, m, spec, xp):
    """The per-element terms of ``TERMS[spec.weighting]`` from labels y and inputs x."""
    p, q = probabilities(x, spec, xp)
    return terms(y, p, q, m, spec)


def input_gradient(coef, y, x, m, spec, xp):
    """The VJP of the sums w.r.t. the inputs: ``m·(a·y + b·(1 - y))·dp̂/dx`` per element.

    ``dp̂/dx`` is ``1[ε ≤ x ≤ 1-ε]`` (``clip_passes``) or ``p̂·q̂`` for logits.
    """
    factor = vjp_factor(coef, y, m)
    if not spec.from_logits:
        return xp.where(clip_passes(x, spec), factor, 0.0)
    if spec.weighting == "class":
        # The forward computes σ(x) and σ(-x) both; XLA:TPU keeps them for the backward
        # whatever its form, and reading them costs less than recomputing from x.
        return factor * (xp.sigmoid(x) * xp.sigmoid(-x))
    return factor * sigmoid_slope(x, xp)


def sigmoid_slope(x, xp):
    """dσ/dx = σ(x)·σ(-x) = e/(1 + e)² with e = exp(-|x|): no overflow at any x.

    Written apart from σ itself on purpose: XLA:TPU, finding the forward's σ(x) again in
    the backward, wrote it out in float32 and read it back (1.17x the naive formula's bytes
    with float32 logits on v6e, v5p and v4) rather than recompute it.
    """
    e = xp.exp(-xp.abs(x))
    return e / ((1.0 + e) * (1.0 + e))

def element_weight(y, weight_map, spec):
    """m: the weight map (grouped like y, or None) times pixel mode's class weight."""
    m = weight_map
    if spec.weighting == "pixel":
        c0, c1 = spec.pixel_weights
        class_weight = c0 + c1 * y
        m = class_weight if m is None else m * class_weight
    return m


def terms(y, p, q, m, spec):
    """The per-element terms of ``TERMS[spec.weighting]``, in order (seed ignores m)."""
    yp = y * p
    if spec.weighting == "seed":
        return [yp, y + p - yp, y]
    out = [yp, y + p - yp]
    if spec.weighting == "class":
        out += [(1.0 - y) * q, (1.0 - y) + y * q]
    return out if m is None else [m * t for t in out]


def vjp_factor(coef, y, m):
    """``m·(a·y + b·(1 - y))`` with ``(a, b) = coef[g]``: the VJP before the ``dp̂`` factor."""
    factor = coef[:, 0:1] * y + coef[:, 1:2] * (1.0 - y)
    return factor if m is None else m * factor


# The JAX backward's residual with hard labels (``_kernels.jax._label_codes``): one byte per
# element that holds all the gradient needs when there is no weight map or logits.
CODE_CLIPPED, CODE_BACKGROUND, CODE_FOREGROUND, CODE_SOFT = 0, 1, 2, 3


def clip_passes(x, spec):
    """dp̂/dp of the clip as a boolean: ε ≤ p ≤ 1-ε, ties included (TensorFlow's rule)."""
    return (x >= spec.epsilon) & (x <= 1.0 - spec.epsilon)


def label_codes(y, x, spec, where):
    """``CODE_CLIPPED`` where the clip zeroes the gradient, else ``CODE_BACKGROUND`` for
    y = 0, ``CODE_FOREGROUND`` for y = 1 and ``CODE_SOFT`` for any other label (whose
    gradient needs y and p). ``where``: the backend's elementwise select."""
    label = where(y == 0, CODE_BACKGROUND, where(y == 1, CODE_FOREGROUND, CODE_SOFT))
    return where(clip_passes(x, spec), label, CODE_CLIPPED)


def reduction_stages(shape, axes, limit=SUM_CHAIN_LIMIT):
    """How to sum an array of static ``shape`` over ``axes`` so that no output adds more
    than ``limit`` numbers in one stage: a list of steps, each ``("sum", axes)`` (sum over
    those axes of the current array) or ``("split", axis, k)`` (view that axis of n as
    (n/k, k)); ``stage_shape`` gives the shape after each.

    Each sum stage takes the set of remaining axes with the largest product <= ``limit``
    (ranks are small: every subset is tried; size-1 axes go along). Where that leaves room,
    the outermost other axis is split so that the stage reaches ``limit`` (splitting an
    outer axis is free on TPU, whose tiles cover the two minor axes only). The first stage,
    the one that reads the input, so reduces all it may and leaves few partial sums. An axis
    longer than ``limit`` with no divisor in [2, limit] is summed whole. ``chain_bound``
    gives the longest chain the stages allow.
    """
    shape = tuple(shape)
    axes = sorted({a % len(shape) for a in axes}) if shape else []
    steps = []
    while axes:
        best, best_size = (), 1
        for mask in range(1, 1 << len(axes)):
            subset = tuple(a for i, a in enumerate(axes) if mask >> i & 1)
            size = _product(shape[a] for a in subset)
            # Ties go to more axes, then to inner ones, so that a split falls on an outer axis.
            if size <= limit and (size, len(subset), sum(subset)) > (
                    best_size, len(best), sum(best)):
                best, best_size = subset, size
        for axis in axes:  # outermost first
            if axis in best:
                continue
            k = max((d for d in range(2, limit // best_size + 1) if shape[axis] % d == 0),
                    default=1)
            if k > 1:
                steps.append(("split", axis, k))
                shape = stage_shape(shape, steps[-1])
                axes = sorted([a + (a > axis) for a in axes] + [axis + 1])
                best = tuple(sorted([a + (a > axis) for a in best] + [axis + 1]))
                break
        if not best:  # a length > limit with no divisor in [2, limit]: summed whole
            best = (axes[0],)
        steps.append(("sum", best))
        shape = stage_shape(shape, steps[-1])
        axes = [a - sum(b < a for b in best) for a in axes if a not in best]
    return steps


def contiguous_stages(shape, axes, limit):
    """The steps of ``reduction_stages`` (same form) where each sum stage takes a run of
    adjacent axes ending at the innermost remaining summed axis: as many as fit in
    ``limit``, the next outer one split so that the run reaches it (an axis longer than
    ``limit`` is split itself, its inner part summed first; one with no divisor in
    [2, limit] is summed whole). Each stage is then a plain row or column reduction for
    XLA:GPU (``GPU_ROW_STAGE_LIMIT``)."""
    shape = tuple(shape)
    axes = sorted({a % len(shape) for a in axes}) if shape else []
    steps = []

    def split(axis, k):  # view ``axis`` as (n/k, k); returns nothing, updates the plan
        nonlocal shape, axes
        steps.append(("split", axis, k))
        shape = stage_shape(shape, steps[-1])
        axes = sorted([a + (a > axis) for a in axes] + [axis + 1])

    while axes:
        inner = axes[-1]
        k = _largest_divisor(shape[inner], limit)
        if shape[inner] > limit and k > 1:
            split(inner, k)
            inner += 1
        run, size = [inner], shape[inner]
        while run[0] - 1 in axes:
            outer = run[0] - 1
            if size * shape[outer] <= limit:
                run.insert(0, outer)
                size *= shape[outer]
                continue
            k = _largest_divisor(shape[outer], limit // size)
            if k > 1:
                split(outer, k)
                run = [outer + 1] + [a + 1 for a in run]
            elif size == 1:  # only size-1 axes so far: summed with the whole outer axis
                run.insert(0, outer)
            break
        steps.append(("sum", tuple(run)))
        shape = stage_shape(shape, steps[-1])
        axes = [a - sum(b < a for b in run) for a in axes if a not in run]
    return steps


def stages_for(platform, shape, axes):
    """The staged-sum plan on ``platform`` ("tpu", "gpu" or "cpu"): ``contiguous_stages``
    within XLA:GPU's one-kernel lengths on GPU, else ``reduction_stages`` (stages of
    ``CPU_SUM_CHAIN_LIMIT`` on CPU, ``SUM_CHAIN_LIMIT`` on TPU). "map": the plan of
    Keras's reduction's full-size maps on TPU and GPU, ``contiguous_stages`` of at most
    ``CPU_SUM_CHAIN_LIMIT``: a map's sum is the loss itself (no ratio of two sums to
    cancel errors), and XLA:CPU, where the tests run these programs, sums a stage
    nearly in sequence (2.8e-6 off float64 for 477 numbers over non-adjacent axes)."""
    if platform == "map":
        return contiguous_stages(shape, axes, CPU_SUM_CHAIN_LIMIT)
    if platform == "gpu":
        row = bool(shape) and (len(shape) - 1) in {a % len(shape) for a in axes}
        return contiguous_stages(shape, axes,
                                 GPU_ROW_STAGE_LIMIT if row else GPU_COLUMN_STAGE_LIMIT)
    return reduction_stages(shape, axes,
                            CPU_SUM_CHAIN_LIMIT if platform == "cpu" else SUM_CHAIN_LIMIT)


def _largest_divisor(n, limit):
    """The largest divisor of n in [2, limit], or 1."""
    return max((d for d in range(2, min(limit, n) + 1) if n % d == 0), default=1)


def _product(sizes):
    # Not math.prod: this module imports nothing beyond dataclasses (tests/test_layers.py).
    total = 1
    for size in sizes:
        total *= size
    return total


def stage_shape(shape, step):
    """The shape after one step of ``reduction_stages``."""
    if step[0] == "split":
        _, axis, k = step
        return (*shape[:axis], shape[axis] // k, k, *shape[axis + 1:])
    return tuple(n for a, n in enumerate(shape) if a not in step[1])


def chain_bound(shape, steps):
    """The most numbers any one stage of ``steps`` (``reduction_stages``) adds into one
    output: an upper bound on the longest float32 addition chain, whatever order the
    compiler's reduction emitter adds them in."""
    longest = 1
    for step in steps:
        if step[0] == "sum":
            longest = max(longest, _product(shape[a] for a in step[1]))
        shape = stage_shape(shape, step)
    return longest
