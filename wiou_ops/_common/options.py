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


def validate_options(
    *,
    weight_background=1.0,
    weight_foreground=1.0,
    epsilon=1e-7,
    weighting="seed",
    per_image=False,
    from_logits=False,
    log=True,
    cross_replica=False,
    check_inputs=False,
    implementation="auto",
    reduction="sum_over_batch_size",
):
    """Checks every option of ``WeightedIoULoss``; returns them as a dict of plain values."""
    options = dict(
        weight_background=check_weight("weight_background", weight_background),
        weight_foreground=check_weight("weight_foreground", weight_foreground),
        per_image=check_bool("per_image", per_image),
        from_logits=check_bool("from_logits", from_logits),
        log=check_bool("log", log),
        cross_replica=check_bool("cross_replica", cross_replica),
        check_inputs=check_bool("check_inputs", check_inputs),
    )
    if options["weight_background"] == 0 and options["weight_foreground"] == 0:
        raise ValueError("weight_background and weight_foreground cannot both be 0.")
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(f"epsilon must be a real number, got {epsilon!r}.")
    if not (0 < float(epsilon) < 0.5):
        raise ValueError(f"epsilon must be in (0, 0.5), got {epsilon!r}.")
    options["epsilon"] = float(epsilon)
    options["weighting"] = check_choice("weighting", weighting, WEIGHTINGS)
    options["implementation"] = check_choice("implementation", implementation, IMPLEMENTATIONS)
    options["reduction"] = check_choice("reduction", reduction, REDUCTIONS)
    return options
