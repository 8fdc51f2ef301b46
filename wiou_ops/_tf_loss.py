"""The loss on the TensorFlow backend: input checks, implementation choice, eager graphs.

``compute`` takes checked options from ``losses.validate_options``; the
implementation (``native``/``xla``/``graph``) comes from ``_dispatch.select``
and the reduction from ``losses.loss_from_sums``.
"""

import tensorflow as tf

from wiou_ops import _dispatch, _fused, _xla, losses


def as_inputs(y_true, y_pred, per_image=False):
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
    if per_image and pred_shape.rank is not None and pred_shape.rank < 2:
        raise ValueError(
            "per_image=True needs a batch axis and at least one more: y_pred must have "
            f"rank >= 2, got y_pred.shape={pred_shape}.")
    if not (true_shape.is_fully_defined() and pred_shape.is_fully_defined()):
        check = tf.debugging.assert_equal(
            tf.shape(y_true, out_type=tf.int64),
            tf.shape(y_pred, out_type=tf.int64),
            message="y_true and y_pred must have the same shape",
        )
        with tf.control_dependencies([check]):
            y_pred = tf.identity(y_pred)
    return y_true, y_pred


def _checked(y_true, y_pred, sample_weight, options):
    """``check_inputs=True``: y_pred (and y_true, sample_weight) checked at run time.

    Raises ``tf.errors.InvalidArgumentError`` naming the argument. XLA drops
    assertions, so inside a user's ``jit_compile`` step the check is skipped;
    our own eager and graph calls run it outside the compiled kernels.
    """
    checks = [
        tf.debugging.assert_greater_equal(
            tf.cast(y_true, tf.float32), 0.0, message="y_true must be in [0, 1]"),
        tf.debugging.assert_less_equal(
            tf.cast(y_true, tf.float32), 1.0, message="y_true must be in [0, 1]"),
    ]
    if options["from_logits"]:
        checks.append(tf.debugging.assert_all_finite(
            y_pred, message="y_pred (logits) must be finite"))
    else:
        checks += [
            tf.debugging.assert_greater_equal(
                y_pred, tf.zeros([], y_pred.dtype),
                message="y_pred must be probabilities in [0, 1] (from_logits=False)"),
            tf.debugging.assert_less_equal(
                y_pred, tf.ones([], y_pred.dtype),
                message="y_pred must be probabilities in [0, 1] (from_logits=False)"),
        ]
    if sample_weight is not None:
        weight = tf.cast(sample_weight, tf.float32)
        checks += [
            tf.debugging.assert_all_finite(weight, message="sample_weight must be finite"),
            tf.debugging.assert_greater_equal(weight, 0.0, message="sample_weight must be >= 0"),
        ]
    with tf.control_dependencies(checks):
        return tf.identity(y_pred)


def fused_loss(y_true, y_pred, sample_weight, mask, options, for_gradient=None):
    """Sums from the chosen implementation, then ``losses.loss_from_sums``.

    ``for_gradient``: whether a backward follows (None: ask the tapes, see ``_fused``).
    """
    if options["check_inputs"]:
        y_pred = _checked(y_true, y_pred, sample_weight, options)
    impl = _dispatch.select(options["implementation"], y_true, y_pred)
    spec, weight_map, group_weight = losses.sums_plan(y_true, sample_weight, mask, options)
    sums = impl.sums(y_true, y_pred, weight_map, spec, for_gradient)
    count = None
    replica = _replica_context() if options["cross_replica"] else None
    if replica is not None and not spec.per_image:
        # A few scalars per replica. Here, between the compiled kernels and the scalar
        # math, not inside a nested jit_compile function where tf.distribute cannot
        # synchronize. Its gradient is again an all-reduce (sum) of the sums' cotangents,
        # so every replica back-propagates the global IoU's gradient for its own pixels.
        # Per-image sums need no all-reduce: Keras's batch mean already spans replicas.
        # The count is exact in int64 (a replica's batch may hold more than 2^31
        # elements), reduced on its own: one all-reduce packs a single dtype.
        sums = replica.all_reduce(tf.distribute.ReduceOp.SUM, sums)
        count = replica.all_reduce(tf.distribute.ReduceOp.SUM,
                                   tf.size(y_pred, out_type=tf.int64))
    return losses.loss_from_sums(sums, y_true, y_pred, sample_weight, mask, group_weight,
                                 options, count=count, row_sums=_xla.ROW_SUMS)


def _replica_context():
    """The replica context of a tf.distribute strategy with several replicas, else None.

    Outside ``strategy.run`` (cross-replica context) or with one replica,
    ``cross_replica=True`` has nothing to reduce.
    """
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


_EAGER_GRAPHS = {}


def _graph_for(options, for_gradient):
    """One traced graph per option set (and replica count, and whether a gradient
    tape records the call: the graph cannot see the caller's tapes), for eager callers."""
    key = (tuple(sorted(options.items())), tf.distribute.get_strategy().num_replicas_in_sync,
           for_gradient)
    graph = _EAGER_GRAPHS.get(key)
    if graph is None:

        def loss_graph(y_true, y_pred, sample_weight, mask):
            return fused_loss(y_true, y_pred, sample_weight, mask, options, for_gradient)

        # Exact shapes, no relaxed retracing: Keras's mask and sample-weight
        # broadcasting needs known ranks.
        graph = _EAGER_GRAPHS[key] = tf.function(loss_graph)
    return graph


def compute(y_true, y_pred, sample_weight, mask, options, trace=True):
    """The reduced loss (or the map for reduction "none") on the TensorFlow backend."""
    y_true, y_pred = as_inputs(y_true, y_pred, options["per_image"])
    if trace and tf.executing_eagerly():
        # Eager dispatch costs tens of microseconds per op, and the loss's
        # bookkeeping is ~40 small ops: more than the fused kernels
        # themselves at 16x512x512. One graph call replaces them. The
        # implementation is chosen here, on the eager inputs, so that every
        # call (not only the first trace) is dispatched and recorded.
        chosen = _dispatch.select(options["implementation"], y_true, y_pred).name
        graph = _graph_for(dict(options, implementation=chosen), _fused.tape_records(y_pred))
        return graph(y_true, y_pred, sample_weight, mask)
    return fused_loss(y_true, y_pred, sample_weight, mask, options)

