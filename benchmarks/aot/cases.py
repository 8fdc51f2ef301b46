"""The cases of the deviceless report (``report.py``) and of the TensorFlow programs
(``tensorflow_programs.py``): shapes, dtypes and options. No JAX, no TensorFlow.
"""

import dataclasses

BINARY_SHAPE = (1024, 512, 512, 1)
MULTICLASS_SHAPE = (64, 512, 512)
DTYPE_PAIRS = (("float32", "float32"), ("float32", "uint8"), ("bfloat16", "float32"),
               ("bfloat16", "uint8"))


@dataclasses.dataclass(frozen=True)
class Case:
    """One loss configuration: the binary loss (``classes`` None) or the multi-class one."""

    pred: str
    true: str
    weighting: str = "seed"
    per_image: bool = False
    from_logits: bool = False
    weight_map: bool = False
    classes: int = None
    sparse: bool = True
    multi_label: bool = False

    @property
    def name(self):
        if self.classes is None:
            parts = [self.weighting]
            parts += ["per_image"] * self.per_image + ["from_logits"] * self.from_logits
            parts += ["weight map"] * self.weight_map
        else:
            parts = [f"C={self.classes}", "sigmoid" if self.multi_label else "softmax",
                     "ids" if self.sparse else "one-hot"]
        return " ".join(parts) + f", {self.pred}/{self.true}"

    @property
    def jax_api(self):
        """Whether ``wiou_ops.jax`` takes the case: it refuses a sample weight with seed
        weighting (Keras's reduction of the seed's map: the Keras loss's), so that case
        is TensorFlow's program alone."""
        return not (self.weighting == "seed" and self.weight_map and self.classes is None)

    @property
    def slug(self):
        """The name as a file name."""
        return "".join(c if c.isalnum() else "-" for c in self.name)

    def shapes(self):
        """[(global shape, dtype)] of (y_true, y_pred[, weight map])."""
        if self.classes is None:
            out = [(BINARY_SHAPE, self.true), (BINARY_SHAPE, self.pred)]
            return out + [(BINARY_SHAPE, "float32")] * self.weight_map
        logits = MULTICLASS_SHAPE + (self.classes,)
        return [(MULTICLASS_SHAPE if self.sparse else logits, self.true), (logits, self.pred)]


def local_shapes(case, chips):
    """[(shape, dtype)] of one chip's shard: the batch split over ``chips``."""
    return [((shape[0] // chips, *shape[1:]), dtype) for shape, dtype in case.shapes()]


def cases(which):
    """The cases of ``which``: "all", "quick" (three) or "test" (``TEST_CASES``)."""
    binary = [Case(p, t, weighting=w) for w in ("seed", "pixel", "class")
              for p, t in DTYPE_PAIRS]
    binary += [Case(p, t, weighting=w, **{option: True}) for w in ("seed", "pixel", "class")
               for option in ("per_image", "from_logits")
               for p, t in (("float32", "float32"), ("bfloat16", "uint8"))]
    binary += [Case("bfloat16", "uint8", weighting=w, weight_map=True) for w in ("pixel", "seed")]
    multi = [Case(p, "uint8" if sparse else "float32", classes=c, sparse=sparse,
                  multi_label=multi_label, from_logits=True)
             for c in (6, 19) for multi_label, sparse in ((False, True), (False, False),
                                                         (True, False))
             for p in ("float32", "bfloat16")]
    if which == "test":  # what `make test` compiles (tests/aot)
        return TEST_CASES
    if which == "quick":
        return [Case("bfloat16", "uint8"), Case("float32", "float32", weighting="pixel"),
                Case("bfloat16", "uint8", classes=19, from_logits=True)]
    return binary + multi


TEST_CASES = [
    Case("bfloat16", "uint8"), Case("float32", "float32"),
    Case("bfloat16", "float32", weighting="class", from_logits=True),
    Case("float32", "uint8", weighting="pixel", per_image=True),
    Case("bfloat16", "uint8", weighting="pixel", weight_map=True),
    Case("bfloat16", "uint8", weighting="seed", weight_map=True),
    Case("bfloat16", "uint8", weighting="pixel", from_logits=True),
    Case("bfloat16", "uint8", classes=19, from_logits=True),
    Case("bfloat16", "float32", classes=6, sparse=False, from_logits=True),
    Case("float32", "float32", classes=6, sparse=False, multi_label=True, from_logits=True)]
