"""The one piece of Keras that has no public API: the mask a masking layer attaches to
its output. Keras 3 reads it with the private ``keras.src.backend.get_keras_mask``; where
that moves or goes, the tensor attribute Keras sets on TensorFlow and PyTorch tensors is
read instead (``tests/test_modes.py`` tests both paths)."""


def get_keras_mask(x):
    """The Keras mask of ``x`` (0/1, set by a Masking or Embedding(mask_zero) layer), or None."""
    try:
        from keras.src.backend import get_keras_mask as keras_get_mask
    except ImportError:
        return getattr(x, "_keras_mask", None)
    return keras_get_mask(x)
