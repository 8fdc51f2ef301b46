"""The loss's options, checked once for every backend (plain Python: no Keras, no arrays).

Each check raises ``TypeError``/``ValueError`` naming the argument.
"""

import math
import numbers

WEIGHTINGS = ("seed", "pixel", "class")
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)
# "auto" lets the backend choose; the others name TensorFlow implementations.
IMPLEMENTATIONS = ("auto", "xla", "native", "graph")


def check_weight(name, value):
    """A finite, non-negative real number, as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}.")
    return value


def check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return value


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"Unknown {name}={value!r}; expected one of {choices}.")
    return value


# Every option of WeightedIoULoss (its signature shows them to users) with its default.
DEFAULTS = dict(
    weight_background=1.0, weight_foreground=1.0, epsilon=1e-7, weighting="seed",
    per_image=False, from_logits=False, log=True, cross_replica=False, check_inputs=False,
    implementation="auto", reduction="sum_over_batch_size")


def validate_options(**given):
    """Checks every option of ``WeightedIoULoss`` (missing ones take ``DEFAULTS``);
    returns them as a dict of plain values."""
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"Unknown option(s) {', '.join(unknown)}; expected some of "
                        f"{', '.join(DEFAULTS)}.")
    given = {**DEFAULTS, **given}
    options = {name: check_weight(name, given[name])
               for name in ("weight_background", "weight_foreground")}
    options.update({name: check_bool(name, given[name]) for name in (
        "per_image", "from_logits", "log", "cross_replica", "check_inputs")})
    if options["weight_background"] == 0 and options["weight_foreground"] == 0:
        raise ValueError("weight_background and weight_foreground cannot both be 0.")
    options["epsilon"] = check_epsilon(given["epsilon"])
    options["weighting"] = check_choice("weighting", given["weighting"], WEIGHTINGS)
    options["implementation"] = check_choice("implementation", given["implementation"],
                                             IMPLEMENTATIONS)
    options["reduction"] = check_choice("reduction", given["reduction"], REDUCTIONS)
    return options


# Every option of MultiClassIoULoss with its default.
MULTICLASS_DEFAULTS = dict(
    class_weights=None, epsilon=1e-7, sparse_y_true=False, ignore_class=None,
    multi_label=False, from_logits=False, per_image=False, log=True, absent_classes="include",
    cross_replica=False, check_inputs=False, implementation="auto",
    reduction="sum_over_batch_size")
ABSENT_CLASSES = ("include", "skip")


def check_epsilon(epsilon):
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(f"epsilon must be a real number, got {epsilon!r}.")
    if not (0 < float(epsilon) < 0.5):
        raise ValueError(f"epsilon must be in (0, 0.5), got {epsilon!r}.")
    return float(epsilon)


def check_class_weights(class_weights):
    """None, or a tuple of C >= 1 finite non-negative floats, not all 0."""
    if class_weights is None:
        return None
    if isinstance(class_weights, (str, bytes)) or not hasattr(class_weights, "__len__"):
        raise TypeError(f"class_weights must be a sequence of numbers (one per class) or "
                        f"None, got {class_weights!r}.")
    weights = tuple(check_weight(f"class_weights[{c}]", w)
                    for c, w in enumerate(list(class_weights)))
    if not weights:
        raise ValueError("class_weights must hold one weight per class, got an empty "
                         "sequence.")
    if not any(weights):
        raise ValueError("class_weights cannot all be 0: no class would count.")
    return weights


def validate_multiclass_options(**given):
    """Checks every option of ``MultiClassIoULoss`` (missing ones take
    ``MULTICLASS_DEFAULTS``); returns them as a dict of plain values. What depends on the
    number of classes C (y_pred's last axis) is checked at the call (``num_classes_for``)."""
    unknown = sorted(set(given) - set(MULTICLASS_DEFAULTS))
    if unknown:
        raise TypeError(f"Unknown option(s) {', '.join(unknown)}; expected some of "
                        f"{', '.join(MULTICLASS_DEFAULTS)}.")
    given = {**MULTICLASS_DEFAULTS, **given}
    options = {name: check_bool(name, given[name]) for name in (
        "sparse_y_true", "multi_label", "from_logits", "per_image", "log", "cross_replica",
        "check_inputs")}
    options["class_weights"] = check_class_weights(given["class_weights"])
    options["epsilon"] = check_epsilon(given["epsilon"])
    ignore = given["ignore_class"]
    if ignore is not None:
        if isinstance(ignore, bool) or not isinstance(ignore, numbers.Integral):
            raise TypeError(f"ignore_class must be an integer class id or None, got "
                            f"{ignore!r}.")
        if ignore < 0:
            raise ValueError(f"ignore_class must be >= 0, got {ignore!r}.")
        ignore = int(ignore)
    options["ignore_class"] = ignore
    if options["sparse_y_true"] and options["multi_label"]:
        raise ValueError("sparse_y_true=True holds one class id per pixel, which cannot "
                         "describe multi_label=True (several classes per pixel): give "
                         "y_true one channel per class.")
    weights = options["class_weights"]
    if weights is not None and len(weights) < 2 and not options["multi_label"]:
        raise ValueError(f"class_weights has {len(weights)} entry: a softmax over one class "
                         "is constant; use at least 2 classes, or multi_label=True.")
    options["absent_classes"] = check_choice("absent_classes", given["absent_classes"],
                                             ABSENT_CLASSES)
    options["implementation"] = check_choice("implementation", given["implementation"],
                                             IMPLEMENTATIONS)
    options["reduction"] = check_choice("reduction", given["reduction"], REDUCTIONS)
    return options


def num_classes_for(options, pred_shape):
    """C from y_pred's static last axis, checked against the options (ValueError naming
    the argument)."""
    if len(pred_shape) < 2 or pred_shape[-1] is None:
        raise ValueError(
            "y_pred must have a batch axis and a static class axis last, shape "
            f"(B, ..., C); got y_pred.shape={tuple(pred_shape)}.")
    classes = int(pred_shape[-1])
    weights = options["class_weights"]
    if weights is not None and len(weights) != classes:
        raise ValueError(f"class_weights has {len(weights)} entries but y_pred has "
                         f"{classes} classes (its last axis).")
    if classes < 2 and not options["multi_label"]:
        raise ValueError(f"y_pred has {classes} class channel: a softmax over one class is "
                         "constant; use WeightedIoULoss for binary masks, or "
                         "multi_label=True.")
    ignore = options["ignore_class"]
    if ignore is not None and not options["sparse_y_true"] and ignore >= classes:
        raise ValueError(f"ignore_class={ignore} is not a channel of y_true (C={classes}); "
                         "with one-hot labels it must name one, with sparse_y_true any id "
                         "works.")
    return classes
