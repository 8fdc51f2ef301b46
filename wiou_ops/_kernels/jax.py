"""The fused IoU sums in JAX: ``jax.custom_vjp``, blocked float32 accumulation, shard-aware.

Imports JAX, NumPy and ``_iou`` (no TensorFlow, no Keras), so GPU/TPU machines with
JAX alone can use and benchmark it. The same sums and VJP as the TensorFlow kernels
(``_iou.py`` states them)::

    sums_g = Σ_{i in group g} terms(y_i, p̂_i, m_i)        one fused pass
    ∂/∂p_i = m_i·(a_g·y_i + b_g·(1 - y_i))·dp̂_i           one elementwise pass

On GPU/TPU, with hard labels and no weight map or logits, the forward also
writes a 1-byte code per pixel and the backward reads it instead of y and p
(``_label_codes``): fewer bytes than reading the inputs twice. ``backward``
chooses explicitly (benchmarks time both).

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
                                log=jnp.log, softmax=jax.nn.softmax, cast=_cast, sum=jnp.sum,
                                arange=jnp.arange, convert_to_tensor=jnp.asarray)
BACKWARDS = ("auto", "label_codes", "inputs")

_BLOCK, _LEVELS = _iou.SUM_BLOCK, _iou.SUM_LEVELS
_PLAIN_SUM_PLATFORMS = ("gpu",)  # where XLA's own reduction is accurate (see row_sums)
# Where the backward reads 1-byte label codes instead of y and p (_label_codes). Not on
# XLA:CPU: it computes the codes in loops of their own, which re-read y and p (slower; the
# jax-cpu report times both backwards). On GPU and TPU, sibling multi-output fusion writes
# them from the sums' own pass: 14 instead of 20 bytes per float32 pixel (a byte count; the
# GPU benchmark, benchmarks/gpu_jax_bench.py, times both backwards in one run).
LABEL_CODE_PLATFORMS = ("gpu", "tpu")


def _accumulation_dtype(pred_dtype):
    return jnp.dtype(_iou.accumulation_dtype(jnp.dtype(pred_dtype).name))


def row_sums(x):
    """Row sums (over axis 1) of a (G, n) or (G, n, C) array in levels of ``_BLOCK``
    partial sums (accurate in float32).

    XLA:CPU's own float32 reduction is not accurate for every shape (a full
    reduction of a 4-D map was 3.6e-5 off at 4e5 elements), and XLA folds
    nested reductions back into one, so each level passes through an
    optimization barrier. Blocks of ``_BLOCK`` (see ``_iou.SUM_BLOCK``) keep the
    terms fused into the first level on CPU. XLA:GPU reduces in a tree already:
    on an H200 at 2.7e8 elements a plain sum was within 4.5e-8 of float64 and the
    barriers only cost time (benchmarks/results/gpu-nvidia-h200/), so GPUs take
    the plain sum.
    """
    if jax.default_backend() in _PLAIN_SUM_PLATFORMS:
        return x.sum(axis=1)
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
    y, x, m = _grouped(y_true, y_pred, weights, spec)
    return jnp.stack([row_sums(t) for t in _iou.sums_terms(y, x, m, spec, JAX_OPS)], axis=1)


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
    ``LABEL_CODE_PLATFORMS``, else from y and p), "label_codes" or "inputs"; the codes
    apply only without logits and weight map. ``codes_forward``: a function
    ``(y, x, spec) -> (sums, codes, any soft label)`` on grouped inputs that computes
    the forward and the codes in one kernel (``wiou_ops.experimental.pallas``; it returns
    None where it does not apply), or None for XLA's fusion.
    """
    return _global_sums(_local_sums(y_true, y_pred, weights, spec), spec, axis_name)


def uses_label_codes(spec, weights, backward="auto"):
    """Whether the backward runs from 1-byte label codes instead of y and p."""
    if backward not in BACKWARDS:
        raise ValueError(f"backward={backward!r}; expected one of {BACKWARDS}.")
    if spec.from_logits or weights is not None or backward == "inputs":
        return False
    return backward == "label_codes" or jax.default_backend() in LABEL_CODE_PLATFORMS


def _label_codes(y_true, y_pred, spec, acc):
    """One byte per pixel that holds all the backward needs when labels are hard (0/1).

    Without logits or a weight map, ∂/∂p_i = 1[ε ≤ p_i ≤ 1-ε]·m(y_i)·(a·y_i + b·(1 - y_i))
    takes one of three values per group: 0 (clipped), the y = 0 value or the y = 1 value.
    The forward pass writes the code (``_iou.label_codes``) next to its sums, so that the
    backward reads 1 byte per pixel instead of y and p (f32: 14 bytes per pixel for
    forward+backward instead of 20; bf16 with uint8 labels: 7 instead of 8). A soft label
    inside the clip range gets ``CODE_SOFT``; one of them sends the backward down the
    general path.
    """
    codes = _iou.label_codes(_as_groups(y_true, spec, acc), _as_groups(y_pred, spec, acc),
                             spec, jnp.where).astype(jnp.uint8)
    return codes, jnp.any(codes == _iou.CODE_SOFT)


def _iou_sums_fwd(y_true, y_pred, weights, spec, axis_name, backward, codes_forward):
    codes = fused = None
    label_codes = uses_label_codes(spec, weights, backward)
    if label_codes and codes_forward is not None:
        fused = codes_forward(_as_groups(y_true, spec, y_true.dtype),
                              _as_groups(y_pred, spec, y_pred.dtype), spec)
    if fused is not None:
        sums, *codes = fused
        codes = tuple(codes)  # (codes, any soft label), as _label_codes returns
    else:
        sums = _local_sums(y_true, y_pred, weights, spec)
        if label_codes:
            codes = _label_codes(y_true, y_pred, spec, _accumulation_dtype(y_pred.dtype))
    return _global_sums(sums, spec, axis_name), (y_true, y_pred, weights, codes)


def _iou_sums_bwd(spec, axis_name, backward, codes_forward, residuals, d_sums):
    del axis_name, backward, codes_forward  # the sums are already global
    y_true, y_pred, weights, codes = residuals
    acc = _accumulation_dtype(y_pred.dtype)
    coef = d_sums.astype(acc) @ jnp.asarray(_iou.PROJECTION[spec.weighting], acc)

    def general():
        y, x, m = _grouped(y_true, y_pred, weights, spec)
        grad = _iou.input_gradient(coef, y, x, m, spec, JAX_OPS)
        return grad.reshape(-1).astype(y_pred.dtype)

    def from_codes():
        return _code_gradient(codes[0], coef, spec, acc).reshape(-1).astype(y_pred.dtype)

    if codes is None:
        grad = general()
    else:
        # lax.cond runs one branch: the general one only when a soft label needs y and p.
        # Both return a flat array: its one layout needs no copy after the cond.
        grad = lax.cond(codes[1], general, from_codes)
    grad = grad.reshape(y_pred.shape)
    return _zero_cotangent(y_true), grad, _zero_cotangent(weights)


def _code_gradient(codes, coef, spec, acc):
    """The same gradient from the label codes: a lookup of two values per group."""
    labels = jnp.asarray([[0.0, 1.0]], acc)  # y = 0 and y = 1
    factor = _iou.vjp_factor(coef, labels, _iou.element_weight(labels, None, spec))
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


def _multiclass_local_sums(labels, y_pred, weights, spec):
    y, x, s = _multiclass_grouped(labels, y_pred, weights, spec)
    p = _multiclass.probabilities(x, spec, JAX_OPS)
    return jnp.stack([row_sums(t) for t in _multiclass.sums_terms(y, p, s)], axis=-1)


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
    y, x, s = _multiclass_grouped(labels, y_pred, weights, spec)
    coef = d_sums[..., :2].astype(x.dtype)  # (∂/∂I, ∂/∂P); Y is data
    grad = _multiclass.input_gradient(coef, y, x, s, spec, JAX_OPS)
    return (_zero_cotangent(labels), grad.reshape(y_pred.shape).astype(y_pred.dtype),
            _zero_cotangent(weights))


multiclass_sums.defvjp(_multiclass_sums_fwd, _multiclass_sums_bwd)
