"""The losses as a user writes them in plain ``jax.numpy``, differentiated by autodiff:
the baseline the compiled programs are held to (benchmarks/aot/report.py).

Each function takes (y_true, y_pred) shards under ``shard_map`` with the batch split
over ``axis_name`` and returns the global-batch loss, like ``wiou_ops.jax`` with
``axis_name``: the sums are ``psum``-ed, per-image losses averaged over every image.
"""

import jax
import jax.numpy as jnp
from jax import lax


def _sums(axis_name, per_image):
    def total(t):
        if per_image:
            return t.sum(axis=tuple(range(1, t.ndim)), keepdims=True)
        return lax.psum(t.sum(), axis_name)
    return total


def _mean_over_images(losses, axis_name):
    count = lax.psum(losses.shape[0], axis_name)
    return lax.psum(losses.sum(), axis_name) / count


def binary(y_true, y_pred, *, weighting="seed", per_image=False, from_logits=False,
           weight_map=None, axis_name="batch", weight_background=0.5,
           weight_foreground=1.5, epsilon=1e-7):
    """The weighted IoU loss of docs/design.md's table, written out."""
    y = y_true.astype(jnp.float32)
    x = y_pred.astype(jnp.float32)
    if from_logits:
        p, q = jax.nn.sigmoid(x), jax.nn.sigmoid(-x)
    else:
        p = jnp.clip(x, epsilon, 1 - epsilon)
        q = 1 - p
    total = _sums(axis_name, per_image)
    w_b, w_f = weight_background, weight_foreground

    def iou_loss(inter, union):
        return -jnp.log((inter + epsilon) / (union + epsilon))

    if weighting == "seed":  # a weight map is Keras's sample weight of the seed's map
        loss = iou_loss(total(y * p), total(y + p - y * p))
        pixel_loss = loss * (w_b * (1 - y) + w_f * y)
        if weight_map is not None:
            pixel_loss = pixel_loss * weight_map.astype(jnp.float32)
        count = lax.psum(y.size, axis_name)
        return lax.psum(pixel_loss.sum(), axis_name) / count
    m = 1.0 if weight_map is None else weight_map.astype(jnp.float32)
    if weighting == "pixel":
        m = m * (w_b * (1 - y) + w_f * y)
    loss = iou_loss(total(m * y * p), total(m * (y + p - y * p)))
    if weighting == "class":
        background = iou_loss(total(m * (1 - y) * q), total(m * ((1 - y) + y * q)))
        loss = (w_f * loss + w_b * background) / (w_f + w_b)
    if per_image:
        return _mean_over_images(loss.reshape(-1), axis_name)
    return loss


def multiclass(y_true, y_pred, *, classes, sparse=True, multi_label=False, from_logits=True,
               per_image=False, axis_name="batch", epsilon=1e-7):
    """The multi-class IoU: softmax (sigmoid with ``multi_label``), one_hot, per-class
    sums, the class mean."""
    x = y_pred.astype(jnp.float32)
    if from_logits:
        p = jax.nn.sigmoid(x) if multi_label else jax.nn.softmax(x, axis=-1)
    else:
        p = jnp.clip(x, epsilon, 1 - epsilon)
    y = (jax.nn.one_hot(y_true, classes, dtype=jnp.float32) if sparse
         else y_true.astype(jnp.float32))
    axes = tuple(range(1 if per_image else 0, x.ndim - 1))

    def total(t):
        s = t.sum(axis=axes)
        return s if per_image else lax.psum(s, axis_name)

    inter, pred, label = total(y * p), total(p), total(y)
    losses = -jnp.log((inter + epsilon) / (label + pred - inter + epsilon))
    losses = losses.mean(axis=-1)
    if per_image:
        return _mean_over_images(losses, axis_name)
    return losses
