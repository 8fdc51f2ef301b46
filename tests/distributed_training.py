"""Training parity under tf.distribute, run in subprocesses by tests/test_distribute.py.

Logical CPU devices and multi-worker clusters must be set up before TensorFlow
starts, hence a script. Every run trains the same small model from the same
initial weights on the same global batches, once on one device (the
reference) and once under a strategy, and prints one JSON line: per loss
configuration, the largest differences of the per-step losses and of the
final weights against the reference.

    python -m tests.distributed_training --replicas 4            # MirroredStrategy
    TF_CONFIG=... python -m tests.distributed_training --multi-worker
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

GLOBAL_BATCH = 16
STEPS = 4
SHAPE = (16, 16, 3)
# name -> WeightedIoULoss options (without cross_replica); "seed class" is the seed.
LOSSES = {
    "seed": dict(weight_background=0.5, weight_foreground=1.5),
    "pixel": dict(weighting="pixel", weight_foreground=3.0),
    "class": dict(weighting="class", log=False),
    "class per_image": dict(weighting="class", per_image=True),
    # MultiClassIoULoss on the channels (1 - p, p) with one-hot labels (1 - y, y).
    "multiclass": dict(class_weights=[0.5, 2.0]),
}


def _configure_logical_cpus(count):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(GLOBAL_BATCH * STEPS,) + SHAPE).astype(np.float32)
    # Learnable ~10 % foreground, unevenly spread over the samples (replicas see
    # different foreground fractions, which is where per-replica IoUs differ).
    y = (x[..., :1] + 0.3 * x[..., 1:2] + np.linspace(-0.8, 0.8, len(x))[:, None, None, None]
         > 1.3).astype(np.float32)
    return x, y


def _model():
    import keras

    inputs = keras.Input(SHAPE)
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(hidden))


def _loss(name, cross_replica):
    import wiou_ops

    if name == "seed class":
        return wiou_ops.SeedWeightedIoULoss(**LOSSES["seed"])
    if name == "multiclass":
        return _two_channel(wiou_ops.MultiClassIoULoss(**LOSSES[name],
                                                       cross_replica=cross_replica))
    return wiou_ops.WeightedIoULoss(**LOSSES[name], cross_replica=cross_replica)


def _two_channel(loss):
    """A Keras loss that feeds the model's one sigmoid channel to ``loss`` as two classes.

    ``__call__`` is the wrapped loss's own (Keras's reduction and replica scaling
    included), so nothing is scaled twice."""
    import keras
    from keras import ops

    class TwoChannel(keras.losses.Loss):
        def __call__(self, y_true, y_pred, sample_weight=None):
            y_true = ops.cast(y_true, y_pred.dtype)
            return loss(ops.concatenate([1.0 - y_true, y_true], axis=-1),
                        ops.concatenate([1.0 - y_pred, y_pred], axis=-1), sample_weight)

    return TwoChannel(name="two_channel_" + loss.name)


def train_loop(strategy, loss_fn, initial_weights):
    """Custom loop: every replica takes its slice of the global batch by replica id.

    Returns (per-step losses as Keras reports them, final weights).
    """
    import keras
    import numpy as np
    import tensorflow as tf

    x, y = _data()
    with strategy.scope():
        model = _model()
        model.set_weights(initial_weights)
        optimizer = keras.optimizers.SGD(0.5)
        optimizer.build(model.trainable_variables)

    @tf.function
    def step(x_global, y_global):
        def replica_fn(xb, yb):
            context = tf.distribute.get_replica_context()
            replicas = context.num_replicas_in_sync
            index = context.replica_id_in_sync_group
            xb = tf.reshape(xb, (replicas, -1) + SHAPE)[index]
            yb = tf.reshape(yb, (replicas, -1) + SHAPE[:2] + (1,))[index]
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return loss

        per_replica = strategy.run(replica_fn, args=(x_global, y_global))
        # Each replica's loss is scaled by 1/replicas (as in Keras): their sum is the loss.
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    losses = []
    for k in range(STEPS):
        batch = slice(k * GLOBAL_BATCH, (k + 1) * GLOBAL_BATCH)
        losses.append(float(step(tf.constant(x[batch]), tf.constant(y[batch]))))
    return losses, [np.asarray(w) for w in model.get_weights()]


def train_fit(strategy, loss_fn, initial_weights):
    """model.fit on the global batches (Keras splits each among the replicas)."""
    import keras
    import numpy as np

    x, y = _data()
    with strategy.scope():
        model = _model()
        model.set_weights(initial_weights)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss_fn)
    history = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0,
                        steps_per_epoch=STEPS)
    return history.history["loss"], [np.asarray(w) for w in model.get_weights()]


def _compare(run, reference):
    import numpy as np

    losses, weights = run
    ref_losses, ref_weights = reference
    loss_diff = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
    weight_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, ref_weights))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(ref_weights, _initial()))
    return {"loss_rel_diff": loss_diff, "weight_max_diff": weight_diff, "reference_moved": moved}


_INITIAL = []


def _initial():
    if not _INITIAL:
        import keras

        keras.utils.set_random_seed(1)
        _INITIAL.extend(_model().get_weights())
    return _INITIAL


def run_all(strategy, trainers):
    """Every loss configuration, cross_replica True and False, against one device."""
    import tensorflow as tf

    default = tf.distribute.get_strategy()
    out = {"replicas": strategy.num_replicas_in_sync}
    for trainer in trainers:
        train = {"loop": train_loop, "fit": train_fit}[trainer]
        for name in list(LOSSES) + ["seed class"]:
            reference = train(default, _loss(name, True), _initial())
            for cross_replica in ((True, False) if name != "seed class" else (False,)):
                run = train(strategy, _loss(name, cross_replica), _initial())
                key = f"{trainer}|{name}|cross_replica={cross_replica}"
                out[key] = _compare(run, reference)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--multi-worker", action="store_true")
    parser.add_argument("--trainers", nargs="+", default=["loop", "fit"])
    args = parser.parse_args(argv)
    if args.multi_worker:
        import tensorflow as tf

        # Created first, as TensorFlow asks for multi-worker strategies.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        _configure_logical_cpus(args.replicas)
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(
            [f"/cpu:{i}" for i in range(args.replicas)])
    print(json.dumps(run_all(strategy, args.trainers)), flush=True)


if __name__ == "__main__":
    main()
