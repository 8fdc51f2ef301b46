"""TensorFlow's programs of the loss for TPU and GPU, as HLO for the deviceless report.

Run with TensorFlow (the Makefile's ``.venv``); ``report.py --tensorflow DIR`` (in
``.venv-aot``, which has no TensorFlow) compiles what this writes::

    python benchmarks/aot/tensorflow_programs.py --out DIR [--cases all|quick|test]
        [--chips 8]

For each case (``cases.py``) and platform (``tpu``, ``gpu``): forward+backward (the
gradient w.r.t. y_pred) of the Keras loss on the TensorFlow backend, for one chip's shard
of the batch, traced in ``tf.function(jit_compile=True)`` as a user's training step. The
step makes its inputs on that platform's device (``tf.device``, which needs no device to
trace), so the loss compiles its TPU or GPU program as it does under a TPUStrategy or on
a GPU. TensorFlow's HLO of it, ``experimental_get_compiler_ir(...)(stage=
"hlo_serialized")`` (an HloModuleProto), is written to ``DIR/<platform>/<case>.pb``.
Under a TPUStrategy the sums would also be all-reduced across replicas (a few scalars);
this is one replica's program.
"""

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import cases as grid  # noqa: E402

DEVICES = {"tpu": "/device:TPU:0", "gpu": "/device:GPU:0"}


def loss_object(case):
    """The Keras loss of ``case``, with the options of report.py's ``wiou_ops.jax`` calls."""
    import wiou_ops

    if case.classes is None:
        return wiou_ops.WeightedIoULoss(
            weight_background=0.5, weight_foreground=1.5, weighting=case.weighting,
            per_image=case.per_image, from_logits=case.from_logits)
    return wiou_ops.MultiClassIoULoss(
        sparse_y_true=case.sparse, multi_label=case.multi_label,
        from_logits=case.from_logits, per_image=case.per_image)


def program(case, platform, chips):
    """The serialized HloModuleProto of one chip's training step of ``case``."""
    import tensorflow as tf

    loss = loss_object(case)

    @tf.function(jit_compile=True)
    def step(y_true, y_pred, *weights):
        with tf.device(DEVICES[platform]):
            # As a model's output is: made on the device, inside the step.
            y_true, y_pred = tf.identity(y_true), tf.identity(y_pred)
            with tf.GradientTape() as tape:
                tape.watch(y_pred)
                value = loss(y_true, y_pred, sample_weight=weights[0] if weights else None)
            return value, tape.gradient(value, y_pred)

    specs = [tf.TensorSpec(shape, dtype) for shape, dtype in grid.local_shapes(case, chips)]
    return step.experimental_get_compiler_ir(*specs)(stage="hlo_serialized")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", choices=("quick", "test", "all"), default="all")
    parser.add_argument("--chips", type=int, default=8,
                        help="the batch is split over this many chips (8: report.py's targets)")
    args = parser.parse_args(argv)
    for platform in DEVICES:
        folder = pathlib.Path(args.out) / platform
        folder.mkdir(parents=True, exist_ok=True)
        for case in grid.cases(args.cases):
            (folder / f"{case.slug}.pb").write_bytes(program(case, platform, args.chips))
            print(f"{platform} {case.name}", flush=True)


if __name__ == "__main__":
    main()
