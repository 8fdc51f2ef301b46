"""The timed variants: the seed class (eager, tf.function, jit_compile) and every
wiou_ops implementation, forward or forward+backward. Shared by wiou-bench and
the pytest-benchmark suites in benchmarks/."""

PASSES = ("forward", "forward+backward")
SEED_VARIANTS = ("seed eager", "seed tf.function", "seed jit_compile")
WEIGHTS = (0.5, 1.5)


def variant_names(implementations):
    return list(SEED_VARIANTS) + [f"wiou_ops {impl} tf.function" for impl in implementations] + [
        "wiou_ops auto eager"]


def build(name, pass_name):
    """A function (y_true, y_pred) -> (loss, ...) for the variant and pass."""
    import tensorflow as tf

    import wiou_ops

    if pass_name not in PASSES:
        raise ValueError(f"pass must be one of {PASSES}, got {pass_name!r}")
    if name.startswith("seed"):
        seed = wiou_ops.SeedWeightedIoULoss(*WEIGHTS)

        def loss_fn(y_true, y_pred):  # what Keras does before the seed's call()
            return seed(tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32))
    else:
        impl = name.split()[1]
        loss_fn = wiou_ops.WeightedIoULoss(*WEIGHTS, implementation=impl)

    if pass_name == "forward":
        def run(y_true, y_pred):
            return (loss_fn(y_true, y_pred),)
    else:
        def run(y_true, y_pred):
            with tf.GradientTape() as tape:
                tape.watch(y_pred)
                loss = loss_fn(y_true, y_pred)
            return loss, tape.gradient(loss, y_pred)

    if name.endswith("tf.function"):
        return tf.function(run)
    if name.endswith("jit_compile"):
        return tf.function(run, jit_compile=True)
    return run


# What each option costs, timed against the default on the same inputs:
# name -> (WeightedIoULoss options, whether a per-pixel weight map is passed).
OPTION_SETS = {
    "seed (default)": ({}, False),
    "pixel": ({"weighting": "pixel"}, False),
    "pixel + weight map": ({"weighting": "pixel"}, True),
    "class": ({"weighting": "class"}, False),
    "class + weight map": ({"weighting": "class"}, True),
    "from_logits": ({"from_logits": True}, False),
    "per_image": ({"per_image": True}, False),
    "log=False": ({"log": False}, False),
}


def build_option(impl, option_set):
    """forward+backward in a tf.function: (y_true, y_pred, weight_map) -> (loss, grad)."""
    import tensorflow as tf

    import wiou_ops

    options, uses_map = OPTION_SETS[option_set]
    loss_fn = wiou_ops.WeightedIoULoss(*WEIGHTS, implementation=impl, **options)

    @tf.function
    def run(y_true, y_pred, weight_map):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = loss_fn(y_true, y_pred, sample_weight=weight_map if uses_map else None)
        return loss, tape.gradient(loss, y_pred)

    return run


def build_native(write_masks):
    """forward+backward of the default loss on the native kernel, in a tf.function, with
    (``write_masks=True``, as shipped) or without the 2-bit label masks for the backward:
    (y_true, y_pred) -> (loss, grad). The kernel variant is passed as an argument to the
    TensorFlow backend; nothing in the library is changed."""
    import tensorflow as tf

    from wiou_ops._backends import tensorflow as tf_backend
    from wiou_ops._common.options import validate_options
    from wiou_ops._kernels import native

    kernel = native.variant(write_masks)
    options = validate_options(weight_background=WEIGHTS[0], weight_foreground=WEIGHTS[1])

    @tf.function
    def run(y_true, y_pred):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = tf_backend.compute(y_true, y_pred, None, None, options, impl=kernel)[1]
        return loss, tape.gradient(loss, y_pred)

    return run


def make_inputs(shape, pred_dtype, true_dtype, seed=0):
    """Synthetic inputs: 5 % foreground labels, uniform predictions."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    y_true = tf.cast(tf.constant(rng.random(shape, dtype=np.float32) < 0.05), true_dtype)
    y_pred = tf.cast(tf.constant(rng.random(shape, dtype=np.float32)), pred_dtype)
    return y_true, y_pred
