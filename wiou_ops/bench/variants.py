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


def make_inputs(shape, pred_dtype, true_dtype, seed=0):
    """Synthetic inputs: 5 % foreground labels, uniform predictions."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    y_true = tf.cast(tf.constant(rng.random(shape, dtype=np.float32) < 0.05), true_dtype)
    y_pred = tf.cast(tf.constant(rng.random(shape, dtype=np.float32)), pred_dtype)
    return y_true, y_pred
