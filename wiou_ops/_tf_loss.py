"""The loss on the TensorFlow backend: input checks, implementation choice, eager graphs.

``compute`` takes checked options from ``losses.validate_options``; the
implementation (``native``/``xla``/``graph``) comes from ``_dispatch.select``
and the reduction from ``losses.seed_loss_from_sums``.
"""

import tensorflow as tf

from wiou_ops import _dispatch, losses


def as_inputs(y_true, y_pred):
    """Tensors with checked dtypes and shapes; y_pred keeps its dtype (no up-cast)."""
    y_pred = tf.convert_to_tensor(y_pred)
    if not y_pred.dtype.is_floating:
        raise TypeError(
            "y_pred must be a floating tensor of probabilities "
            f"(float16, bfloat16, float32 or float64), got dtype {y_pred.dtype.name}."
        )
    y_true = tf.convert_to_tensor(y_true)
    if not (y_true.dtype.is_floating or y_true.dtype.is_integer or y_true.dtype == tf.bool):
        raise TypeError(
            f"y_true must be a float, integer or bool tensor, got dtype {y_true.dtype.name}."
        )
    true_shape, pred_shape = y_true.shape, y_pred.shape
    if not true_shape.is_compatible_with(pred_shape):
        raise ValueError(
            f"y_true and y_pred must have the same shape, got y_true.shape={true_shape} "
            f"and y_pred.shape={pred_shape}. (A mask of shape (B, H, W) for predictions "
            "of shape (B, H, W, 1) needs y_true[..., None].)"
        )
    if not (true_shape.is_fully_defined() and pred_shape.is_fully_defined()):
        check = tf.debugging.assert_equal(
            tf.shape(y_true),
            tf.shape(y_pred),
            message="y_true and y_pred must have the same shape",
        )
        with tf.control_dependencies([check]):
            y_pred = tf.identity(y_pred)
    return y_true, y_pred


def seed_loss(y_true, y_pred, sample_weight, mask, options):
    impl = _dispatch.select(options["implementation"], y_true, y_pred)
    log_iou_loss, sum_y = impl.log_iou_loss(y_true, y_pred, options["epsilon"])
    return losses.seed_loss_from_sums(log_iou_loss, sum_y, y_true, y_pred, sample_weight, mask,
                                      options)


_EAGER_GRAPHS = {}


def _graph_for(options):
    """One traced graph per option set (and replica count), for eager callers."""
    key = (tuple(sorted(options.items())), tf.distribute.get_strategy().num_replicas_in_sync)
    graph = _EAGER_GRAPHS.get(key)
    if graph is None:

        def loss_graph(y_true, y_pred, sample_weight, mask):
            return seed_loss(y_true, y_pred, sample_weight, mask, options)

        # Exact shapes, no relaxed retracing: Keras's mask and sample-weight
        # broadcasting needs known ranks.
        graph = _EAGER_GRAPHS[key] = tf.function(loss_graph)
    return graph


def compute(y_true, y_pred, sample_weight, mask, options, trace=True):
    """The reduced loss (or the map for reduction "none") on the TensorFlow backend."""
    y_true, y_pred = as_inputs(y_true, y_pred)
    if trace and tf.executing_eagerly():
        # Eager dispatch costs tens of microseconds per op, and the loss's
        # bookkeeping is ~40 small ops: more than the fused kernels
        # themselves at 16x512x512. One graph call replaces them. The
        # implementation is chosen here, on the eager inputs, so that every
        # call (not only the first trace) is dispatched and recorded.
        chosen = _dispatch.select(options["implementation"], y_true, y_pred).name
        graph = _graph_for(dict(options, implementation=chosen))
        return graph(y_true, y_pred, sample_weight, mask)
    return seed_loss(y_true, y_pred, sample_weight, mask, options)

