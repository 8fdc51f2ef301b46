"""GPU benchmark of the fused JAX loss against the naive seed formula, in one call.

Made for a machine with JAX (CUDA) and no TensorFlow and no internet (keras
carried as a wheel): it runs Keras on its JAX backend, so the package's
TensorFlow parts are never imported, and loads ``wiou_ops/_jax.py`` a second
time by path for the variant with the CPU's blocked sums forced on.

Protocol (DESIGN.md): warm-up, interleaved
rounds, median/p20/p80, speed-ups against the naive formula measured in the
same run, copy bandwidth measured in the same run, byte floor = fewest bytes
over that bandwidth, relative error against float64.

The naive variant is the seed class as Keras-on-JAX runs it: inputs cast to
float32, clip, two sums, -log IoU times the weight map, mean over all pixels,
gradient by jax.grad, all under jax.jit.

    python benchmarks/gpu_jax_bench.py --out DIR [--sizes 1024x512x512x1 ...] [--rounds 30]
"""

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's wiou_ops, installed or not


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wiou_jax = _load("wiou_jax", "wiou_ops/_jax.py")
harness = _load("wiou_harness", "wiou_ops/bench/harness.py")
# The same custom_vjp with the CPU's barrier-blocked sums forced on, to see
# what that accuracy scheme would cost on this device.
wiou_jax_blocked = _load("wiou_jax_blocked", "wiou_ops/_jax.py")
wiou_jax_blocked._PLAIN_SUM_PLATFORMS = ()

EPS, WB, WF = 1e-7, 0.5, 1.5


def naive_seed_loss(y_true, y_pred):
    y_true = y_true.astype(jnp.float32)  # Keras's Loss.__call__ converts to the loss dtype
    y_pred = jnp.clip(y_pred.astype(jnp.float32), EPS, 1.0 - EPS)
    intersection = jnp.sum(y_true * y_pred)
    union = jnp.sum(y_true + y_pred - y_true * y_pred)
    iou = (intersection + EPS) / (union + EPS)
    per_pixel = -jnp.log(iou) * (WB * (1 - y_true) + WF * y_true)
    return jnp.sum(per_pixel) / per_pixel.size


def fused_loss(y_true, y_pred):
    return wiou_jax.seed_weighted_iou_loss(y_true, y_pred, weight_background=WB,
                                           weight_foreground=WF, epsilon=EPS)


def fused_loss_blocked_sums(y_true, y_pred):
    return wiou_jax_blocked.seed_weighted_iou_loss(y_true, y_pred, weight_background=WB,
                                                 weight_foreground=WF, epsilon=EPS)


def value_and_grad(loss):
    return jax.jit(jax.value_and_grad(loss, argnums=1))


def grad_error(y_true, y_pred, grad, sums, chunks=64):
    """max |grad - float64 gradient| / max |float64 gradient|, TensorFlow's tie rule."""
    inter, union, mean_weight = sums
    lo, hi = float(np.float32(EPS)), float(np.float32(1 - EPS))
    worst = scale = 0.0
    parts = (np.array_split(np.asarray(a).reshape(-1), chunks)
             for a in (y_true, y_pred.astype(jnp.float32), grad.astype(jnp.float32)))
    for y, p, g in zip(*parts):
        y, p = y.astype(np.float64), p.astype(np.float64)
        want = mean_weight * ((1 - y) / (union + lo) - y / (inter + lo)) * ((p >= lo) & (p <= hi))
        worst = max(worst, float(np.max(np.abs(g - want))))
        scale = max(scale, float(np.max(np.abs(want))))
    return worst / scale


def copy_bandwidth(nbytes, rounds):
    x = jnp.ones((nbytes // 4,), jnp.float32)
    scale = jax.jit(lambda v: v * 2.0)
    read = jax.jit(jnp.sum)
    calls = {"copy": lambda: scale(x).block_until_ready(),
             "read": lambda: read(x).block_until_ready()}
    times = harness.interleaved_times(calls, rounds=rounds, warmup=3)
    copy_s = harness.summarize(times["copy"])["median_ms"] / 1e3
    read_s = harness.summarize(times["read"])["median_ms"] / 1e3
    return 2 * nbytes / copy_s / 1e9, nbytes / read_s / 1e9


def run_case(shape, pred_dtype, true_dtype, rounds, key):
    n = int(np.prod(shape))
    k1, k2 = jax.random.split(key)
    y_true = (jax.random.uniform(k1, shape) < 0.05).astype(true_dtype)
    y_pred = jax.random.uniform(k2, shape, jnp.float32).astype(pred_dtype)
    fns = {"naive seed formula, jit": value_and_grad(naive_seed_loss),
           "wiou_ops jax, jit": value_and_grad(fused_loss),
           "wiou_ops jax with CPU-style blocked sums, jit": value_and_grad(fused_loss_blocked_sums)}
    calls = {name: (lambda fn=fn: jax.block_until_ready(fn(y_true, y_pred)))
             for name, fn in fns.items()}
    samples = harness.interleaved_times(calls, rounds=rounds, warmup=3)
    want, sums = harness.seed_loss_float64(np.asarray(y_true),
                                           np.asarray(y_pred.astype(jnp.float32)), WB, WF, EPS,
                                           chunks=64)
    p32 = y_pred.astype(jnp.float32)
    ties = int(jnp.sum((p32 == np.float32(EPS)) | (p32 == np.float32(1 - EPS))))
    grad_naive = fns["naive seed formula, jit"](y_true, y_pred)[1].astype(jnp.float32)
    grad_fused = fns["wiou_ops jax, jit"](y_true, y_pred)[1].astype(jnp.float32)
    grad_diff = float(jnp.max(jnp.abs(grad_fused - grad_naive)) / jnp.max(jnp.abs(grad_naive)))
    nbytes = harness.forward_backward_bytes(n, y_pred.dtype.itemsize, y_true.dtype.itemsize)
    case = {"shape": list(shape), "pred_dtype": pred_dtype, "true_dtype": true_dtype,
            "bytes": nbytes, "grad_fused_vs_naive": grad_diff, "clip_ties": ties,
            "variants": {}}
    for name, secs in samples.items():
        stats = harness.summarize(secs)
        stats["samples_s"] = secs
        value, grad = fns[name](y_true, y_pred)
        stats["rel_error"] = abs(float(value) - want) / abs(want)
        stats["grad_rel_error"] = grad_error(y_true, y_pred, grad, sums)
        case["variants"][name] = stats
    return case


def report(results):
    lines = [f"# Fused JAX loss vs naive seed formula on {results['device']}", "",
             f"JAX {results['jax']}, {results['timestamp']}; copy bandwidth "
             f"{results['copy_gbps']:.0f} GB/s (read+write), read bandwidth "
             f"{results['read_gbps']:.0f} GB/s, both measured in this run. Forward+backward, "
             f"median of {results['rounds']} interleaved rounds after warm-up.", ""]
    lines += ["| shape | y_pred/y_true | variant | median ms | p20 | p80 | vs naive | "
              "x byte floor | loss rel. error | grad error vs float64 |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for case in results["cases"]:
        floor_ms = case["bytes"] / results["copy_gbps"] / 1e6
        naive = case["variants"]["naive seed formula, jit"]["median_ms"]
        for name, v in case["variants"].items():
            lines.append(
                f"| {'x'.join(map(str, case['shape']))} | {case['pred_dtype']}/{case['true_dtype']}"
                f" | {name} | {v['median_ms']:.3f} | {v['p20_ms']:.3f} | {v['p80_ms']:.3f} | "
                f"{naive / v['median_ms']:.2f}x | {v['median_ms'] / floor_ms:.2f} | "
                f"{v['rel_error']:.1e} | {v['grad_rel_error']:.1e} |")
    lines += ["", "Gradient, fused vs naive autodiff (max-abs diff over max-abs): " + ", ".join(
        f"{'x'.join(map(str, c['shape']))} {c['pred_dtype']}/{c['true_dtype']}: "
        f"{c['grad_fused_vs_naive']:.1e}" for c in results["cases"]), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["256x512x512x1", "1024x512x512x1"])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    results = {"device": f"{device.platform}:{device.device_kind}", "jax": jax.__version__,
               "python": platform.python_version(), "rounds": args.rounds,
               "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(
                   timespec="seconds"), "cases": []}
    shapes = [tuple(int(d) for d in s.split("x")) for s in args.sizes]
    results["copy_gbps"], results["read_gbps"] = copy_bandwidth(
        max(4 * int(np.prod(shapes[-1])), 1 << 26), args.rounds)
    key = jax.random.PRNGKey(0)
    for shape in shapes:
        for pred_dtype, true_dtype in [("float32", "float32"), ("bfloat16", "uint8")]:
            start = time.perf_counter()
            results["cases"].append(run_case(shape, pred_dtype, true_dtype, args.rounds, key))
            print(f"[gpu-bench] {shape} {pred_dtype}/{true_dtype} "
                  f"{time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    text = report(results)
    (args.out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
