"""``wiou-bench`` / ``python -m wiou_ops.bench``: seed class vs wiou_ops, forward+backward.

Every variant is timed in the same process, interleaved, after warm-up; the
speed-ups are against the seed class measured in the same run. A streaming
read bandwidth measured in the same run gives the byte floor.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import sys

import numpy as np

from wiou_ops.bench import harness

DEFAULT_SIZES = {"cpu": ["16x512x512x1", "64x512x512x1"], "gpu": ["64x512x512x1", "256x512x512x1"]}
DEFAULT_DTYPES = ["float32/float32", "bfloat16/uint8"]
PRED_DTYPES = ("float32", "float16", "bfloat16")
TRUE_DTYPES = ("float32", "float16", "bfloat16", "uint8", "bool")


def _parse_size(text):
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"--sizes: {text!r} is not like 16x512x512x1")
    return dims


def _parse_dtypes(text):
    pred, _, true = text.partition("/")
    if pred not in PRED_DTYPES or true not in TRUE_DTYPES:
        raise argparse.ArgumentTypeError(
            f"--dtypes: {text!r} is not PRED/TRUE with PRED in {PRED_DTYPES} and TRUE in "
            f"{TRUE_DTYPES}, e.g. bfloat16/uint8")
    return pred, true


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_slug(device):
    cpu = re.sub(r"[^a-z0-9]+", "-", _cpu_name().lower()).strip("-")
    return f"{device}-{cpu}-{os.cpu_count()}c"


def _variants(tf, wiou_ops, y_true, y_pred, implementations):
    """name -> callable running forward+backward once and returning the loss."""
    seed = wiou_ops.SeedWeightedIoULoss(0.5, 1.5)

    def fwd_bwd(loss_fn):
        def run(y_true, y_pred):
            with tf.GradientTape() as tape:
                tape.watch(y_pred)
                loss = loss_fn(y_true, y_pred)
            return loss, tape.gradient(loss, y_pred)
        return run

    def seed_upcast(y_true, y_pred):  # what Keras does before the seed's call()
        return seed(tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32))

    runs = {
        "seed eager": fwd_bwd(seed_upcast),
        "seed tf.function": tf.function(fwd_bwd(seed_upcast)),
        "seed jit_compile": tf.function(fwd_bwd(seed_upcast), jit_compile=True),
    }
    for impl in implementations:
        loss = wiou_ops.WeightedIoULoss(0.5, 1.5, implementation=impl)
        runs[f"wiou_ops {impl} tf.function"] = tf.function(fwd_bwd(loss))
    runs["wiou_ops auto eager"] = fwd_bwd(wiou_ops.WeightedIoULoss(0.5, 1.5))

    def call(fn):
        return lambda: fn(y_true, y_pred)[0].numpy()

    return {name: call(fn) for name, fn in runs.items()}, runs


def _relative_error(fn, y_true, y_pred, want):
    got = float(fn(y_true, y_pred)[0].numpy())
    return abs(got - want) / abs(want)


def _oracle(y, p):
    y = np.asarray(y, np.float64)
    lo, hi = float(np.float32(1e-7)), float(np.float32(1 - 1e-7))
    p = np.clip(np.asarray(p, np.float64), lo, hi)
    inter, union = np.sum(y * p), np.sum(y + p - y * p)
    return -np.log((inter + lo) / (union + lo)) * np.mean(0.5 * (1 - y) + 1.5 * y)


def _read_bandwidth(tf, nbytes, rounds):
    """Streaming-read GB/s over a float32 buffer of ``nbytes``: the best of the probes.

    Probes: TensorFlow's reduce_sum and, when built, the native kernel's plain
    vectorized read loop (op WiouStreamRead). Returns (best GB/s, {probe: GB/s}).
    """
    from wiou_ops import _native

    buf = tf.ones([nbytes // 4], tf.float32)
    probes = {"tf.reduce_sum": tf.function(tf.reduce_sum)}
    if _native.stream_read(tf.ones([1])) is not None:
        probes["native stream read"] = tf.function(_native.stream_read)
    calls = {name: (lambda fn=fn: fn(buf).numpy()) for name, fn in probes.items()}
    times = harness.interleaved_times(calls, rounds=rounds)
    gbps = {name: nbytes / harness.summarize(t)["median_ms"] / 1e6 for name, t in times.items()}
    return max(gbps.values()), gbps


def run(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import wiou_ops

    if args.device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif not tf.config.list_physical_devices("GPU"):
        raise SystemExit("wiou-bench: --device gpu asked for, but TensorFlow sees no GPU.")
    available = wiou_ops.available_implementations()
    implementations = args.implementations or available
    unknown = sorted(set(implementations) - set(available))
    if unknown:
        raise SystemExit(f"wiou-bench: --implementations {unknown} not available; have {available}.")

    rounds = 5 if args.quick else args.rounds
    results = {
        "device": args.device,
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": __import__("keras").__version__,
        "wiou_ops": wiou_ops.__version__,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rounds": rounds,
        "cases": [],
    }
    rng = np.random.default_rng(0)
    for shape in args.sizes:
        n = int(np.prod(shape))
        y_mask = rng.random(shape, dtype=np.float32) < 0.05
        p_np = rng.random(shape, dtype=np.float32)
        bandwidth, probes = _read_bandwidth(tf, max(4 * n, 1 << 26), rounds)
        for pred_dtype, true_dtype in args.dtypes:
            y_true = tf.cast(tf.constant(y_mask), true_dtype)
            y_pred = tf.cast(tf.constant(p_np), pred_dtype)
            calls, runs = _variants(tf, wiou_ops, y_true, y_pred, implementations)
            label = f"{'x'.join(map(str, shape))} {pred_dtype}/{true_dtype}"
            print(f"[wiou-bench] {label}: {len(calls)} variants x {rounds} rounds",
                  file=sys.stderr, flush=True)
            samples = harness.interleaved_times(calls, rounds=rounds,
                                                warmup=2 if args.quick else 3)
            nbytes = harness.forward_backward_bytes(n, y_pred.dtype.size, y_true.dtype.size)
            want = _oracle(tf.cast(y_true, tf.float64).numpy(), tf.cast(y_pred, tf.float64).numpy())
            case = {"shape": list(shape), "pred_dtype": pred_dtype, "true_dtype": true_dtype,
                    "pass": "forward+backward", "bytes": nbytes, "read_gbps": bandwidth,
                    "read_probes_gbps": probes, "variants": {}}
            for name, secs in samples.items():
                stats = harness.summarize(secs)
                stats["samples_s"] = secs
                stats["effective_gbps"] = nbytes / stats["median_ms"] / 1e6
                stats["rel_error"] = _relative_error(runs[name], y_true, y_pred, want)
                case["variants"][name] = stats
            results["cases"].append(case)
            del calls, runs
    return results


def report_markdown(results):
    lines = [
        f"# wiou-bench: forward+backward, seed class vs wiou_ops ({results['device']})",
        "",
        f"Machine: {results['cpu']}, {results['cores']} cores. TensorFlow {results['tensorflow']}, "
        f"Keras {results['keras']}, Python {results['python']}, wiou_ops {results['wiou_ops']}. "
        f"{results['timestamp']}. Median of {results['rounds']} interleaved rounds after warm-up.",
    ]
    for case in results["cases"]:
        shape = "x".join(map(str, case["shape"]))
        base = case["variants"]["seed tf.function"]["median_ms"]
        base_eager = case["variants"]["seed eager"]["median_ms"]
        floor_ms = case["bytes"] / case["read_gbps"] / 1e6
        case_floor = floor_ms
        lines += [
            "",
            f"## {shape}, y_pred {case['pred_dtype']}, y_true {case['true_dtype']}, "
            f"{case['pass']}",
            "",
            f"Streaming read bandwidth (same run, best probe): {case['read_gbps']:.1f} GB/s; "
            f"fewest bytes {case['bytes'] / 1e6:.1f} MB (read y and p twice, write the "
            f"gradient), so the floor is {floor_ms:.2f} ms. The floor prices writes like "
            f"reads; where streaming writes overlap with reads, 'x floor' can dip below 1.",
            "",
            "| variant | median ms | p20 ms | p80 ms | vs seed tf.function | vs seed eager "
            "| x floor | effective GB/s | rel. error vs float64 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, v in case["variants"].items():
            lines.append(
                f"| {name} | {v['median_ms']:.2f} | {v['p20_ms']:.2f} | {v['p80_ms']:.2f} | "
                f"{base / v['median_ms']:.2f}x | {base_eager / v['median_ms']:.2f}x | "
                f"{v['median_ms'] / case_floor:.2f} | "
                f"{v['effective_gbps']:.1f} | {v['rel_error']:.1e} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="wiou-bench", description=__doc__)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--sizes", nargs="+", type=_parse_size, default=None,
                        help="shapes like 16x512x512x1 (default per device)")
    parser.add_argument("--dtypes", nargs="+", type=_parse_dtypes, default=None,
                        help="PRED/TRUE dtype pairs (default: float32/float32 bfloat16/uint8)")
    parser.add_argument("--implementations", nargs="+", default=None,
                        help="wiou_ops implementations to time (default: all available)")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds per variant (>= 1)")
    parser.add_argument("--quick", action="store_true", help="5 rounds, for a smoke run")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="folder for results.json and report.md "
                             "(default benchmarks/results/<machine>)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    args.sizes = args.sizes or [_parse_size(s) for s in DEFAULT_SIZES[args.device]]
    args.dtypes = args.dtypes or [_parse_dtypes(d) for d in DEFAULT_DTYPES]
    results = run(args)
    out = args.out or pathlib.Path("benchmarks/results") / machine_slug(args.device)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    report = report_markdown(results)
    (out / "report.md").write_text(report)
    print(report)
    print(f"[wiou-bench] wrote {out / 'results.json'} and {out / 'report.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
