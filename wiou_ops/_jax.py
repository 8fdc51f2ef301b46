"""The fused weighted IoU in JAX: ``jax.custom_vjp`` sums, blocked float32 accumulation, shard-aware.

Imports JAX, NumPy and ``_iou`` (no TensorFlow, no Keras backend), so GPU/TPU
machines with JAX alone can use and benchmark it. The same sums and VJP as the
TensorFlow implementations (``_iou.py`` states them)::

    sums_g = Σ_{i in group g} terms(y_i, p̂_i, m_i)        one fused pass
    ∂/∂p_i = m_i·(a_g·y_i + b_g·(1 - y_i))·dp̂_i           one elementwise pass

On GPU/TPU, with hard labels and no weight map or logits, the forward also
writes a 1-byte code per pixel and the backward reads it instead of y and p
(``_label_codes``): fewer bytes than reading the inputs twice.

With ``axis_name`` the sums are ``psum``-ed over that named axis
(``shard_map``/``pmap``), so every shard sees the global IoU and its gradient
equals the unsharded one for its slice. Per-image sums need no all-reduce;
only the batch mean's count does.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wiou_ops import _iou, _pallas

_BLOCK, _LEVELS = _iou.SUM_BLOCK, _iou.SUM_LEVELS
_PLAIN_SUM_PLATFORMS = ("gpu",)  # where XLA's own reduction is accurate (see row_sums)
# Where the backward reads 1-byte label codes instead of y and p (_label_codes). Not on
# XLA:CPU: it computes the codes in loops of their own, which re-read y and p (measured
# 15-20 % slower at 16x512x512x1). On GPU and TPU, sibling multi-output fusion writes them
# from the sums' own pass: 14 instead of 20 bytes per float32 pixel (a byte count; the
# GPU benchmark, benchmarks/gpu_jax_bench.py, times both backwards in one run).
_COMPACT_RESIDUAL_PLATFORMS = ("gpu", "tpu")


def _accumulation_dtype(pred_dtype):
    return jnp.float64 if pred_dtype == jnp.float64 else jnp.float32


def row_sums(x):
    """Row sums of a (G, n) array in levels of ``_BLOCK`` partial sums (accurate in float32).

    XLA:CPU's own float32 reduction is not accurate for every shape (a full
    reduction of a 4-D map was 3.6e-5 off at 4e5 elements), and XLA folds
    nested reductions back into one, so each level passes through an
    optimization barrier. Blocks of ``_BLOCK`` (see ``_iou.SUM_BLOCK``) keep the
    terms fused into the first level on CPU. XLA:GPU reduces in
    a tree already: measured on an H200 at 2.7e8 elements, a plain sum was
    within 4.5e-8 of float64 and the barriers cost 3-20 % of the step
    (benchmarks/results/gpu-nvidia-h200/), so GPUs take the plain sum.
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
        x = lax.optimization_barrier(x.reshape(x.shape[0], -1, _BLOCK).sum(axis=2))
    return x.sum(axis=1) + tails


def _as_groups(x, spec, dtype):
    groups = x.shape[0] if spec.per_image else 1
    return x.reshape(groups, int(np.prod(x.shape[1:] if spec.per_image else x.shape))).astype(
        dtype)


def _probabilities(x, spec):
    if spec.from_logits:
        return jax.nn.sigmoid(x), jax.nn.sigmoid(-x)
    acc = x.dtype.type
    p = jnp.clip(x, acc(spec.epsilon), acc(1.0 - spec.epsilon))
    return p, 1.0 - p


def _grouped_weight(y, weights, spec, acc):
    """m (``_iou.element_weight``) with the weight map grouped like y; None for m = 1."""
    weight_map = None if weights is None else _as_groups(weights, spec, acc)
    return _iou.element_weight(y, weight_map, spec)


def _local_sums(y_true, y_pred, weights, spec):
    acc = _accumulation_dtype(y_pred.dtype)
    y = _as_groups(y_true, spec, acc)
    p, q = _probabilities(_as_groups(y_pred, spec, acc), spec)
    terms = _iou.terms(y, p, q, _grouped_weight(y, weights, spec, acc), spec)
    return jnp.stack([row_sums(t) for t in terms], axis=1)


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def iou_sums(y_true, y_pred, weights, spec, axis_name=None):
    """The (G, K) sums of ``spec`` (``_iou.SumsSpec``); hand-written VJP w.r.t. y_pred.

    ``weights``: a weight map of y's shape, or None. Labels and weights get a
    zero cotangent (they are data).
    """
    return _global_sums(_local_sums(y_true, y_pred, weights, spec), spec, axis_name)


def _compact_residuals(spec, weights):
    """Whether the backward can run from 1-byte label codes instead of y and p (see below)."""
    return (jax.default_backend() in _COMPACT_RESIDUAL_PLATFORMS and not spec.from_logits
            and weights is None)


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


def _iou_sums_fwd(y_true, y_pred, weights, spec, axis_name):
    codes = None
    if not _compact_residuals(spec, weights):
        sums = _local_sums(y_true, y_pred, weights, spec)
    elif (jax.default_backend() in _pallas.FORWARD_PLATFORMS
          and _pallas.supports(y_true, y_pred, spec, weights)):
        sums, *codes = _pallas.sums_and_codes(_as_groups(y_true, spec, y_true.dtype),
                                              _as_groups(y_pred, spec, y_pred.dtype), spec)
        codes = tuple(codes)  # (codes, any soft label), as _label_codes returns
    else:
        sums = _local_sums(y_true, y_pred, weights, spec)
        codes = _label_codes(y_true, y_pred, spec, _accumulation_dtype(y_pred.dtype))
    return _global_sums(sums, spec, axis_name), (y_true, y_pred, weights, codes)


def _iou_sums_bwd(spec, axis_name, residuals, d_sums):
    del axis_name  # the sums are already global
    y_true, y_pred, weights, codes = residuals
    acc = _accumulation_dtype(y_pred.dtype)
    coef = d_sums.astype(acc) @ jnp.asarray(_iou.PROJECTION[spec.weighting], acc)

    def general():
        grad = _general_gradient(y_true, y_pred, weights, coef, spec, acc)
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


def _general_gradient(y_true, y_pred, weights, coef, spec, acc):
    """m·(a·y + b·(1 - y))·dp̂ from y and p themselves (any labels, weights, logits)."""
    y = _as_groups(y_true, spec, acc)
    x = _as_groups(y_pred, spec, acc)
    grad = _iou.vjp_factor(coef, y, _grouped_weight(y, weights, spec, acc))
    if spec.from_logits:
        return grad * (jax.nn.sigmoid(x) * jax.nn.sigmoid(-x))
    return jnp.where(_iou.clip_passes(x, spec), grad, 0.0)


def _code_gradient(codes, coef, spec, acc):
    """The same gradient from the label codes: a lookup of two values per group."""
    labels = jnp.asarray([[0.0, 1.0]], acc)  # y = 0 and y = 1
    factor = _iou.vjp_factor(coef, labels, _iou.element_weight(labels, None, spec))
    return jnp.where(codes == _iou.CODE_FOREGROUND, factor[:, 1:2],
                     jnp.where(codes == _iou.CODE_BACKGROUND, factor[:, 0:1], acc(0.0)))


iou_sums.defvjp(_iou_sums_fwd, _iou_sums_bwd)


def weighted_iou_loss(y_true, y_pred, *, weight_background=1.0, weight_foreground=1.0,
                      epsilon=1e-7, weighting="seed", per_image=False, from_logits=False,
                      log=True, sample_weight=None, reduction="sum_over_batch_size",
                      axis_name=None):
    """The weighted IoU loss in plain JAX (jittable; every weighting of DESIGN.md).

    ``sample_weight`` (pixel/class weighting): a weight map that broadcasts to
    y_true's shape, inside the sums. Seed weighting: no sample weight (use the
    Keras class for Keras's sample-weight semantics). ``reduction``:
    "sum_over_batch_size"/"mean" or "sum"; seed weighting divides by the pixel
    count, the others by the number of IoUs (B with ``per_image``, else 1).
    With ``axis_name`` (inside ``shard_map``/``pmap`` over the batch) the
    result and gradients equal the unsharded ones.
    """
    options = dict(weight_background=weight_background, weight_foreground=weight_foreground,
                   epsilon=epsilon, weighting=weighting, per_image=per_image,
                   from_logits=from_logits, log=log)
    _check(y_true, y_pred, options, sample_weight, reduction)
    spec = _iou.SumsSpec(**{k: v for k, v in options.items() if k != "log"})
    weights = None
    if sample_weight is not None:
        weights = jnp.broadcast_to(_expand_trailing(jnp.asarray(sample_weight, jnp.float32),
                                                    y_pred.ndim), y_pred.shape)
    sums = iou_sums(y_true, y_pred, weights, spec, axis_name)
    losses = _iou.group_losses(sums, spec, log, jnp.log)

    def global_sum(x):
        # Per-image losses live on their shard; whole-batch sums are already global.
        return x if axis_name is None or not per_image else lax.psum(x, axis_name)

    # Element and image counts are exact Python ints (shards have equal static shapes),
    # rounded once to float32 where they divide; never int32, never summed in float32.
    shards = 1 if axis_name is None else lax.axis_size(axis_name)
    if weighting == "seed":
        group_size = y_pred.size // max(sums.shape[0], 1)
        if axis_name is not None and not per_image:
            group_size *= shards  # the sums are the global batch's
        sum_y = sums[:, 2]
        total = global_sum(jnp.sum(losses * (weight_background * (float(group_size) - sum_y)
                                             + weight_foreground * sum_y)))
        if reduction == "sum":
            return total
        return total / float(max(y_pred.size * shards, 1))
    if not per_image:
        return losses[0]
    total = global_sum(jnp.sum(losses))
    if reduction == "sum":
        return total
    return total / float(max(losses.shape[0] * shards, 1))


def seed_weighted_iou_loss(y_true, y_pred, **options):
    """``weighted_iou_loss`` with the seed weighting (the drop-in's numbers)."""
    return weighted_iou_loss(y_true, y_pred, weighting="seed", **options)


def _expand_trailing(weight, rank):
    while weight.ndim < rank:
        weight = weight[..., None]
    return weight


def _check(y_true, y_pred, options, sample_weight, reduction):
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got y_true.shape="
                         f"{y_true.shape} and y_pred.shape={y_pred.shape}.")
    if not jnp.issubdtype(y_pred.dtype, jnp.floating):
        raise TypeError(f"y_pred must be floating, got dtype {y_pred.dtype}.")
    if options["weighting"] not in _iou.TERMS:
        raise ValueError(f"Unknown weighting={options['weighting']!r}; expected one of "
                         f"{tuple(_iou.TERMS)}.")
    if options["per_image"] and y_pred.ndim < 2:
        raise ValueError("per_image=True needs y_pred of rank >= 2 (a batch axis and at "
                         f"least one more), got y_pred.shape={y_pred.shape}.")
    if reduction not in ("sum_over_batch_size", "mean", "sum"):
        raise ValueError(f"reduction={reduction!r}: the plain JAX function supports "
                         "'sum_over_batch_size', 'mean' and 'sum' (the Keras class has all).")
    if sample_weight is not None and options["weighting"] == "seed":
        raise ValueError("sample_weight with weighting='seed' follows Keras's reduction: use "
                         "wiou_ops.WeightedIoULoss on the JAX backend.")
