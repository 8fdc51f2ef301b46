"""The backend router: sends each call to the module of the running Keras backend.

TensorFlow -> ``_backends.tensorflow`` (it alone chooses among ``native``, ``xla``
and ``graph``); JAX -> ``_backends.jax``; any other backend (PyTorch, NumPy) ->
``_backends.ops``. A backend module is imported on first use, so a JAX-only or
PyTorch-only machine never imports TensorFlow. Also records which implementation
the latest call used (``last_implementation``), so tests and users can check the
dispatch.
"""

import keras

_last = None


def backend_module():
    """The module that computes the loss on the current Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from wiou_ops._backends import tensorflow as module
    elif backend == "jax":
        from wiou_ops._backends import jax as module
    else:  # PyTorch, NumPy, and any later backend: keras.ops
        from wiou_ops._backends import ops as module
    return module


if keras.backend.backend() == "tensorflow":
    backend_module()  # loads the native op now: its warning, if any, comes at import


def available_implementations():
    """Names usable in this process for the current Keras backend, e.g. ['native', 'xla', 'graph']."""
    return backend_module().available()


def last_implementation():
    """Name of the implementation chosen by the latest call or trace, or None."""
    return _last


def compute(y_true, y_pred, sample_weight, mask, options, trace=True):
    """The loss on the current Keras backend (options from ``_common.options``)."""
    global _last
    _last, loss = backend_module().compute(y_true, y_pred, sample_weight, mask, options,
                                           trace=trace)
    return loss


def compute_multiclass(y_true, y_pred, sample_weight, mask, options, trace=True):
    """The multi-class loss on the current Keras backend (options from
    ``_common.options.validate_multiclass_options``)."""
    global _last
    _last, loss = backend_module().compute_multiclass(y_true, y_pred, sample_weight, mask,
                                                      options, trace=trace)
    return loss
