"""``python -m wiou_ops.bench.multiclass``: MultiClassIoULoss against the naive formula.

Forward+backward of the multi-class IoU loss on synthetic logits, every variant timed in
the same process, interleaved (``harness.interleaved_times``), after warm-up:

* ``naive tf.function`` / ``naive jit_compile``: the formula in ``keras.ops`` as users
  write it (softmax, one_hot, per-class sums, autodiff), in a ``tf.function`` without and
  with XLA;
* ``native``, ``xla``: ``wiou_ops.MultiClassIoULoss(implementation=...)`` in a
  ``tf.function``.

Also in the same run, for orientation: streaming read of the logits (the byte floor of
one pass), TensorFlow's own ``exp`` over them, and for float32 logits with uint8 ids the
native loops alone with and without the IoU terms (the loops' two bounds, ``bounds``).
Then the peak memory of each variant above its inputs, each in a fresh process
(``memory.resident_peak``), against the size of the gradient. Writes multiclass.json and multiclass.md into --out. ``wiou-bench
--multiclass`` runs it after the main report.
"""

import argparse
import datetime
import json
import os
import pathlib
import sys

import numpy as np

from wiou_ops.bench import harness

DEFAULT_SIZES = ["8x512x512x6", "8x512x512x19"]
# Rows timed for float32 logits with sparse uint8 ids: the native loops alone, with and
# without the IoU terms (wiou_ops._kernels.native.multiclass_loops).
LOOPS = "native loops alone: sums + gradient"
LOOPS_WITHOUT_IOU = "the same loops without the IoU terms"
ORIENTATION = ("read logits (byte floor)", "tf.exp of the logits", LOOPS, LOOPS_WITHOUT_IOU)
# (logits dtype, labels): sparse uint8 ids, or one-hot float32.
DEFAULT_CASES = [("float32", "sparse-uint8"), ("bfloat16", "sparse-uint8"),
                 ("float32", "onehot-float32")]


def naive_loss(y_true, logits, classes, sparse, epsilon=1e-7, class_weights=None):
    """The multi-class IoU in plain keras.ops, as users write it (softmax, one_hot,
    per-class sums, autodiff): what the benchmark and the fit-parity test compare with."""
    from keras import ops

    p = ops.softmax(ops.cast(logits, "float32"), axis=-1)
    y = ops.one_hot(ops.cast(y_true, "int32"), classes) if sparse else ops.cast(y_true,
                                                                                  "float32")
    axes = tuple(range(len(logits.shape) - 1))
    inter = ops.sum(y * p, axis=axes)
    union = ops.sum(y + p - y * p, axis=axes)
    losses = -ops.log((inter + epsilon) / (union + epsilon))
    if class_weights is None:
        return ops.mean(losses)
    w = ops.convert_to_tensor(class_weights, "float32")
    return ops.sum(w * losses) / ops.sum(w)


def _inputs(tf, shape, pred_dtype, labels, seed=0):
    rng = np.random.default_rng(seed)
    classes = shape[-1]
    logits = tf.cast(tf.constant(rng.normal(0.0, 2.0, shape).astype(np.float32)), pred_dtype)
    ids = rng.integers(0, classes, shape[:-1]).astype(np.uint8)
    if labels == "sparse-uint8":
        return tf.constant(ids), logits
    return tf.one_hot(tf.constant(ids), classes, dtype=tf.float32), logits


def _step(tf, loss_fn, jit=False):
    def step(y_true, logits):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = loss_fn(y_true, logits)
        return value, tape.gradient(value, logits)

    return tf.function(step, jit_compile=jit)


def variants(tf, classes, sparse):
    import wiou_ops

    out = {
        "naive tf.function": _step(tf, lambda t, z: naive_loss(t, z, classes, sparse)),
        "naive jit_compile": _step(tf, lambda t, z: naive_loss(t, z, classes, sparse),
                                   jit=True),
    }
    for impl in wiou_ops.available_implementations():
        if impl == "graph":
            continue
        loss = wiou_ops.MultiClassIoULoss(sparse_y_true=sparse, from_logits=True,
                                          implementation=impl)
        out[impl] = _step(tf, loss)
    return out


def peak_memory(name, shape, pred_dtype, labels, timeout=600):
    """Peak resident bytes of one variant's step above its inputs, from a fresh process."""
    import subprocess

    if not os.path.exists("/proc/self/clear_refs"):
        return None
    command = [sys.executable, "-m", "wiou_ops.bench.multiclass", "--memory-of", name,
               "x".join(map(str, shape)), pred_dtype, labels]
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if out.returncode != 0:
        raise RuntimeError(f"memory of {name!r} failed:\n{out.stderr[-2000:]}")
    return int(out.stdout.split()[-1])


def _peak_here(name, shape, pred_dtype, labels):
    import tensorflow as tf

    from wiou_ops.bench import memory

    tf.config.set_visible_devices([], "GPU")
    y_true, logits = _inputs(tf, shape, pred_dtype, labels)
    fn = variants(tf, shape[-1], labels.startswith("sparse"))[name]
    fn.get_concrete_function(y_true, logits)  # trace without running
    return memory.resident_peak(lambda: fn(y_true, logits)[0].numpy())


def run(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from wiou_ops._kernels import native

    tf.config.set_visible_devices([], "GPU")
    results = {"cpu": harness.cpu_name(), "isa": harness.cpu_isa(), "cores": os.cpu_count(),
               "native_isa": native.isa(), "tensorflow": tf.__version__,
               "keras": keras.__version__, "rounds": args.rounds, "pass": "forward+backward",
               "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(
                   timespec="seconds"), "cases": []}
    for shape in args.sizes:
        for pred_dtype, labels in args.cases:
            sparse = labels.startswith("sparse")
            y_true, logits = _inputs(tf, shape, pred_dtype, labels)
            fns = variants(tf, shape[-1], sparse)
            # Read the loss only: the call has run the whole step by then (see bench
            # __main__: holding the gradient would keep the native op from reusing its
            # output buffer).
            calls = {name: (lambda fn=fn: fn(y_true, logits)[0].numpy())
                     for name, fn in fns.items()}
            as_float = tf.cast(logits, tf.float32)
            calls["read logits (byte floor)"] = lambda x=as_float: native.stream_read(x).numpy() \
                if native.stream_read(tf.ones([1])) is not None else tf.reduce_sum(x).numpy()
            exp_sum = tf.function(lambda x: tf.reduce_sum(tf.exp(x)))
            calls["tf.exp of the logits"] = lambda x=as_float: exp_sum(x).numpy()
            if (pred_dtype, labels) == ("float32", "sparse-uint8") and \
                    native.MULTICLASS_NATIVE is not None:
                for name, iou_terms in ((LOOPS, True), (LOOPS_WITHOUT_IOU, False)):
                    loops = tf.function(lambda t, z, iou_terms=iou_terms:
                                        native.multiclass_loops(t, z, iou_terms)[0, 0, 0, 0])
                    calls[name] = lambda fn=loops: fn(y_true, logits).numpy()
            label = f"{'x'.join(map(str, shape))} {pred_dtype} logits, {labels}"
            print(f"[wiou-bench multiclass] {label}: {len(calls)} x {args.rounds} rounds",
                  file=sys.stderr, flush=True)
            samples = harness.interleaved_times(calls, rounds=args.rounds, warmup=2)
            case = {"shape": list(shape), "pred_dtype": pred_dtype, "labels": labels,
                    "variants": {}}
            for name, secs in samples.items():
                stats = harness.summarize(secs)
                stats["samples_s"] = secs
                case["variants"][name] = stats
            if args.memory and (pred_dtype, labels) == args.cases[0]:
                grad_bytes = int(np.prod(shape)) * logits.dtype.size
                for name in fns:
                    print(f"[wiou-bench multiclass] peak memory of {name}", file=sys.stderr,
                          flush=True)
                    peak = peak_memory(name, shape, pred_dtype, labels)
                    case["variants"][name]["peak_bytes"] = peak
                    case["variants"][name]["peak_over_gradient"] = (
                        None if peak is None else peak / grad_bytes)
            results["cases"].append(case)
    return results


def markdown(results):
    lines = [
        "# MultiClassIoULoss: forward+backward against the naive formula",
        "",
        f"{results['cpu']} ({results['isa']}; native loops: "
        f"{(results.get('native_isa') or ('-',))[0]}), {results['cores']} cores, "
        f"TensorFlow {results['tensorflow']}, Keras {results['keras']}, {results['timestamp']}.",
        f"Median ms (p20-p80) over {results['rounds']} interleaved rounds; speed-up = naive "
        "median / variant median (bootstrap 95 % interval over paired rounds). Naive: "
        "softmax, one_hot, per-class sums, autodiff in keras.ops. The rows below the "
        "variants are orientation, timed in the same rounds: one streaming read of the "
        "logits as float32 (the byte floor of one pass), TensorFlow's exp over them, and "
        "(float32 logits, uint8 ids) the native loops alone, with and without the IoU terms.",
        "",
    ]
    for case in results["cases"]:
        shape = "x".join(map(str, case["shape"]))
        memory = any("peak_bytes" in stats for stats in case["variants"].values())
        lines += [f"## {shape}, {case['pred_dtype']} logits, {case['labels']} labels", "",
                  "| variant | median ms (p20-p80) | vs naive tf.function | vs naive jit_compile |"
                  + (" peak extra memory, MB (x gradient) |" if memory else ""),
                  "|---|---|---|---|" + ("---|" if memory else "")]
        base = case["variants"]["naive tf.function"]["samples_s"]
        jit = case["variants"]["naive jit_compile"]["samples_s"]
        for name, stats in case["variants"].items():
            cells = [harness.speedup_text(base, stats["samples_s"]),
                     harness.speedup_text(jit, stats["samples_s"])]
            if name in ORIENTATION:
                cells = ["", ""]
            if memory:
                peak = stats.get("peak_bytes")
                cells.append("" if peak is None else
                             f"{peak / 1e6:.0f} ({stats['peak_over_gradient']:.2f}x)")
            lines.append(f"| {name} | {stats['median_ms']:.1f} ({stats['p20_ms']:.1f}-"
                         f"{stats['p80_ms']:.1f}) | " + " | ".join(cells) + " |")
        lines.append("")
        lines += bounds(case)
    return "\n".join(lines)


def bounds(case):
    """Lines on the two bounds of the native loops: the byte floor of forward+backward
    (read logits and ids in each pass, write the gradient; writes priced as reads, at the
    fastest read of the logits in this run) and the same loops without the IoU terms."""
    variants = case["variants"]
    if LOOPS not in variants or LOOPS_WITHOUT_IOU not in variants:
        return []
    pixels = int(np.prod(case["shape"][:-1]))
    logits_bytes = pixels * case["shape"][-1] * 4
    read_s = min(variants["read logits (byte floor)"]["samples_s"])
    floor_bytes = 3 * logits_bytes + 2 * pixels
    floor_ms = 1e3 * read_s * floor_bytes / logits_bytes
    loops = variants[LOOPS]
    without = variants[LOOPS_WITHOUT_IOU]
    bound = "compute" if without["median_ms"] >= 1.5 * floor_ms else "bytes"
    return [
        f"Bounds of the native loops (forward+backward): byte floor {floor_ms:.1f} ms "
        f"({floor_bytes / 1e6:.3g} MB at {logits_bytes / read_s / 1e9:.3g} "
        f"GB/s, the fastest read of the logits above); the loops alone take "
        f"{loops['median_ms']:.1f} ms ({loops['median_ms'] / floor_ms:.2f}x the floor), the "
        f"same loops without the IoU terms {without['median_ms']:.1f} ms "
        f"({without['median_ms'] / floor_ms:.2f}x the floor): the loss's loops take "
        f"{harness.speedup_text(loops['samples_s'], without['samples_s'])} "
        f"the time of the loops without the IoU terms. Bound: "
        + ("compute (exp; the loops without the IoU terms are already over 1.5x the byte "
           "floor)." if bound == "compute" else "bytes (the loops without the IoU terms are "
                                                 "within 1.5x the byte floor)."),
        "",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m wiou_ops.bench.multiclass",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=harness.size_argument,
                        default=[harness.size_argument(s) for s in DEFAULT_SIZES])
    parser.add_argument("--rounds", type=harness.positive_int, default=10)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("."))
    parser.add_argument("--quick", action="store_true",
                        help="one float32 sparse case per size, 3 rounds, no memory: a smoke run")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-memory subprocesses (first case of each size)")
    parser.add_argument("--memory-of", nargs=4, metavar=("VARIANT", "SHAPE", "DTYPE", "LABELS"),
                        help=argparse.SUPPRESS)  # the subprocess of peak_memory
    args = parser.parse_args(argv)
    if args.memory_of:
        name, shape, pred_dtype, labels = args.memory_of
        print(_peak_here(name, harness.size_argument(shape), pred_dtype, labels))
        return
    args.cases = DEFAULT_CASES[:1] if args.quick else DEFAULT_CASES
    if args.quick:
        args.rounds, args.memory = 3, False
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "multiclass.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (args.out / "multiclass.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
