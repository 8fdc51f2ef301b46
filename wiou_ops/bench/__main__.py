"""``wiou-bench`` / ``python -m wiou_ops.bench``: the seed class vs every wiou_ops implementation.

Protocol (docs/design.md, "Benchmark protocol"): every variant timed in the same
process, interleaved (every variant once per round, in a fresh seeded order), after
warm-up; median/p20/p80; speed-ups against the seed class measured in the same run,
each with a bootstrap 95 % interval over the rounds; streaming read bandwidth measured
in the same run gives the byte floor; peak memory per variant from a fresh process;
relative error of the loss against float64. Writes results.json (every sample, device,
versions, cores, timestamp), report.md and report.png into --out (default
./wiou-bench-results/<machine>/).
"""

import argparse
import datetime
import os
import sys

import numpy as np

from wiou_ops import oracle
from wiou_ops.bench import harness, memory, report, variants

BASELINE = report.BASELINE

DEFAULT_SIZES = {"cpu": ["16x512x512x1", "64x512x512x1"],
                 "gpu": ["64x512x512x1", "256x512x512x1", "1024x512x512x1"]}
DEFAULT_DTYPES = ["float32/float32", "float32/uint8", "bfloat16/float32", "bfloat16/uint8"]
PRED_DTYPES = ("float32", "float16", "bfloat16")
TRUE_DTYPES = ("float32", "float16", "bfloat16", "uint8", "bool")


BACKENDS = ["tensorflow", "jax", "torch"]


def _read_bandwidth(tf, nbytes, rounds):
    """Streaming-read GB/s over a float32 buffer of ``nbytes``: the best of the probes.

    Probes: TensorFlow's reduce_sum and, when built, the native kernel's plain
    vectorized read loop (op WiouStreamRead). Returns (best GB/s, {probe: GB/s}).
    """
    from wiou_ops._kernels import native

    buf = tf.ones([nbytes // 4], tf.float32)
    probes = {"tf.reduce_sum": tf.function(tf.reduce_sum)}
    if native.stream_read(tf.ones([1])) is not None:
        probes["native stream read"] = tf.function(native.stream_read)
    calls = {name: (lambda fn=fn: fn(buf).numpy()) for name, fn in probes.items()}
    times = harness.interleaved_times(calls, rounds=rounds)
    gbps = {name: nbytes / harness.summarize(t)["median_ms"] / 1e6 for name, t in times.items()}
    return max(gbps.values()), gbps


def _progress(message):
    print(f"[wiou-bench] {message}", file=sys.stderr, flush=True)


def run(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    import wiou_ops

    if args.device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif not tf.config.list_physical_devices("GPU"):
        raise SystemExit("wiou-bench: --device gpu asked for, but TensorFlow sees no GPU "
                         "(for a JAX-only GPU machine use benchmarks/gpu_jax_bench.py).")
    available = wiou_ops.available_implementations()
    implementations = args.implementations or available
    unknown = sorted(set(implementations) - set(available))
    if unknown:
        raise SystemExit(f"wiou-bench: --implementations {unknown} not available in this "
                         f"process; have {available}.")
    names = variants.variant_names(implementations)
    rounds = 5 if args.quick else args.rounds
    results = {
        "device": args.device, "cpu": harness.cpu_name(), "isa": harness.cpu_isa(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0], "tensorflow": tf.__version__,
        "keras": keras.__version__, "wiou_ops": wiou_ops.__version__,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rounds": rounds, "cases": [],
    }
    total = len(args.sizes) * len(args.dtypes) * len(args.passes)
    done = 0
    for shape in args.sizes:
        n = int(np.prod(shape))
        bandwidth, probes = _read_bandwidth(tf, max(4 * n, 1 << 26), rounds)
        for pred_dtype, true_dtype in args.dtypes:
            y_true, y_pred = variants.make_inputs(shape, pred_dtype, true_dtype)
            want, _ = oracle.seed_loss_float64(y_true.numpy(),
                                                tf.cast(y_pred, tf.float32).numpy(),
                                                *variants.WEIGHTS)
            for pass_name in args.passes:
                done += 1
                label = f"{'x'.join(map(str, shape))} {pred_dtype}/{true_dtype} {pass_name}"
                _progress(f"[{done}/{total}] {label}: {len(names)} variants x {rounds} rounds")
                runs = {name: variants.build(name, pass_name) for name in names}
                calls = {name: (lambda fn=fn, y=y_true, p=y_pred: fn(y, p)[0].numpy())
                         for name, fn in runs.items()}
                samples = harness.interleaved_times(calls, rounds=rounds,
                                                    warmup=2 if args.quick else 3)
                if pass_name == "forward":
                    nbytes = harness.forward_bytes(n, y_pred.dtype.size, y_true.dtype.size)
                else:
                    nbytes = harness.forward_backward_bytes(n, y_pred.dtype.size,
                                                            y_true.dtype.size)
                case = {"shape": list(shape), "pred_dtype": pred_dtype,
                        "true_dtype": true_dtype, "pass": pass_name, "bytes": nbytes,
                        "read_gbps": bandwidth, "read_probes_gbps": probes, "variants": {}}
                for name, secs in samples.items():
                    stats = harness.summarize(secs)
                    stats["samples_s"] = secs
                    stats["effective_gbps"] = nbytes / stats["median_ms"] / 1e6
                    got = float(runs[name](y_true, y_pred)[0].numpy())
                    stats["rel_error"] = abs(got - want) / abs(want)
                    stats["peak_bytes"] = None
                    # One subprocess per variant: measured for the first dtype pair.
                    if (args.memory and pass_name == "forward+backward"
                            and (pred_dtype, true_dtype) == args.dtypes[0]):
                        _progress(f"    peak memory of {name}")
                        stats["peak_bytes"] = memory.measure(name, pass_name, shape,
                                                             pred_dtype, true_dtype, args.device)
                    case["variants"][name] = stats
                results["cases"].append(case)
                del runs, calls
    if args.options:
        results["options"] = _time_options(tf, args.sizes[0], implementations, rounds)
    if args.options and "native" in implementations:
        results["label_masks"] = _time_label_masks(tf, args.sizes, args.dtypes, rounds)
    return results


def _time_label_masks(tf, sizes, dtypes, rounds):
    """What the native gradient from label masks buys: native as shipped against native
    with the backward from y and p, forward+backward, interleaved, every size and dtype."""
    rows = []
    for shape in sizes:
        for pred_dtype, true_dtype in dtypes:
            _progress(f"label masks: {'x'.join(map(str, shape))} {pred_dtype}/{true_dtype}")
            y_true, y_pred = variants.make_inputs(shape, pred_dtype, true_dtype)
            calls = {}
            for name, write_masks in (("label masks", True), ("y and p", False)):
                fn = variants.build_native(write_masks)
                calls[name] = lambda fn=fn: fn(y_true, y_pred)[0].numpy()
            samples = harness.interleaved_times(calls, rounds=rounds)
            rows.append({"shape": list(shape), "pred_dtype": pred_dtype,
                         "true_dtype": true_dtype,
                         "median_ms": {name: harness.summarize(secs)["median_ms"]
                                       for name, secs in samples.items()},
                         "samples_s": samples})
    return rows


def _time_options(tf, shape, implementations, rounds):
    """Every option set on every implementation, forward+backward, float32, one size,
    interleaved with the seed class in tf.function (the speed-up baseline)."""
    _progress(f"options: {len(variants.OPTION_SETS)} sets x {len(implementations)} "
              f"implementations x {rounds} rounds")
    y_true, y_pred = variants.make_inputs(shape, "float32", "float32")
    weight_map = tf.constant(np.random.default_rng(1).uniform(0, 2, shape).astype(np.float32))
    seed = variants.build(BASELINE, "forward+backward")
    # Read the loss, as the main tables do: the call has run the whole step by then, and
    # holding the gradient as a NumPy array would keep the native op from recycling its
    # output buffer (a fresh 16 MB buffer costs milliseconds of page faults).
    calls = {BASELINE: lambda: seed(y_true, y_pred)[0].numpy()}
    for impl in implementations:
        for option_set in variants.OPTION_SETS:
            fn = variants.build_option(impl, option_set)
            calls[f"{impl}|{option_set}"] = (
                lambda fn=fn: fn(y_true, y_pred, weight_map)[0].numpy())
    samples = harness.interleaved_times(calls, rounds=rounds)
    timed = {name: harness.summarize(secs) for name, secs in samples.items()}
    return {"shape": list(shape), "pred_dtype": "float32", "true_dtype": "float32",
            "pass": "forward+backward", "baseline": BASELINE,
            "baseline_ms": timed.pop(BASELINE)["median_ms"],
            "implementations": list(implementations),
            "option_sets": list(variants.OPTION_SETS),
            "median_ms": {name: stats["median_ms"] for name, stats in timed.items()},
            "samples_s": samples}


def _run_in_backend(backend, rest):
    """``--backend jax|torch``: that backend's protocol (wiou_ops.bench.jax_bench or
    torch_bench), in a process whose Keras runs on it (Keras picks its backend once, at
    import)."""
    import importlib
    import importlib.util
    import subprocess

    import keras

    if importlib.util.find_spec(backend) is None:  # Keras itself fails to import without it
        raise SystemExit(f"wiou-bench --backend {backend} needs {backend} installed "
                         f"(pip install {backend}).")
    module = f"wiou_ops.bench.{backend}_bench"
    if keras.backend.backend() == backend:
        importlib.import_module(module).main(rest)
        return
    command = [sys.executable, "-m", module, *rest]
    returncode = subprocess.call(command, env=dict(os.environ, KERAS_BACKEND=backend))
    if returncode:
        raise SystemExit(returncode)


def main(argv=None):
    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument("--backend", choices=BACKENDS, default="tensorflow")
    chosen, rest = backend.parse_known_args(argv)
    if chosen.backend != "tensorflow":
        _run_in_backend(chosen.backend, rest)
        return
    parser = argparse.ArgumentParser(prog="wiou-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=BACKENDS, default="tensorflow",
                        help="jax: the same protocol on any JAX device, seed class (keras.ops) "
                             "vs wiou_ops.jax (python -m wiou_ops.bench.jax_bench --help); "
                             "without TensorFlow installed, also set KERAS_BACKEND=jax. "
                             "torch: seed class vs wiou_ops on Keras's PyTorch backend, CPU "
                             "(python -m wiou_ops.bench.torch_bench --help)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--sizes", nargs="+", type=harness.size_argument, default=None,
                        help="shapes like 16x512x512x1 (default per device)")
    parser.add_argument("--dtypes", nargs="+",
                        type=harness.dtype_pair_argument(PRED_DTYPES, TRUE_DTYPES),
                        default=None, help=f"PRED/TRUE pairs (default: {' '.join(DEFAULT_DTYPES)})")
    parser.add_argument("--passes", nargs="+", choices=variants.PASSES,
                        default=list(variants.PASSES))
    parser.add_argument("--implementations", nargs="+", choices=("native", "xla", "graph"),
                        default=None,
                        help="wiou_ops implementations to time (default: all available)")
    parser.add_argument("--rounds", type=harness.positive_int, default=20,
                        help="timed rounds per variant (>= 1)")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the per-variant peak-memory subprocesses (forward+backward, "
                             "first dtype pair of each size)")
    parser.add_argument("--no-options", dest="options", action="store_false",
                        help="skip the table of what each option (weighting, logits, "
                             "per_image, ...) costs on each implementation")
    parser.add_argument("--quick", action="store_true",
                        help="5 rounds, float32/float32 only, no memory: a smoke run")
    harness.add_out_arguments(parser, "<device>-<processor>-<cores>c")
    parser.add_argument("--e2e", action="store_true",
                        help="then train a small U-Net with each loss (wiou_ops.bench.e2e) "
                             "and write e2e.md/e2e.json into the same folder")
    parser.add_argument("--distribute", action="store_true",
                        help="then time cross_replica's all-reduce on 2 and 4 logical CPU "
                             "devices (wiou_ops.bench.distribute) into distribute.md/json")
    parser.add_argument("--multiclass", action="store_true",
                        help="then time MultiClassIoULoss against the naive formula "
                             "(wiou_ops.bench.multiclass) into multiclass.md/json")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or [harness.size_argument(s) for s in DEFAULT_SIZES[args.device]]
    if args.dtypes is None:
        parse_pair = harness.dtype_pair_argument(PRED_DTYPES, TRUE_DTYPES)
        args.dtypes = [("float32", "float32")] if args.quick else [
            parse_pair(d) for d in DEFAULT_DTYPES]
    if args.quick:
        args.memory = False
    out = harness.out_folder(args, harness.machine_slug(args.device))
    results = run(args)
    text = report.write(results, out)
    print(text)
    _progress(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'report.png'}")
    if args.e2e:
        from wiou_ops.bench import e2e

        e2e.main(["--out", str(out)])
        _progress(f"wrote {out / 'e2e.md'} and {out / 'e2e.json'}")
    if args.multiclass:
        from wiou_ops.bench import multiclass

        multiclass.main(["--out", str(out)] + (["--quick"] if args.quick else []))
        _progress(f"wrote {out / 'multiclass.md'} and {out / 'multiclass.json'}")
    if args.distribute:
        from wiou_ops.bench import distribute

        distribute.main(["--out", str(out), "--rounds", str(5 if args.quick else args.rounds)])
        _progress(f"wrote {out / 'distribute.md'} and {out / 'distribute.json'}")


if __name__ == "__main__":
    main()
