"""Timing harness: warm-up, interleaved rounds, robust statistics.

Kept free of TensorFlow so its statistics can be tested on known inputs.
"""

import json
import os
import pathlib
import sys
import time

import numpy as np


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


def forward_bytes(n, pred_itemsize, true_itemsize):
    """Fewest bytes a forward must move: read y and p once."""
    return n * (pred_itemsize + true_itemsize)


def forward_backward_bytes(n, pred_itemsize, true_itemsize):
    """Fewest bytes a forward+backward must move.

    Forward reads y and p once; backward reads them again and writes the
    gradient (p's dtype): 2·n·(|y| + |p|) + n·|p|.
    """
    return 2 * n * (pred_itemsize + true_itemsize) + n * pred_itemsize


def seed_loss_float64(y_true, y_pred, weight_background, weight_foreground, epsilon=1e-7,
                      chunks=16):
    """The seed loss (mean reduction) in float64, read in chunks so that no
    float64 copy of a large input is made. Returns ``(loss, (I, U, mean weight))``.

    Inputs are taken as the implementations see them (y_pred already rounded to
    its dtype); ε and the clip bounds are the float32 constants the seed uses.
    """
    lo, hi = float(np.float32(epsilon)), float(np.float32(1.0 - epsilon))
    y_all, p_all = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    inter = union = sum_y = 0.0
    for y, p in zip(np.array_split(y_all, chunks), np.array_split(p_all, chunks)):
        y = y.astype(np.float64)
        p = np.clip(p.astype(np.float64), lo, hi)
        inter += y @ p
        union += y.sum() + p.sum() - y @ p
        sum_y += y.sum()
    n = max(y_all.size, 1)
    mean_weight = (weight_background * (y_all.size - sum_y) + weight_foreground * sum_y) / n
    return -np.log((inter + lo) / (union + lo)) * mean_weight, (inter, union, mean_weight)


def seed_grad_error(y_true, y_pred, grad, sums, epsilon=1e-7, chunks=64):
    """max |grad - float64 gradient| / max |float64 gradient| of the seed loss (mean
    reduction; ``sums`` from ``seed_loss_float64``), in chunks (no float64 copy).

    The float64 gradient follows TensorFlow's clip rule: ties at ε and 1-ε pass.
    """
    inter, union, mean_weight = sums
    lo, hi = float(np.float32(epsilon)), float(np.float32(1.0 - epsilon))
    worst = scale = 0.0
    parts = (np.array_split(np.asarray(a, np.float32).reshape(-1), chunks)
             for a in (y_true, y_pred, grad))
    for y, p, g in zip(*parts):
        y, p = y.astype(np.float64), p.astype(np.float64)
        want = mean_weight * ((1 - y) / (union + lo) - y / (inter + lo)) * ((p >= lo) & (p <= hi))
        worst = max(worst, float(np.max(np.abs(g - want))))
        scale = max(scale, float(np.max(np.abs(want))))
    return worst / scale if scale else worst


# The command-line skeleton of the per-backend benchmarks (jax_bench, torch_bench).

def add_case_arguments(parser, dtype_pairs, sizes_default, sizes_help, out_help):
    """--sizes, --dtypes, --rounds and --out, as every per-backend benchmark takes them."""
    parser.add_argument("--sizes", nargs="+", default=sizes_default, help=sizes_help)
    parser.add_argument("--dtypes", nargs="+", default=None,
                        help="PRED/TRUE pairs (default: " + " ".join(
                            f"{p}/{t}" for p, t in dtype_pairs) + ")")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=pathlib.Path, default=None, help=out_help)


def parse_case_arguments(parser, argv, backend, dtype_pairs):
    """The parsed arguments, once Keras is known to run on ``backend`` (it picks its backend
    at import: ``wiou-bench --backend`` starts such a process); ``dtypes`` as pairs."""
    args = parser.parse_args(argv)
    if os.environ.get("KERAS_BACKEND") != backend:
        raise SystemExit(f"{parser.prog} needs KERAS_BACKEND={backend} "
                         f"(wiou-bench --backend {backend} sets it).")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    args.dtypes = dtype_pairs if args.dtypes is None else [tuple(d.split("/"))
                                                           for d in args.dtypes]
    return args


def parse_shapes(sizes):
    """["16x512x512x1", ...] -> [(16, 512, 512, 1), ...]."""
    return [tuple(int(d) for d in size.lower().split("x")) for size in sizes]


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
