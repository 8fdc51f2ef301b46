"""Input checks in ``keras.ops``, for the backends without a framework of their own here
(Keras on JAX, PyTorch, NumPy). TensorFlow's checks run as graph assertions instead
(``_backends.tensorflow``)."""

import keras
from keras import ops


def as_inputs(y_true, y_pred, per_image=False):
    """Tensors of the backend with checked dtypes and shapes; y_pred keeps its dtype."""
    y_pred = ops.convert_to_tensor(y_pred)
    pred_dtype = keras.backend.standardize_dtype(y_pred.dtype)
    if not pred_dtype.startswith(("float", "bfloat")):
        raise TypeError(
            "y_pred must be a floating tensor of probabilities "
            f"(float16, bfloat16, float32 or float64), got dtype {pred_dtype}.")
    y_true = ops.convert_to_tensor(y_true)
    true_dtype = keras.backend.standardize_dtype(y_true.dtype)
    if not true_dtype.startswith(("float", "bfloat", "int", "uint", "bool")):
        raise TypeError(f"y_true must be a float, integer or bool tensor, got dtype "
                        f"{true_dtype}.")
    true_shape, pred_shape = tuple(ops.shape(y_true)), tuple(ops.shape(y_pred))
    if true_shape != pred_shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape, got y_true.shape={true_shape} "
            f"and y_pred.shape={pred_shape}. (A mask of shape (B, H, W) for predictions "
            "of shape (B, H, W, 1) needs y_true[..., None].)")
    if per_image and len(pred_shape) < 2:
        raise ValueError(
            "per_image=True needs a batch axis and at least one more: y_pred must have "
            f"rank >= 2, got y_pred.shape={pred_shape}.")
    return y_true, y_pred


def _all(condition):
    return bool(ops.convert_to_numpy(ops.all(condition)))


def check_values(y_true, y_pred, sample_weight, options):
    """``check_inputs=True``: the values, on the host; they must be concrete (eager)."""
    _check_unit_labels(y_true)
    _check_predictions_and_weights(y_pred, sample_weight, options["from_logits"])


def _check_unit_labels(y_true):
    y = ops.cast(y_true, "float32")
    if not _all(ops.logical_and(y >= 0, y <= 1)):
        raise ValueError("y_true must be in [0, 1] (check_inputs=True).")


def _check_predictions_and_weights(y_pred, sample_weight, from_logits):
    """Logits finite, or probabilities in [0, 1]; sample weights finite and >= 0."""
    if from_logits:
        if not _all(ops.isfinite(y_pred)):
            raise ValueError("y_pred (logits) must be finite (check_inputs=True).")
    elif not _all(ops.logical_and(y_pred >= 0, y_pred <= 1)):
        raise ValueError("y_pred must be probabilities in [0, 1] (from_logits=False; "
                         "check_inputs=True).")
    if sample_weight is not None:
        weight = ops.cast(sample_weight, "float32")
        if not _all(ops.logical_and(ops.isfinite(weight), weight >= 0)):
            raise ValueError("sample_weight must be finite and >= 0 (check_inputs=True).")


def as_multiclass_inputs(y_true, y_pred, sparse):
    """The multi-class loss's tensors with checked dtypes (shapes are checked by
    ``reduction.multiclass_plan``)."""
    y_pred = ops.convert_to_tensor(y_pred)
    pred_dtype = keras.backend.standardize_dtype(y_pred.dtype)
    if not pred_dtype.startswith(("float", "bfloat")):
        raise TypeError(
            "y_pred must be a floating tensor of probabilities or logits (float16, "
            f"bfloat16, float32 or float64), got dtype {pred_dtype}.")
    y_true = ops.convert_to_tensor(y_true)
    true_dtype = keras.backend.standardize_dtype(y_true.dtype)
    allowed = ("float", "bfloat", "int", "uint") + (() if sparse else ("bool",))
    if not true_dtype.startswith(allowed):
        raise TypeError(f"y_true must be a {'class id' if sparse else 'float, integer or bool'} "
                        f"tensor, got dtype {true_dtype}.")
    return y_true, y_pred


def check_multiclass_values(labels, y_pred, sample_weight, spec):
    """``check_inputs=True`` for the multi-class loss, on the host (concrete arrays)."""
    if spec.sparse:
        ids = ops.cast(labels, "int64")
        valid = ops.logical_and(ids >= 0, ids < spec.num_classes)
        if spec.ignore_class is not None:
            valid = ops.logical_or(valid, ids == spec.ignore_class)
        if not _all(valid):
            raise ValueError(f"y_true holds class ids outside [0, {spec.num_classes}) that "
                             "are not ignore_class (sparse_y_true=True; check_inputs=True).")
    else:
        _check_unit_labels(labels)
    _check_predictions_and_weights(y_pred, sample_weight, spec.from_logits)
