"""A small Keras model and its training, backend-neutral (imports no TensorFlow): the
training-parity checks of the subprocess scripts that run Keras on JAX or PyTorch."""

import keras
import numpy as np


def small_model():
    """16x16x3 tiles -> one sigmoid channel: a 3x3 tanh convolution, then a 1x1 one."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))


def initial_weights(seed=1):
    keras.utils.set_random_seed(seed)
    return small_model().get_weights()


def fit(loss, init, x, y, *, learning_rate=1.0, batch_size=8, epochs=1):
    """``(loss history, weights)`` after SGD from ``init``, batches in order."""
    model = small_model()
    model.set_weights(init)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=loss)
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return history.history["loss"], model.get_weights()


def max_abs_diff(weights_a, weights_b):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(weights_a, weights_b))
