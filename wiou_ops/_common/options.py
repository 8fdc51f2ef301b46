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
    epsilon = given["epsilon"]
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(f"epsilon must be a real number, got {epsilon!r}.")
    if not (0 < float(epsilon) < 0.5):
        raise ValueError(f"epsilon must be in (0, 0.5), got {epsilon!r}.")
    options["epsilon"] = float(epsilon)
    options["weighting"] = check_choice("weighting", given["weighting"], WEIGHTINGS)
    options["implementation"] = check_choice("implementation", given["implementation"],
                                             IMPLEMENTATIONS)
    options["reduction"] = check_choice("reduction", given["reduction"], REDUCTIONS)
    return options
