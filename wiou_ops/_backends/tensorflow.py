"""The loss on the TensorFlow backend: input checks, the choice of kernel, eager graphs.

``compute`` takes options checked by ``_common.options``, picks one of the
TensorFlow implementations (``select``), runs its fused sums and turns them into
the loss with ``_common.reduction``. ``implementation="auto"``:

* inside an XLA context (a user's ``jit_compile=True`` step, TPU) -> ``xla``:
  a native op there would break the user's compile;
* CPU tensors outside XLA, native op loaded, dtypes it has kernels for ->
  ``native``;
* otherwise -> ``xla`` (its own nested ``jit_compile``): on GPU, and on CPU when
  the native op is missing. ``graph`` (plain TensorFlow ops, no XLA) is slower
  than ``xla`` on CPU (benchmarks/results/) and stays available by name.

``xla`` is compiled for the platform the step runs on (``compiled_platform``: TPU
under a TPUStrategy or on a TPU device, GPU on a GPU device, else CPU), never from what
the host happens to have.
"""

import tensorflow as tf

from wiou_ops._common import reduction
from wiou_ops._kernels import custom_gradient, native, xla

# Each name maps to one implementation, or to one per platform (``xla``: ``compiled_platform``).
IMPLEMENTATIONS = {"xla": xla.XLA, "graph": xla.GRAPH}
if native.NATIVE is not None:
    IMPLEMENTATIONS = {"native": native.NATIVE, **IMPLEMENTATIONS}
MULTICLASS_IMPLEMENTATIONS = {"xla": xla.MULTICLASS_XLA, "graph": xla.MULTICLASS_GRAPH}
if native.MULTICLASS_NATIVE is not None:
    MULTICLASS_IMPLEMENTATIONS = {"native": native.MULTICLASS_NATIVE,
                                  **MULTICLASS_IMPLEMENTATIONS}


def available():
    """Names of the implementations usable in this process, fastest on CPU first."""
    return list(IMPLEMENTATIONS)


def in_xla_context():
    """True while tracing inside ``tf.function(jit_compile=True)`` or a TPU computation."""
    try:  # private but stable for years; the same check tf.function itself uses.
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover
        return False
    if tf.executing_eagerly():
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())


def compiled_platform(tensor):
    """"tpu", "gpu" or "cpu": the platform a step computing ``tensor`` runs on, from the
    strategy it runs under and the tensor's device. With a GPU visible, an unplaced graph
    tensor will most likely go there."""
    device = (getattr(tensor, "device", "") or "").upper()
    strategy = tf.distribute.get_strategy()
    if isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy)
                  ) or ":TPU:" in device:
        return "tpu"
    if ":GPU:" in device:
        return "gpu"
    return "cpu" if ":CPU:" in device or not tf.config.list_logical_devices("GPU") else "gpu"


def _check_native(y_true, y_pred, supports=native.supports):
    if "native" not in IMPLEMENTATIONS:
        raise ValueError(
            f"implementation='native' is not available: {native.UNAVAILABLE_REASON}. "
            f"Available: {available()}."
        )
    if in_xla_context():
        raise ValueError(
            "implementation='native' cannot run inside an XLA computation "
            "(jit_compile=True or TPU): use 'auto' or 'xla' there."
        )
    if not supports(y_true, y_pred):
        raise TypeError(
            "implementation='native' has kernels for y_pred float32/float16/bfloat16 and "
            f"y_true {', '.join(t.name for t in native.true_dtypes(supports))}, got y_pred "
            f"{y_pred.dtype.name} and y_true {y_true.dtype.name}."
        )


def select(implementation, y_true, y_pred, implementations=None, supports=native.supports,
           platform=None):
    """The implementation object for ``implementation`` ("auto" or a name) and these inputs.

    ``implementations`` and ``supports``: the multi-class loss's (default: the binary's).
    ``platform``: ``compiled_platform(y_pred)`` where the caller has it already.
    """
    implementations = IMPLEMENTATIONS if implementations is None else implementations
    platform = compiled_platform(y_pred) if platform is None else platform
    if implementation == "auto":
        use_native = (
            "native" in implementations
            and not in_xla_context()
            and platform == "cpu"
            and supports(y_true, y_pred)
        )
        implementation = "native" if use_native else "xla"
    elif implementation == "native":
        _check_native(y_true, y_pred, supports)
    if implementation not in implementations:
        raise ValueError(
            f"Unknown implementation={implementation!r}; expected 'auto' or one of "
            f"{available()}.")
    chosen = implementations[implementation]
    return chosen[platform] if isinstance(chosen, dict) else chosen


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
    checks = (_unit_label_checks(y_true) +
              _prediction_and_weight_checks(y_pred, sample_weight, options["from_logits"]))
    with tf.control_dependencies(checks):
        return tf.identity(y_pred)


def _unit_label_checks(y_true):
    y = tf.cast(y_true, tf.float32)
    return [tf.debugging.assert_greater_equal(y, 0.0, message="y_true must be in [0, 1]"),
            tf.debugging.assert_less_equal(y, 1.0, message="y_true must be in [0, 1]")]


def _prediction_and_weight_checks(y_pred, sample_weight, from_logits):
    """Assertions: logits finite, or probabilities in [0, 1]; sample weights finite, >= 0."""
    if from_logits:
        checks = [tf.debugging.assert_all_finite(
            y_pred, message="y_pred (logits) must be finite")]
    else:
        message = "y_pred must be probabilities in [0, 1] (from_logits=False)"
        checks = [
            tf.debugging.assert_greater_equal(y_pred, tf.zeros([], y_pred.dtype),
                                              message=message),
            tf.debugging.assert_less_equal(y_pred, tf.ones([], y_pred.dtype), message=message),
        ]
    if sample_weight is not None:
        weight = tf.cast(sample_weight, tf.float32)
        checks += [
            tf.debugging.assert_all_finite(weight, message="sample_weight must be finite"),
            tf.debugging.assert_greater_equal(weight, 0.0, message="sample_weight must be >= 0"),
        ]
    return checks


def fused_loss(y_true, y_pred, sample_weight, mask, options, for_gradient=None, impl=None):
    """Sums from the chosen implementation, then ``reduction.loss_from_sums``.

    ``for_gradient``: whether a backward follows (None: ask the tapes, see
    ``custom_gradient.tape_records``). ``impl``: an implementation object to use
    instead of ``select``'s choice (benchmarks compare kernel variants this way).
    """
    if options["check_inputs"]:
        y_pred = _checked(y_true, y_pred, sample_weight, options)
    platform = compiled_platform(y_pred)  # once: the kernel and the reduction's sums
    if impl is None:
        impl = select(options["implementation"], y_true, y_pred, platform=platform)
    spec, weight_map, group_weight = reduction.sums_plan(y_true, sample_weight, mask, options)
    sums = impl.sums(y_true, y_pred, weight_map, spec, for_gradient)
    count = None
    replica = _replica_context() if options["cross_replica"] else None
    if replica is not None and not spec.per_image:
        sums = _all_reduced(replica, sums)
        # The count is exact in int64 (a replica's batch may hold more than 2^31
        # elements), reduced on its own: one all-reduce packs a single dtype.
        count = replica.all_reduce(tf.distribute.ReduceOp.SUM,
                                   tf.size(y_pred, out_type=tf.int64))
    return reduction.loss_from_sums(
        sums, y_true, y_pred, sample_weight, mask, group_weight, options, count=count,
        group_sums=xla.GROUP_SUMS[platform],
        replicas=tf.distribute.get_strategy().num_replicas_in_sync)


def _all_reduced(replica, sums):
    """The sums of every replica's batch, on every replica.

    A few scalars per replica. Here, between the compiled kernels and the scalar math,
    not inside a nested jit_compile function where tf.distribute cannot synchronize. Its
    gradient is again an all-reduce (sum) of the sums' cotangents, so every replica
    back-propagates the global IoU's gradient for its own pixels. Per-image sums need no
    all-reduce: Keras's batch mean already spans replicas.
    """
    return replica.all_reduce(tf.distribute.ReduceOp.SUM, sums)


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


def _graph_for(options, for_gradient, loss_fn=None):
    """One traced graph per loss, option set (and replica count, and whether a gradient
    tape records the call: the graph cannot see the caller's tapes), for eager callers.
    ``loss_fn``: ``fused_loss`` (default) or ``fused_multiclass_loss``."""
    loss_fn = loss_fn or fused_loss
    key = (loss_fn.__name__, tuple(sorted(options.items())),
           tf.distribute.get_strategy().num_replicas_in_sync, for_gradient)
    graph = _EAGER_GRAPHS.get(key)
    if graph is None:

        def loss_graph(y_true, y_pred, sample_weight, mask):
            return loss_fn(y_true, y_pred, sample_weight, mask, options, for_gradient)

        # Exact shapes, no relaxed retracing: Keras's mask and sample-weight
        # broadcasting needs known ranks.
        graph = _EAGER_GRAPHS[key] = tf.function(loss_graph)
    return graph


def compute(y_true, y_pred, sample_weight, mask, options, trace=True, impl=None):
    """``(implementation name, loss)``: the reduced loss (or the map for reduction "none").

    ``trace``: run eager calls as one cached graph (``_graph_for``). ``impl``: an
    implementation object instead of ``select``'s choice (see ``fused_loss``); traced
    in the caller's graph.
    """
    y_true, y_pred = as_inputs(y_true, y_pred, options["per_image"])
    if impl is not None:  # a caller's kernel variant runs in the caller's graph
        return impl.name, fused_loss(y_true, y_pred, sample_weight, mask, options, impl=impl)
    chosen = select(options["implementation"], y_true, y_pred)
    if trace and tf.executing_eagerly():
        # Eager dispatch costs tens of microseconds per op, and the loss's
        # bookkeeping (checks, reduction, scaling) is dozens of small ops, which
        # can cost more than the fused kernels. One graph call replaces them. The
        # implementation is chosen here, on the eager inputs, so that every
        # call (not only the first trace) is dispatched and recorded.
        graph = _graph_for(dict(options, implementation=chosen.name),
                           custom_gradient.tape_records(y_pred))
        return chosen.name, graph(y_true, y_pred, sample_weight, mask)
    return chosen.name, fused_loss(y_true, y_pred, sample_weight, mask, options, impl=chosen)



# ---- The multi-class loss (``_multiclass``): the same layers, (G, C, 3) sums. ----

def as_multiclass_inputs(y_true, y_pred, sparse):
    """Tensors with checked dtypes; y_pred keeps its dtype (no up-cast). Shapes are
    checked with the options (``reduction.multiclass_plan``)."""
    y_pred = tf.convert_to_tensor(y_pred)
    if not y_pred.dtype.is_floating:
        raise TypeError(
            "y_pred must be a floating tensor of probabilities or logits (float16, "
            f"bfloat16, float32 or float64), got dtype {y_pred.dtype.name}.")
    y_true = tf.convert_to_tensor(y_true)
    if sparse and not (y_true.dtype.is_integer or y_true.dtype.is_floating):
        raise TypeError("y_true must hold integer class ids (sparse_y_true=True), got "
                        f"dtype {y_true.dtype.name}.")
    if not (y_true.dtype.is_floating or y_true.dtype.is_integer or y_true.dtype == tf.bool):
        raise TypeError(
            f"y_true must be a float, integer or bool tensor, got dtype {y_true.dtype.name}.")
    if y_pred.shape.rank is None:
        raise ValueError("y_pred must have a known rank (B, ..., C) for MultiClassIoULoss.")
    return y_true, y_pred


def _checked_multiclass(labels, y_pred, sample_weight, spec):
    """``check_inputs=True`` for the multi-class loss (see ``_checked``)."""
    checks = []
    if spec.sparse:
        ids = tf.cast(labels, tf.int64)
        valid = (ids >= 0) & (ids < spec.num_classes)
        if spec.ignore_class is not None:
            valid = valid | tf.equal(ids, spec.ignore_class)
        checks.append(tf.debugging.assert_equal(
            tf.reduce_all(valid), True,
            message=f"y_true holds class ids outside [0, {spec.num_classes}) that are not "
                    "ignore_class (sparse_y_true=True)"))
        if labels.dtype.is_floating:
            checks.append(tf.debugging.assert_equal(
                tf.reduce_all(tf.equal(tf.cast(ids, labels.dtype), labels)), True,
                message="y_true must hold whole class ids (sparse_y_true=True)"))
    else:
        checks += _unit_label_checks(labels)
    checks += _prediction_and_weight_checks(y_pred, sample_weight, spec.from_logits)
    with tf.control_dependencies(checks):
        return tf.identity(y_pred)


def fused_multiclass_loss(y_true, y_pred, sample_weight, mask, options, for_gradient=None,
                          impl=None):
    """The multi-class loss: the chosen kernel's (G, C, 3) sums, then Keras's reduction."""
    spec, labels, weight_map, group_weight = reduction.multiclass_plan(
        y_true, y_pred, sample_weight, mask, options)
    if options["check_inputs"]:
        y_pred = _checked_multiclass(labels, y_pred, sample_weight, spec)
    if impl is None:
        impl = select(options["implementation"], labels, y_pred, MULTICLASS_IMPLEMENTATIONS,
                      native.supports_multiclass)
    sums = impl.sums(labels, y_pred, weight_map, spec, for_gradient)
    replica = _replica_context() if options["cross_replica"] else None
    if replica is not None and not spec.per_image:
        sums = _all_reduced(replica, sums)
    return reduction.multiclass_loss_from_sums(
        sums, spec, group_weight, options,
        replicas=tf.distribute.get_strategy().num_replicas_in_sync)


def compute_multiclass(y_true, y_pred, sample_weight, mask, options, trace=True, impl=None):
    """``(implementation name, loss)`` of the multi-class loss (see ``compute``)."""
    y_true, y_pred = as_multiclass_inputs(y_true, y_pred, options["sparse_y_true"])
    if impl is not None:
        return impl.name, fused_multiclass_loss(y_true, y_pred, sample_weight, mask, options,
                                                impl=impl)
    chosen = select(options["implementation"], y_true, y_pred, MULTICLASS_IMPLEMENTATIONS,
                    native.supports_multiclass)
    if trace and tf.executing_eagerly():
        graph = _graph_for(dict(options, implementation=chosen.name),
                           custom_gradient.tape_records(y_pred), fused_multiclass_loss)
        return chosen.name, graph(y_true, y_pred, sample_weight, mask)
    return chosen.name, fused_multiclass_loss(y_true, y_pred, sample_weight, mask, options,
                                              impl=chosen)
