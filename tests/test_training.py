"""model.fit parity with the seed class, and saving/loading a compiled model."""

import keras
import numpy as np
import pytest

import wiou_ops
from tests import helpers

STEPS, BATCH = 5, 8


def _segmentation_model():
    inputs = keras.Input((16, 16, 3))
    # tanh, not relu: a smooth model, so float32 rounding differences of one ulp
    # cannot flip a relu unit and grow into a spurious mismatch.
    x = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")(inputs)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def _masked_sequence_model():
    inputs = keras.Input((12, 3))
    x = keras.layers.Masking(0.0)(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def _data(kind):
    rng = np.random.default_rng(0)
    n = STEPS * BATCH
    if kind == "sequence":
        x = rng.normal(size=(n, 12, 3)).astype("float32")
        x[:, 8:] = 0.0  # masked time steps
        y = (rng.random((n, 12, 1)) < 0.2).astype("float32")
        return x, y, None
    x = rng.normal(size=(n, 16, 16, 3)).astype("float32")
    y = (rng.random((n, 16, 16, 1)) < 0.05).astype("float32")
    if kind == "pixel_weights":
        return x, y, rng.uniform(0.0, 2.0, (n, 16, 16, 1)).astype("float32")
    return x, y, None


def _train(make_model, loss, data, jit_compile, initial_weights):
    model = make_model()
    model.set_weights(initial_weights)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss, jit_compile=jit_compile)
    x, y, sample_weight = data
    history = model.fit(x, y, sample_weight=sample_weight, batch_size=BATCH, epochs=1,
                        shuffle=False, verbose=0)
    return model.get_weights(), history.history["loss"]


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("kind", ["plain", "pixel_weights", "sequence"])
def test_training_matches_seed(jit_compile, kind):
    make_model = _masked_sequence_model if kind == "sequence" else _segmentation_model
    keras.utils.set_random_seed(1)
    initial = make_model().get_weights()
    data = _data(kind)
    seed_weights, seed_loss = _train(
        make_model, wiou_ops.SeedWeightedIoULoss(0.5, 1.5), data, jit_compile, initial)
    ours_weights, ours_loss = _train(
        make_model, wiou_ops.WeightedIoULoss(0.5, 1.5), data, jit_compile, initial)
    assert wiou_ops.last_implementation() == helpers.expected_auto(in_xla=jit_compile)
    np.testing.assert_allclose(ours_loss, seed_loss, rtol=1e-5)
    moved = max(np.max(np.abs(w - w0)) for w, w0 in zip(seed_weights, initial))
    assert moved > 1e-3, "training did not move the weights: the parity check would be empty"
    for ours, seed in zip(ours_weights, seed_weights):
        np.testing.assert_allclose(ours, seed, rtol=0, atol=1e-5)


def test_saved_model_loads_and_keeps_training(tmp_path):
    keras.utils.set_random_seed(2)
    model = _segmentation_model()
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=wiou_ops.WeightedIoULoss(0.25, 3.0, epsilon=1e-6))
    x, y, _ = _data("plain")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.loss, wiou_ops.WeightedIoULoss)
    assert loaded.loss.get_config() == model.loss.get_config()
    assert loaded.loss.weight_foreground == 3.0 and loaded.loss.epsilon == 1e-6
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    before = loaded.evaluate(x, y, batch_size=BATCH, verbose=0)
    loaded.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    after = loaded.evaluate(x, y, batch_size=BATCH, verbose=0)
    assert np.isfinite(after) and after < before


def test_config_round_trip():
    loss = wiou_ops.WeightedIoULoss(0.5, 2.0, 1e-5, reduction="sum", name="roads")
    clone = wiou_ops.WeightedIoULoss.from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    assert clone.name == "roads" and clone.reduction == "sum"
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, wiou_ops.WeightedIoULoss)
    assert restored.get_config() == loss.get_config()
    seed = wiou_ops.SeedWeightedIoULoss(0.5, 2.0)
    seed_clone = keras.losses.deserialize(keras.losses.serialize(seed))
    assert seed_clone.get_config() == seed.get_config()
