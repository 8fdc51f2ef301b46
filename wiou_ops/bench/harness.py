"""Timing harness: warm-up, interleaved rounds, robust statistics.

Kept free of TensorFlow so its statistics can be tested on known inputs.
"""

import argparse
import json
import os
import pathlib
import platform
import re
import sys
import time

import numpy as np

from wiou_ops._kernels.native_library import cpu_isa  # noqa: F401 - part of the machine


def interleaved_times(fns, rounds=20, warmup=3, clock=time.perf_counter, seed=0):
    """Runs every callable ``rounds`` times, interleaved: each round runs every variant once.

    The order of each round is a fresh (seeded) permutation, so that no variant
    always runs first, or always right after the same neighbour: a variant that
    follows one that trashed the caches or allocated 100+ MB pays for it, and a
    fixed or merely rotated order would charge that to the same variant every
    round. Returns {name: [seconds, ...]}.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    samples = {name: [] for name in names}
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        for k in rng.permutation(len(names)):
            name = names[k]
            start = clock()
            fns[name]()
            samples[name].append(clock() - start)
    return samples


def summarize(seconds):
    """Median, p20 and p80 in milliseconds, and the sample count."""
    ms = np.asarray(seconds, np.float64) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p20_ms": float(np.percentile(ms, 20)),
        "p80_ms": float(np.percentile(ms, 80)),
        "n": int(ms.size),
    }


def ratio_interval(baseline_seconds, seconds, level=0.95, resamples=2000, seed=0):
    """Bootstrap interval of ``median(baseline) / median(variant)`` (a speed-up).

    The samples come from interleaved rounds, so round k of both was timed under the
    same machine state: rounds are resampled as pairs (a round's noise stays in both),
    when the counts match; otherwise each side is resampled on its own. Returns
    (low, high) of the central ``level`` interval.
    """
    base = np.asarray(baseline_seconds, np.float64)
    other = np.asarray(seconds, np.float64)
    rng = np.random.default_rng(seed)
    if base.size == other.size:
        rows = rng.integers(0, base.size, (resamples, base.size))
        ratios = np.median(base[rows], axis=1) / np.median(other[rows], axis=1)
    else:
        ratios = (np.median(base[rng.integers(0, base.size, (resamples, base.size))], axis=1)
                  / np.median(other[rng.integers(0, other.size, (resamples, other.size))],
                              axis=1))
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


def speedup_text(baseline_seconds, seconds):
    """'3.10x (2.95-3.24)': the speed-up of medians and its bootstrap 95 % interval."""
    low, high = ratio_interval(baseline_seconds, seconds)
    ratio = float(np.median(baseline_seconds) / np.median(seconds))
    return f"{ratio:.2f}x ({low:.2f}-{high:.2f})"


def forward_bytes(n, pred_itemsize, true_itemsize):
    """Fewest bytes a forward must move: read y and p once."""
    return n * (pred_itemsize + true_itemsize)


def forward_backward_bytes(n, pred_itemsize, true_itemsize):
    """Fewest bytes a forward+backward must move.

    Forward reads y and p once; backward reads them again and writes the
    gradient (p's dtype): 2·n·(|y| + |p|) + n·|p|.
    """
    return 2 * n * (pred_itemsize + true_itemsize) + n * pred_itemsize


# The machine a report was measured on, and the command-line pieces every benchmark shares.

DEFAULT_OUT_ROOT = pathlib.Path("wiou-bench-results")


def cpu_name():
    """The processor's model name (from /proc/cpuinfo on Linux), else what Python knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def machine_slug(device):
    """cpu-amd-epyc-avx2-2c, ...: the folder name of a report measured on this machine."""
    cpu = re.sub(r"[^a-z0-9]+", "-", cpu_name().lower()).strip("-")
    isa = f"-{cpu_isa()}" if device == "cpu" and cpu_isa() else ""  # see cpu_isa
    return f"{device}-{cpu}{isa}-{os.cpu_count()}c"


def size_argument(text):
    """argparse type: "16x512x512x1" -> (16, 512, 512, 1), every dimension >= 1."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 16x512x512x1")
    return dims


def dtype_pair_argument(pred_dtypes, true_dtypes):
    """argparse type for PRED/TRUE dtype pairs with the given choices."""
    def parse(text):
        pred, _, true = text.partition("/")
        if pred not in pred_dtypes or true not in true_dtypes:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not PRED/TRUE with PRED in {pred_dtypes} and TRUE in "
                f"{true_dtypes}, e.g. bfloat16/uint8")
        return pred, true
    return parse


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def add_out_arguments(parser, slug_help):
    """--out DIR, or --out-root ROOT for ROOT/<machine> (default ./wiou-bench-results)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--out", type=pathlib.Path, default=None,
                       help="folder for the results (default: OUT_ROOT/" + slug_help + ")")
    group.add_argument("--out-root", type=pathlib.Path, default=DEFAULT_OUT_ROOT,
                       help=f"results go to OUT_ROOT/{slug_help} (default: ./{DEFAULT_OUT_ROOT})")


def out_folder(args, slug):
    return args.out if args.out is not None else args.out_root / slug


# The command-line skeleton of the per-backend benchmarks (jax_bench, torch_bench).

def add_case_arguments(parser, pred_dtypes, true_dtypes, dtype_pairs, sizes_help, slug_help):
    """--sizes, --dtypes, --rounds, --out and --out-root, as every per-backend benchmark
    takes them (validated: a bad value is an argparse error naming the argument)."""
    parser.add_argument("--sizes", nargs="+", type=size_argument, default=None,
                        help=sizes_help)
    parser.add_argument("--dtypes", nargs="+",
                        type=dtype_pair_argument(pred_dtypes, true_dtypes), default=None,
                        help="PRED/TRUE pairs (default: " + " ".join(
                            f"{p}/{t}" for p, t in dtype_pairs) + ")")
    parser.add_argument("--rounds", type=positive_int, default=20)
    add_out_arguments(parser, slug_help)


def parse_case_arguments(parser, argv, backend, dtype_pairs):
    """The parsed arguments, once Keras is known to run on ``backend`` (it picks its backend
    at import: ``wiou-bench --backend`` starts such a process); ``dtypes`` as pairs."""
    args = parser.parse_args(argv)
    if os.environ.get("KERAS_BACKEND") != backend:
        raise SystemExit(f"{parser.prog} needs KERAS_BACKEND={backend} "
                         f"(wiou-bench --backend {backend} sets it).")
    if args.dtypes is None:
        args.dtypes = list(dtype_pairs)
    return args


def run_cases(shapes, dtype_pairs, run_case, tag):
    """``run_case(shape, pred_dtype, true_dtype)`` for every shape and dtype pair, in order,
    with one progress line per case on stderr. Returns the cases."""
    cases = []
    for shape in shapes:
        for pred_dtype, true_dtype in dtype_pairs:
            start = time.perf_counter()
            cases.append(run_case(shape, pred_dtype, true_dtype))
            print(f"[{tag}] {'x'.join(map(str, shape))} {pred_dtype}/{true_dtype} "
                  f"{time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return cases


def write_results(out, results, report_text, tag):
    """results.json and report.md into ``out`` (created); the report is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text(report_text)
    print(report_text)
    print(f"[{tag}] wrote {out / 'results.json'} and {out / 'report.md'}", file=sys.stderr)
