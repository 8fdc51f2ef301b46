"""The fused IoU sums in JAX: ``jax.custom_vjp``, blocked float32 accumulation, shard-aware.

Imports JAX, NumPy and ``_iou`` (no TensorFlow, no Keras), so GPU/TPU machines with
JAX alone can use and benchmark it. The same sums and VJP as the TensorFlow kernels
(``_iou.py`` states them)::

    sums_g = Σ_{i in group g} terms(y_i, p̂_i, m_i)        one fused pass
    ∂/∂p_i = m_i·(a_g·y_i + b_g·(1 - y_i))·dp̂_i           one elementwise pass

Every function here is written once per layout, and ``lax.platform_dependent`` picks
the layout for the platform the program is lowered for (never the host's default
backend, so a program exported or compiled ahead of time for TPU from a CPU host gets
the TPU code):

* XLA:CPU (``cpu``): inputs viewed as (G, n) rows and summed in levels of 32
  (``blocked_row_sums``; a row-major reshape is free there).
* TPU and GPU (``default``): inputs kept in their own shape and layout (a TPU array is
  tiled over its two minor axes, so a (G, n) view is a relayout copy), summed over their
  own axes in stages of at most ``_iou.SUM_CHAIN_LIMIT`` numbers (``staged_sum``), each
  stage planned for its compiler (``_iou.stages_for``).

The backward reads y and p again; with hard labels and no weight map or logits,
``backward="label_codes"`` has the forward write a 1-byte code per element for the
backward to read instead (``_label_codes``; ``CODE_PLATFORMS`` says where "auto" does).

With ``axis_name`` the sums are ``psum``-ed over that named axis
(``shard_map``/``pmap``), so every shard sees the global IoU and its gradient
equals the unsharded one for its slice. Per-image sums need no all-reduce;
only the batch mean's count does.
"""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wiou_ops import _iou, _multiclass

def _cast(x, dtype):
    return jnp.asarray(x).astype(dtype)


# The array namespace ``_iou`` and ``_multiclass`` compute with (their docstrings say
# which names).
JAX_OPS = types.SimpleNamespace(clip=jnp.clip, sigmoid=jax.nn.sigmoid, where=jnp.where,
                                log=jnp.log, exp=jnp.exp, abs=jnp.abs, softmax=jax.nn.softmax,
                                cast=_cast, sum=jnp.sum, arange=jnp.arange,
                                convert_to_tensor=jnp.asarray)
BACKWARDS = ("auto", "label_codes", "inputs")

_BLOCK, _LEVELS = _iou.SUM_BLOCK, _iou.SUM_LEVELS
# The platforms (``lax.platform_dependent`` names) that take the (G, n) rows and blocked
# sums; every other one takes the native layout and staged sums.
ROW_PLATFORMS = ("cpu",)
# Where backward="auto" runs from label codes: none. On XLA:CPU the codes cost loops of
# their own, which re-read y and p (the jax-cpu report times both backwards). Compiled for
# TPU and H100 (benchmarks/results/aot/), neither compiler writes them from the sums' own
# pass: XLA:TPU gave the codes a pass over y and p of their own, XLA:GPU the any-soft-label
# flag; either costs more bytes than the backward from y and p.
CODE_PLATFORMS = ()
# Where the backward recomputes p̂ from inputs behind an optimization barrier. Without it
# XLA:GPU finds the forward's sigmoid or softmax in the same program, writes it out in
# float32 and reads it back (pixel weighting from bfloat16 logits: 2.0x the naive
# formula's bytes and 128 MiB of temp per H100; softmax with one-hot labels up to 1.28x).
# Not on TPU, where sharing the softmax's max and Σe per pixel saves passes.
RECOMPUTE_PLATFORMS = ("cuda", "rocm")
# Where the staged sums take XLA:GPU's plan (``_iou.stages_for``). The sparse-id
# comparison of the multi-class backward follows RECOMPUTE_PLATFORMS (float32 ids there:
# ``_multiclass.id_dtype``).
GPU_STAGE_PLATFORMS = ("cuda", "rocm")
_PLATFORMS = ("cpu", "tpu", "cuda", "rocm")


def on_platform(args, branch):
    """``branch(platform)(*args)`` for the platform the program is lowered for, chosen at
    lowering (``lax.platform_dependent``): the compiler only ever sees one branch.
    ``branch(None)`` serves any other platform; platforms given the same function share it."""
    return lax.platform_dependent(*args, **{p: branch(p) for p in _PLATFORMS},
                                  default=branch(None))


def by_layout(rows, native):
    """The ``branch`` of ``on_platform`` that runs ``rows`` on ``ROW_PLATFORMS`` and
    ``native`` elsewhere, given the ``staged_sum`` plan's platform as ``stages=``."""
    return lambda platform: rows if platform in ROW_PLATFORMS else functools.partial(
        native, stages=stage_platform(platform))


def stage_platform(platform):
    """The ``_iou.stages_for`` platform of a ``lax.platform_dependent`` one: "gpu" on
    ``GPU_STAGE_PLATFORMS``, else "tpu" (the plan for any other compiler too)."""
    return "gpu" if platform in GPU_STAGE_PLATFORMS else "tpu"


def _accumulation_dtype(pred_dtype):
    return jnp.dtype(_iou.accumulation_dtype(jnp.dtype(pred_dtype).name))


def group_sums(x, groups):
    """(groups,): x summed over every axis but the leading one (over every axis for
    groups = 1), accurate in float32: ``blocked_row_sums`` of its (groups, n) view on
    XLA:CPU, ``staged_sum`` over its own axes elsewhere (on TPU that view would be a
    relayout copy of a full-size map). For the full-size maps of Keras's reduction."""
    axes = tuple(range(1 if groups > 1 else 0, x.ndim))

    def rows(v):
        return blocked_row_sums(v.reshape(groups, -1))

    def native(v, stages):
        del stages  # one plan for TPU and GPU (``_iou.stages_for("map")``)
        return staged_sum(v, axes, "map").reshape(groups)

    return on_platform((x,), by_layout(rows, native))


def blocked_row_sums(x):
    """Row sums (over axis 1) in levels of ``_BLOCK`` partial sums (XLA:CPU).

    XLA:CPU's own float32 reduction is not accurate for every shape (a full
    reduction of a 4-D map was 3.6e-5 off at 4e5 elements), and XLA folds
    nested reductions back into one, so each level passes through an
    optimization barrier. Blocks of ``_BLOCK`` (see ``_iou.SUM_BLOCK``) keep the
    terms fused into the first level on CPU.
    """
    tails = 0.0  # each level's ragged end, summed apart (padding would copy the input)
    for _ in range(_LEVELS):
        length = x.shape[1]
        if length <= _BLOCK:
            break
        whole = length - length % _BLOCK
        if whole < length:
            tails = tails + x[:, whole:].sum(axis=1)
            x = x[:, :whole]
        x = lax.optimization_barrier(
            x.reshape(x.shape[0], -1, _BLOCK, *x.shape[2:]).sum(axis=2))
    return x.sum(axis=1) + tails


def staged_sum(x, axes, stages="tpu"):
    """x summed over ``axes`` in the stages of ``_iou.stages_for(stages, ...)`` (TPU, GPU).

    No stage adds more than ``_iou.SUM_CHAIN_LIMIT`` numbers into one output; the
    partial sums pass through an optimization barrier, since XLA folds a reduction of a
    reduction back into one. The first stage reads the input in its own layout (a split
    is a free view) and the elementwise terms fuse into it.
    """
    steps = _iou.stages_for(stages, x.shape, axes)
    for index, step in enumerate(steps):
        if step[0] == "split":
            x = x.reshape(_iou.stage_shape(x.shape, step))
            continue
        x = x.sum(axis=step[1])
        if index < len(steps) - 1:
            x = lax.optimization_barrier(x)
    return x


def _as_groups(x, spec, dtype):
    """x viewed as (G, n) (``_iou.group_shape``) and cast to ``dtype``."""
    return x.reshape(_iou.group_shape(x.shape, spec.per_image)).astype(dtype)


def _grouped(y_true, y_pred, weights, spec):
    """(y, x, m) as (G, n) arrays in the accumulation dtype; m None for m = 1."""
    acc = _accumulation_dtype(y_pred.dtype)
    y = _as_groups(y_true, spec, acc)
    weight_map = None if weights is None else _as_groups(weights, spec, acc)
    return y, _as_groups(y_pred, spec, acc), _iou.element_weight(y, weight_map, spec)


def _local_sums(y_true, y_pred, weights, spec):
    """The (G, K) sums of this shard: rows on XLA:CPU, the native layout elsewhere."""
    return on_platform((y_true, y_pred, weights),
                       by_layout(functools.partial(_row_local_sums, spec=spec),
                                 functools.partial(_native_local_sums, spec=spec)))


def _row_local_sums(y_true, y_pred, weights, spec):
    y, x, m = _grouped(y_true, y_pred, weights, spec)
    return jnp.stack([blocked_row_sums(t) for t in _iou.sums_terms(y, x, m, spec, JAX_OPS)],
                     axis=1)


def _native(y_true, y_pred, weights, spec):
    """(y, x, m) in the inputs' own shape and the accumulation dtype; m None for m = 1."""
    acc = _accumulation_dtype(y_pred.dtype)
    y = y_true.astype(acc)
    weight_map = None if weights is None else weights.astype(acc)
    return y, y_pred.astype(acc), _iou.element_weight(y, weight_map, spec)


def _native_local_sums(y_true, y_pred, weights, spec, stages):
    y, x, m = _native(y_true, y_pred, weights, spec)
    terms = _iou.sums_terms(y, x, m, spec, JAX_OPS)
    if spec.weighting == "seed":
        # Σ y reads y alone, and XLA:TPU then gives it a pass over y of its own (1.2x the
        # naive formula's bytes with float32 labels). Counting y where the prediction is
        # a number ties it to y_pred, so the three sums share one pass; a NaN prediction
        # makes I and U, hence the loss, NaN in either case.
        terms[2] = jnp.where(x == x, terms[2], 0.0)
    axes = _iou.group_axes(y.ndim, spec.per_image)
    return jnp.stack([staged_sum(t, axes, stages).reshape(-1) for t in terms], axis=1)


def _global_sums(sums, spec, axis_name):
    """All-reduced over ``axis_name`` unless per image (each image's sums are whole)."""
    if axis_name is not None and not spec.per_image:
        sums = lax.psum(sums, axis_name)
    return sums


def _zero_cotangent(x):
    if x is None:
        return None
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def iou_sums(y_true, y_pred, weights, spec, axis_name=None, backward="auto",
             codes_forward=None):
    """The (G, K) sums of ``spec`` (``_iou.SumsSpec``); hand-written VJP w.r.t. y_pred.

    ``weights``: a weight map of y's shape, or None. Labels and weights get a zero
    cotangent (they are data). ``backward``: "auto" (from label codes on
    ``CODE_PLATFORMS``, else from y and p), "label_codes" or "inputs"; the codes apply
    only without logits and weight map. ``codes_forward``: a function ``(y, x, spec) -> (sums, codes,
    any soft label)`` on grouped inputs that computes the forward and the codes in one
    kernel (``wiou_ops.experimental.pallas``; it returns None where it does not apply),
    or None for XLA's fusion.
    """
    return _global_sums(_local_sums(y_true, y_pred, weights, spec), spec, axis_name)


def code_platforms(spec, weights, backward="auto"):
    """The platforms (``lax.platform_dependent`` names) whose backward runs from 1-byte
    label codes instead of y and p."""
    if backward not in BACKWARDS:
        raise ValueError(f"backward={backward!r}; expected one of {BACKWARDS}.")
    if spec.from_logits or weights is not None or backward == "inputs":
        return ()
    return _PLATFORMS if backward == "label_codes" else CODE_PLATFORMS


def _label_codes(y, x, spec):
    """One byte per pixel that holds all the backward needs when labels are hard (0/1),
    and whether any label is soft.

    Without logits or a weight map, ∂/∂p_i = 1[ε ≤ p_i ≤ 1-ε]·m(y_i)·(a·y_i + b·(1 - y_i))
    takes one of three values per group: 0 (clipped), the y = 0 value or the y = 1 value.
    The forward pass writes the code (``_iou.label_codes``) next to its sums, so that the
    backward reads 1 byte per pixel instead of y and p (f32: 14 bytes per pixel for
    forward+backward instead of 20; bf16 with uint8 labels: 7 instead of 8). A soft label
    inside the clip range gets ``CODE_SOFT``; one of them sends the backward down the
    general path.
    """
    codes = _iou.label_codes(y, x, spec, jnp.where).astype(jnp.uint8)
    return codes, jnp.any(codes == _iou.CODE_SOFT)


def _iou_sums_fwd(y_true, y_pred, weights, spec, axis_name, backward, codes_forward):
    with_codes = code_platforms(spec, weights, backward)

    @functools.cache
    def forward(rows, codes, stages):
        def run(y_true, y_pred, weights):
            sums_fn = (_row_local_sums if rows else
                       functools.partial(_native_local_sums, stages=stages))
            if not codes:
                sums = sums_fn(y_true, y_pred, weights, spec)
                if not with_codes:
                    return sums, None
                # Never read where this platform's backward takes y and p, so XLA drops
                # it; platform_dependent needs every branch to return the same types.
                # zeros_like: under shard_map it varies over the same axes as y_pred.
                dummy = jnp.zeros_like(y_pred, jnp.uint8)
                return sums, (dummy, jnp.ones_like(dummy, jnp.bool_, shape=()))
            fused = None
            if codes_forward is not None:
                fused = codes_forward(_as_groups(y_true, spec, y_true.dtype),
                                      _as_groups(y_pred, spec, y_pred.dtype), spec)
            if fused is None:
                acc = _accumulation_dtype(y_pred.dtype)
                y, x = ((_as_groups(y_true, spec, acc), _as_groups(y_pred, spec, acc))
                        if rows else (y_true.astype(acc), y_pred.astype(acc)))
                fused = (sums_fn(y_true, y_pred, weights, spec), *_label_codes(y, x, spec))
            sums, label_codes, soft = fused
            return sums, (label_codes.reshape(y_pred.shape), soft)
        return run

    sums, codes = on_platform((y_true, y_pred, weights), lambda platform: forward(
        platform in ROW_PLATFORMS, platform in with_codes, stage_platform(platform)))
    return _global_sums(sums, spec, axis_name), (y_true, y_pred, weights, codes)


def _iou_sums_bwd(spec, axis_name, backward, codes_forward, residuals, d_sums):
    del axis_name, codes_forward  # the sums are already global
    y_true, y_pred, weights, codes = residuals
    with_codes = code_platforms(spec, weights, backward)
    acc = _accumulation_dtype(y_pred.dtype)
    coef = d_sums.astype(acc) @ jnp.asarray(_iou.PROJECTION[spec.weighting], acc)

    def general(rows, recompute):
        if rows:
            y, x, m = _grouped(y_true, y_pred, weights, spec)
            grad = _iou.input_gradient(coef, y, x, m, spec, JAX_OPS)
        else:
            y, x, m = _native(*_inputs_for_backward((y_true, y_pred, weights), recompute),
                              spec)
            grad = _iou.input_gradient(_expand_groups(coef, y.ndim), y, x, m, spec, JAX_OPS)
        return grad.astype(y_pred.dtype).reshape(y_pred.shape)

    def from_codes(rows):
        label_codes = codes[0]
        if rows:
            label_codes = label_codes.reshape(_iou.group_shape(y_pred.shape, spec.per_image))
        return _code_gradient(label_codes, coef, spec, acc).astype(
            y_pred.dtype).reshape(y_pred.shape)

    @functools.cache
    def backward_for(rows, uses_codes, recompute):
        if not uses_codes:
            return lambda: general(rows, recompute)
        # lax.cond runs one branch: the general one only when a soft label needs y and p.
        return lambda: lax.cond(codes[1], lambda: general(rows, recompute),
                                lambda: from_codes(rows))

    grad = on_platform((), lambda platform: backward_for(
        platform in ROW_PLATFORMS, platform in with_codes, platform in RECOMPUTE_PLATFORMS))
    return _zero_cotangent(y_true), grad, _zero_cotangent(weights)


def _inputs_for_backward(inputs, recompute):
    """The backward's inputs, behind an optimization barrier where ``recompute``: XLA
    then sees new values and recomputes p̂ from them instead of keeping the forward's
    (``RECOMPUTE_PLATFORMS``). The barrier moves no data."""
    return lax.optimization_barrier(inputs) if recompute else inputs


def _expand_groups(a, ndim):
    """(G, k) per-group values shaped (G, k, 1, ...) to broadcast against an array of
    ``ndim`` axes in its own shape whose first axis is the batch (G = B or 1)."""
    return a.reshape(*a.shape, *(1,) * max(ndim - 2, 0))


def _code_gradient(codes, coef, spec, acc):
    """The same gradient from the label codes (grouped, or in y's own shape): a lookup
    of two values per group."""
    labels = jnp.asarray([[0.0, 1.0]], acc)  # y = 0 and y = 1
    factor = _iou.vjp_factor(coef, labels, _iou.element_weight(labels, None, spec))
    factor = _expand_groups(factor, codes.ndim)
    return jnp.where(codes == _iou.CODE_FOREGROUND, factor[:, 1:2],
                     jnp.where(codes == _iou.CODE_BACKGROUND, factor[:, 0:1], acc.type(0.0)))


iou_sums.defvjp(_iou_sums_fwd, _iou_sums_bwd)


# ---- The multi-class sums (``_multiclass``): (G, C, 3), the same structure. ----

def _multiclass_grouped(labels, y_pred, weights, spec):
    """(y, x, s): y and x (G, n, C), s (G, n) or None, in the accumulation dtype."""
    acc = _accumulation_dtype(y_pred.dtype)
    groups, classes = (y_pred.shape[0] if spec.per_image else 1), spec.num_classes
    x = y_pred.reshape(groups, -1, classes).astype(acc)
    labels = labels.reshape((groups, -1) if spec.sparse else (groups, -1, classes))
    weight_map = None if weights is None else weights.reshape(groups, -1).astype(acc)
    return (_multiclass.label_indicator(labels, spec, acc, JAX_OPS), x,
            _multiclass.pixel_weight(labels, weight_map, spec, acc, JAX_OPS))


def _multiclass_native(labels, y_pred, weights, spec, float_ids=False):
    """(y, x, s) in the inputs' own shape: y and x (..., C), s (...) or None; sparse ids
    compared as float32 where ``float_ids`` (``_multiclass.id_dtype``)."""
    acc = _accumulation_dtype(y_pred.dtype)
    weight_map = None if weights is None else weights.astype(acc)
    ids = _id_dtype(labels.dtype, spec, float_ids)
    return (_multiclass.label_indicator(labels, spec, acc, JAX_OPS, ids), y_pred.astype(acc),
            _multiclass.pixel_weight(labels, weight_map, spec, acc, JAX_OPS, ids))


def _id_dtype(label_dtype, spec, as_float=False):
    """``_multiclass.id_dtype`` of a JAX dtype."""
    integer = jnp.issubdtype(label_dtype, jnp.integer)
    info = jnp.iinfo(label_dtype) if integer else None
    return _multiclass.id_dtype(spec, jnp.dtype(label_dtype).name,
                                (info.min, info.max) if integer else None, as_float)


def _multiclass_local_sums(labels, y_pred, weights, spec):
    """The (G, C, 3) sums of this shard: rows on XLA:CPU, the native layout elsewhere."""
    def rows(labels, y_pred, weights):
        y, x, s = _multiclass_grouped(labels, y_pred, weights, spec)
        p = _multiclass.probabilities(x, spec, JAX_OPS)
        return jnp.stack([blocked_row_sums(t) for t in _multiclass.sums_terms(y, p, s)],
                         axis=-1)

    def native(labels, y_pred, weights, stages):
        y, x, s = _multiclass_native(labels, y_pred, weights, spec)
        p = _multiclass.probabilities(x, spec, JAX_OPS)
        axes = _iou.group_axes(y.ndim, spec.per_image, keep_last=True)
        return jnp.stack([staged_sum(t, axes, stages).reshape(-1, spec.num_classes)
                          for t in _multiclass.sums_terms(y, p, s)], axis=-1)

    return on_platform((labels, y_pred, weights), by_layout(rows, native))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def multiclass_sums(labels, y_pred, weights, spec, axis_name=None):
    """The (G, C, 3) sums of ``spec`` (``_multiclass.MultiClassSpec``); hand-written VJP
    w.r.t. y_pred (p̂ recomputed from y_pred in the backward). ``axis_name``: psum-ed
    over that named axis unless per image, as ``iou_sums``."""
    return _global_sums(_multiclass_local_sums(labels, y_pred, weights, spec), spec, axis_name)


def _multiclass_sums_fwd(labels, y_pred, weights, spec, axis_name):
    sums = _multiclass_local_sums(labels, y_pred, weights, spec)
    return _global_sums(sums, spec, axis_name), (labels, y_pred, weights)


def _multiclass_sums_bwd(spec, axis_name, residuals, d_sums):
    del axis_name  # the sums are already global
    labels, y_pred, weights = residuals
    coef = d_sums[..., :2].astype(_accumulation_dtype(y_pred.dtype))  # (∂/∂I, ∂/∂P)

    @functools.cache
    def gradient(rows, recompute):
        view = (_multiclass_grouped if rows else
                functools.partial(_multiclass_native, float_ids=recompute))

        def run(labels, y_pred, weights):
            inputs = _inputs_for_backward((labels, y_pred, weights), recompute)
            y, x, s = view(*inputs, spec)
            grad = _multiclass.input_gradient(coef, y, x, s, spec, JAX_OPS)
            return grad.reshape(y_pred.shape).astype(y_pred.dtype)
        return run

    grad = on_platform((labels, y_pred, weights), lambda platform: gradient(
        platform in ROW_PLATFORMS, platform in RECOMPUTE_PLATFORMS))
    return _zero_cotangent(labels), grad, _zero_cotangent(weights)


multiclass_sums.defvjp(_multiclass_sums_fwd, _multiclass_sums_bwd)
