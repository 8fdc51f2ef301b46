"""The fused IoU sums and their VJP in TensorFlow ops (the math: ``_iou.py``).

One piece of math (wrapped by ``custom_gradient.FusedIoUSums``), two ways to run it:

* ``xla``: forward and backward are each one ``tf.function(jit_compile=True)`` (inlined
  into a caller's own compiled step): the sums come from one fused pass over ``y_true``,
  ``y_pred`` (and the weight map), the gradient from one elementwise pass; 16-bit
  predictions are widened inside the fusion, never as a whole-tensor copy.
* ``graph``: the same functions without XLA (plain TensorFlow graph ops; its
  casts and temporaries are materialized: the portable fallback).

``xla`` is built once per platform it compiles for (``XLA[platform]``; the backend picks
by the device or strategy the step runs under), as ``_kernels.jax`` does with
``lax.platform_dependent``:

* XLA:CPU (``ROW_PLATFORMS``), and ``graph``: the inputs viewed as (G, n) rows (G =
  batch size with ``per_image``, else 1), summed in levels of 32 (``blocked_row_sums``);
  the multi-class sums on XLA:CPU as on TPU, in stages of ``_iou.CPU_SUM_CHAIN_LIMIT``.
* TPU and GPU: the inputs in their own shape (a TPU array is tiled over its two minor
  axes, so a (G, n) view is a relayout copy), summed over their own axes in stages of at
  most ``_iou.SUM_CHAIN_LIMIT`` numbers planned for the platform (``staged_sum``,
  ``_iou.stages_for``). On GPU
  (``RECOMPUTE_PLATFORMS``) the backward takes its inputs through an optimization
  barrier, so that XLA recomputes p̂ rather than keep the forward's in float32.
"""

import functools
import types

import tensorflow as tf

from wiou_ops import _iou, _multiclass
from wiou_ops._kernels.custom_gradient import FusedIoUSums, multiclass_coefficients

try:  # XLA-only op; keeps XLA from merging the levels of a blocked sum.
    from tensorflow.compiler.tf2xla.python.xla import optimization_barrier
except ImportError:  # pragma: no cover - very old or very new TensorFlow
    optimization_barrier = None


def _barrier_gradient(op, *grads):
    del op
    return grads  # the barrier is an identity


try:
    # tf.function builds a gradient for its body whenever a tape watches the
    # call (even one that custom_gradient then ignores); TensorFlow registers
    # none for this op.
    tf.RegisterGradient("XlaOptimizationBarrier")(_barrier_gradient)
except KeyError:  # already registered by someone else
    pass

_BLOCK, _LEVELS = _iou.SUM_BLOCK, _iou.SUM_LEVELS
# The platforms an ``xla`` kernel is compiled for ("cpu", "gpu", "tpu"): (G, n) rows and
# blocked sums on ``ROW_PLATFORMS``, the native layout and staged sums elsewhere; the
# backward's barrier on ``RECOMPUTE_PLATFORMS`` (``_kernels.jax`` says what each measured).
ROW_PLATFORMS = ("cpu",)
RECOMPUTE_PLATFORMS = ("gpu",)


def _where(condition, x, y):
    # tf.where does not convert a Python scalar to the other branch's dtype.
    return tf.where(condition, x, tf.cast(y, x.dtype))


def _softmax(x, axis=-1):
    return tf.nn.softmax(x, axis=axis)


def _sum(x, axis=None, keepdims=False):
    return tf.reduce_sum(x, axis=axis, keepdims=keepdims)


def _arange(n, dtype):
    return tf.cast(tf.range(n), dtype)  # tf.range has no 8/16-bit integer kernels


def _constant(values, dtype):
    return tf.constant(values, dtype)


# The array namespace ``_iou`` and ``_multiclass`` compute with (their docstrings say
# which names).
TF_OPS = types.SimpleNamespace(clip=tf.clip_by_value, sigmoid=tf.sigmoid, where=_where,
                               log=tf.math.log, exp=tf.exp, abs=tf.abs, softmax=_softmax,
                               cast=tf.cast, sum=_sum, arange=_arange,
                               convert_to_tensor=_constant)


def _plain_sum(x):
    return tf.reduce_sum(x, axis=1)


def blocked_row_sums(x):
    """Row sums (over axis 1) of a (G, n) or (G, n, ...) tensor through ``_LEVELS`` levels
    of ``_BLOCK``-long partial sums.

    XLA:CPU's own float32 reduction is not accurate for every shape (a full
    reduction of a 4-D map was 3.6e-5 off at 4e5 elements), and XLA folds
    nested reductions back into one, so each level's partial sums pass through
    an optimization barrier (``_iou.SUM_BLOCK`` says why blocks of 32). The
    ragged end of each level (fewer than ``_BLOCK`` numbers) is summed on its
    own and added last: padding to whole blocks would make XLA write the
    padded terms out.
    """
    groups = tf.shape(x, out_type=tf.int64)[0]
    block_shape = [groups, -1, _BLOCK]
    if x.shape.rank > 2:  # (G, n, ...): blocks along n, the trailing axes kept
        block_shape = tf.concat([tf.stack([groups, -1, _BLOCK]),
                                 tf.shape(x, out_type=tf.int64)[2:]], axis=0)
    tails = []
    for _ in range(_LEVELS):
        length = tf.shape(x, out_type=tf.int64)[1]
        whole = length - tf.math.floormod(length, _BLOCK)
        tails.append(tf.reduce_sum(x[:, whole:], axis=1))
        x = tf.reduce_sum(tf.reshape(x[:, :whole], block_shape), axis=2)
        if optimization_barrier is not None:
            (x,) = optimization_barrier(x)
    return tf.reduce_sum(x, axis=1) + tf.add_n(tails)


def accumulation_dtype(pred_dtype):
    return tf.as_dtype(_iou.accumulation_dtype(pred_dtype.name))


def _as_groups(x, spec, dtype):
    """x viewed as (G, n) (``_iou.group_shape``) and cast to ``dtype`` (the cast fuses)."""
    # Static dimensions stay Python ints (a constant shape, no shape ops at run time);
    # unknown ones come from tf.shape. int64 either way: an image (or a batch) may hold
    # more than 2^31 elements.
    if x.shape.rank is None:  # compiled kernels relax their input shapes, rank included
        shape = tf.shape(x, out_type=tf.int64)
        dims = [shape[0], tf.reduce_prod(shape[1:])] if spec.per_image else [tf.size(
            x, out_type=tf.int64)]
    else:
        dims = [dim if dim is not None else tf.shape(x, out_type=tf.int64)[axis]
                for axis, dim in enumerate(x.shape.as_list())]
    shape = [tf.constant(dim, tf.int64) if isinstance(dim, int) else dim
             for dim in _iou.group_shape(dims, spec.per_image)]
    return tf.cast(tf.reshape(x, tf.stack(shape)), dtype)


def _grouped(y_true, y_pred, weights, spec):
    """(y, x, m) as (G, n) arrays in the accumulation dtype; m None for m = 1."""
    acc = accumulation_dtype(y_pred.dtype)
    y = _as_groups(y_true, spec, acc)
    weight_map = None if weights is None else _as_groups(weights, spec, acc)
    return y, _as_groups(y_pred, spec, acc), _iou.element_weight(y, weight_map, spec)


def _gradient(y_true, y_pred, weights, coef, spec):
    """``_iou.input_gradient`` per element, in y_pred's dtype and shape."""
    y, x, m = _grouped(y_true, y_pred, weights, spec)
    grad = _iou.input_gradient(tf.cast(coef, x.dtype), y, x, m, spec, TF_OPS)
    return tf.reshape(tf.cast(grad, y_pred.dtype), tf.shape(y_pred, out_type=tf.int64))


def staged_sum(x, axes, platform="tpu"):
    """x summed over ``axes`` in the stages of ``_iou.stages_for(platform, ...)`` (TPU,
    GPU; the multi-class sums on CPU too).

    No stage adds more than ``_iou.SUM_CHAIN_LIMIT`` numbers into one output; the partial
    sums pass through an optimization barrier (XLA folds a reduction of a reduction back
    into one). A split is a free view, so the first stage reads x in its own layout and
    the elementwise terms fuse into it. An axis whose length is unknown when the step is
    traced (a Keras batch axis, say) is summed in a last stage of its own.
    """
    static = x.shape.as_list()
    known = [a for a in axes if static[a] is not None]
    unknown = [a for a in axes if static[a] is None]
    dims = [d if d is not None else tf.shape(x, out_type=tf.int64)[a]
            for a, d in enumerate(static)]
    origin = list(range(len(static)))  # which input axis each current axis is, if whole
    steps = _iou.stages_for(platform, [d or 1 for d in static], known)
    for index, step in enumerate(steps):
        if step[0] == "split":
            dims = list(_iou.stage_shape(dims, step))
            origin[step[1]:step[1] + 1] = [None, None]
            x = tf.reshape(x, dims if all(isinstance(d, int) for d in dims) else tf.stack(
                [tf.constant(d, tf.int64) if isinstance(d, int) else d for d in dims]))
            continue
        x = tf.reduce_sum(x, axis=list(step[1]))
        dims = list(_iou.stage_shape(dims, step))
        origin = [o for a, o in enumerate(origin) if a not in step[1]]
        if (index < len(steps) - 1 or unknown) and optimization_barrier is not None:
            (x,) = optimization_barrier(x)
    if unknown:
        x = tf.reduce_sum(x, axis=[origin.index(a) for a in unknown])
    return x


def _native(y_true, y_pred, weights, spec):
    """(y, x, m) in the inputs' own shape and the accumulation dtype; m None for m = 1."""
    acc = accumulation_dtype(y_pred.dtype)
    y = tf.cast(y_true, acc)
    weight_map = None if weights is None else tf.cast(weights, acc)
    return y, tf.cast(y_pred, acc), _iou.element_weight(y, weight_map, spec)


def _native_sums(y_true, y_pred, weights, spec, platform):
    y, x, m = _native(y_true, y_pred, weights, spec)
    terms = _iou.sums_terms(y, x, m, spec, TF_OPS)
    if spec.weighting == "seed":
        # Σ y tied to y_pred so that XLA:TPU gives it no pass of its own (``_kernels.jax``).
        terms[2] = _where(tf.equal(x, x), terms[2], 0.0)
    axes = _iou.group_axes(x.shape.rank, spec.per_image)
    return tf.stack([tf.reshape(staged_sum(t, axes, platform), [-1]) for t in terms],
                    axis=1)


def _expand_groups(a, ndim):
    """(G, k) per-group values shaped (G, k, 1, ...) to broadcast against an array of
    ``ndim`` axes in its own shape whose first axis is the batch (G = B or 1)."""
    return tf.reshape(a, tf.concat([tf.shape(a), tf.ones([max(ndim - 2, 0)], tf.int32)], 0))


def _inputs_for_backward(inputs, recompute):
    """The backward's inputs (None entries kept), behind an optimization barrier where
    ``recompute``: XLA then recomputes p̂ from them instead of keeping the forward's."""
    if not recompute or optimization_barrier is None:
        return inputs
    present = iter(optimization_barrier(*[t for t in inputs if t is not None]))
    return tuple(None if t is None else next(present) for t in inputs)


def _native_gradient(y_true, y_pred, weights, coef, spec, recompute=False):
    y_true, y_pred, weights = _inputs_for_backward((y_true, y_pred, weights), recompute)
    y, x, m = _native(y_true, y_pred, weights, spec)
    coef = _expand_groups(tf.cast(coef, x.dtype), x.shape.rank)
    grad = _iou.input_gradient(coef, y, x, m, spec, TF_OPS)
    return tf.reshape(tf.cast(grad, y_pred.dtype), tf.shape(y_pred, out_type=tf.int64))


def _compiled(fn, rows):
    # Rows take any shape (reshaped to (G, n) anyway); the staged sums are planned from
    # the static shape, so the native kernels keep it rather than relax it on a retrace.
    return tf.function(fn, jit_compile=True, reduce_retracing=rows)


def _kernels(platform, rows, native, row_platforms=ROW_PLATFORMS):
    """(sums, gradient) kernels for ``platform`` ("cpu", "gpu", "tpu"; None: graph ops).

    ``rows`` and ``native``: (sums, gradient) functions on (G, n) rows and on the inputs'
    own shape (the native sums take ``platform``, the native gradient ``recompute``);
    ``row_platforms`` take the rows.
    The others fall back to the rows for a tensor of unknown rank (no axes to stage over).
    """
    if platform is None:
        return rows
    rows = tuple(_compiled(fn, True) for fn in rows)
    if platform in row_platforms:
        return rows
    native_sums = _compiled(functools.partial(native[0], platform=platform), False)
    native_gradient = _compiled(functools.partial(
        native[1], recompute=platform in RECOMPUTE_PLATFORMS), False)

    def sums(y_true, y_pred, weights, spec):
        kernel = rows[0] if y_pred.shape.rank is None else native_sums
        return kernel(y_true, y_pred, weights, spec)

    def gradient(y_true, y_pred, weights, coef, spec):
        kernel = rows[1] if y_pred.shape.rank is None else native_gradient
        return kernel(y_true, y_pred, weights, coef, spec)

    return sums, gradient


def _implementation(name, sums, gradient, coefficients=None):
    """The ``FusedIoUSums`` of two kernels; the backward re-reads the inputs (nothing
    saved) and recomputes p̂."""
    def forward(y_true, y_pred, weights, spec, for_gradient):
        del for_gradient
        return sums(y_true, y_pred, weights, spec), ()

    def backward(y_true, y_pred, weights, coef, spec, saved):
        del saved
        return gradient(y_true, y_pred, weights, coef, spec)

    return FusedIoUSums(name, forward, backward, coefficients), sums, gradient


def _make(name, platform=None):
    """(implementation, sums kernel, gradient kernel) of the binary loss for ``platform``
    (``_kernels``)."""
    sum_fn = blocked_row_sums if platform is not None else _plain_sum

    def rows_sums(y_true, y_pred, weights, spec):
        y, x, m = _grouped(y_true, y_pred, weights, spec)
        return tf.stack([sum_fn(t) for t in _iou.sums_terms(y, x, m, spec, TF_OPS)], axis=1)

    return _implementation(name, *_kernels(platform, (rows_sums, _gradient),
                                           (_native_sums, _native_gradient)))


def _multiclass_grouped(labels, y_pred, weights, spec):
    """(y, x, s): y and x (G, n, C), s (G, n) or None, in the accumulation dtype
    (``_multiclass`` says what y and s are)."""
    acc = accumulation_dtype(y_pred.dtype)
    if not spec.per_image:
        groups = tf.constant(1, tf.int64)
    elif y_pred.shape.rank is not None and y_pred.shape[0] is not None:
        groups = tf.constant(y_pred.shape[0], tf.int64)
    else:
        groups = tf.shape(y_pred, out_type=tf.int64)[0]
    classes = tf.constant(spec.num_classes, tf.int64)
    pixels = tf.stack([groups, -1])
    x = tf.cast(tf.reshape(y_pred, tf.stack([groups, -1, classes])), acc)
    labels = tf.reshape(labels, pixels if spec.sparse else tf.stack([groups, -1, classes]))
    weight_map = None if weights is None else tf.cast(tf.reshape(weights, pixels), acc)
    return (_multiclass.label_indicator(labels, spec, acc, TF_OPS), x,
            _multiclass.pixel_weight(labels, weight_map, spec, acc, TF_OPS))


def _multiclass_native(labels, y_pred, weights, spec, float_ids=False):
    """(y, x, s) in the inputs' own shape: y and x (..., C), s (...) or None; sparse ids
    compared as float32 where ``float_ids`` (``_multiclass.id_dtype``)."""
    acc = accumulation_dtype(y_pred.dtype)
    weight_map = None if weights is None else tf.cast(weights, acc)
    ids = _id_dtype(labels.dtype, spec, float_ids)
    return (_multiclass.label_indicator(labels, spec, acc, TF_OPS, ids), tf.cast(y_pred, acc),
            _multiclass.pixel_weight(labels, weight_map, spec, acc, TF_OPS, ids))


def _id_dtype(label_dtype, spec, as_float=False):
    """``_multiclass.id_dtype`` of a TensorFlow dtype."""
    bounds = (label_dtype.min, label_dtype.max) if label_dtype.is_integer else None
    return _multiclass.id_dtype(spec, label_dtype.name, bounds, as_float)


def _multiclass_sums(labels, y_pred, weights, spec, row_sums):
    y, x, s = _multiclass_grouped(labels, y_pred, weights, spec)
    p = _multiclass.probabilities(x, spec, TF_OPS)
    # One reduction of the stacked terms: XLA then computes p̂ once per element (three
    # separate reductions each recomputed the softmax).
    return row_sums(tf.stack(_multiclass.sums_terms(y, p, s), axis=-1))


def _multiclass_native_sums(labels, y_pred, weights, spec, platform):
    y, x, s = _multiclass_native(labels, y_pred, weights, spec)
    p = _multiclass.probabilities(x, spec, TF_OPS)
    axes = _iou.group_axes(x.shape.rank, spec.per_image, keep_last=True)
    return tf.stack([tf.reshape(staged_sum(t, axes, platform), [-1, spec.num_classes])
                     for t in _multiclass.sums_terms(y, p, s)], axis=-1)


def _multiclass_gradient(labels, y_pred, weights, coef, spec, native=False, recompute=False):
    labels, y_pred, weights = _inputs_for_backward((labels, y_pred, weights), recompute)
    # XLA:GPU (``recompute``) fuses the ids' comparison only in float32 (``_multiclass.id_dtype``).
    view = (functools.partial(_multiclass_native, float_ids=recompute) if native else
            _multiclass_grouped)
    y, x, s = view(labels, y_pred, weights, spec)
    grad = _multiclass.input_gradient(tf.cast(coef, x.dtype), y, x, s, spec, TF_OPS)
    return tf.reshape(tf.cast(grad, y_pred.dtype), tf.shape(y_pred, out_type=tf.int64))


def _make_multiclass(name, platform=None):
    """The multi-class (implementation, sums kernel, gradient kernel), as ``_make``; the
    native layout on every platform, CPU included (``_iou.stages_for``)."""
    row_sums = blocked_row_sums if platform is not None else _plain_sum

    def rows_sums(labels, y_pred, weights, spec):
        return _multiclass_sums(labels, y_pred, weights, spec, row_sums)

    return _implementation(name, *_kernels(
        platform, (rows_sums, _multiclass_gradient),
        (_multiclass_native_sums, functools.partial(_multiclass_gradient, native=True)),
        row_platforms=()),
        coefficients=multiclass_coefficients)


@tf.function(jit_compile=True, reduce_retracing=True)
def _row_group_sums(x, groups):
    return blocked_row_sums(tf.reshape(x, [groups, -1]))


@tf.function(jit_compile=True)
def _native_group_sums(x, groups):
    axes = list(range(1 if groups > 1 else 0, x.shape.rank))
    return tf.reshape(staged_sum(x, axes, "map"), [groups])


def _group_sums(rows):
    """``group_sums(x, groups)``, compiled (inlined into a caller's XLA computation): x
    summed over every axis but the leading one (every axis for groups = 1), accurate in
    float32, for the full-size maps of Keras's reduction (``_common.reduction.
    plain_group_sums`` says what). ``rows``: ``blocked_row_sums`` of the (groups, n) view
    (CPU); else ``staged_sum`` over x's own axes in the stages of ``_iou.stages_for("map")``
    (TPU and GPU: on TPU the view would be a relayout copy of the map)."""
    def sums(x, groups):
        x = tf.convert_to_tensor(x)
        if rows or x.shape.rank is None:
            return _row_group_sums(x, groups)
        return _native_group_sums(x, groups)
    return sums


# Keras's reduction's accurate sums (``_common.reduction``), per platform as ``XLA``.
GROUP_SUMS = {platform: _group_sums(platform in ROW_PLATFORMS)
              for platform in ("cpu", "gpu", "tpu")}

# One ``xla`` implementation per platform it compiles for; the binary CPU kernels are
# named so that tests can read their optimized HLO.
XLA_CPU, XLA_SUMS, XLA_GRADIENT = _make("xla", "cpu")
XLA = {"cpu": XLA_CPU, "gpu": _make("xla", "gpu")[0], "tpu": _make("xla", "tpu")[0]}
MULTICLASS_XLA = {platform: _make_multiclass("xla", platform)[0]
                  for platform in ("cpu", "gpu", "tpu")}
GRAPH, _, _ = _make("graph")
MULTICLASS_GRAPH, _, _ = _make_multiclass("graph")
