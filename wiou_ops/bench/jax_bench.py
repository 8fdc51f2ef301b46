"""``wiou-bench --backend jax``: the benchmark protocol on any JAX device (CPU, GPU, TPU).

The seed class as Keras runs it on the JAX backend (``SeedWeightedIoULoss``,
keras.ops, inputs cast to float32, gradient by autodiff) against the fused
``wiou_ops.jax`` loss, both under ``jax.jit(jax.value_and_grad)``, forward+
backward; float32 and bfloat16 y_pred, float32 and uint8 y_true. wiou_ops.jax
runs twice: with this device's default backward and with the other one (from
1-byte label codes, or from y and p; chosen by its ``backward`` argument), so one run
shows which is faster. Protocol as for TensorFlow (docs/design.md): warm-up, every
variant once per round in a seeded order, median/p20/p80, speed-ups against the seed
measured in the same run with a bootstrap 95 % interval,
copy and read bandwidth measured in the same run (byte floor = fewest bytes
over the copy bandwidth), loss error against float64, gradient error against
the float64 gradient (TensorFlow's clip rule, ``_iou.clip_passes``).

Needs ``KERAS_BACKEND=jax`` before Keras is imported; ``wiou-bench --backend
jax`` starts this module in a process that has it. TensorFlow is not imported.

    python -m wiou_ops.bench.jax_bench --out DIR [--sizes 64x512x512x1 ...] [--rounds 20]
"""

import argparse
import datetime
import platform
import sys

from wiou_ops import oracle
from wiou_ops.bench import harness

DEFAULT_SIZES = {"cpu": ["16x512x512x1", "64x512x512x1"],
                 "gpu": ["256x512x512x1", "1024x512x512x1"],
                 "tpu": ["256x512x512x1", "1024x512x512x1"]}
PRED_DTYPES = ("float32", "float16", "bfloat16")
TRUE_DTYPES = ("float32", "float16", "bfloat16", "uint8", "bool")
DTYPES = [("float32", "float32"), ("float32", "uint8"), ("bfloat16", "float32"),
          ("bfloat16", "uint8")]
EPS, WB, WF = 1e-7, 0.5, 1.5
SEED = "seed class (keras.ops), jit"
FUSED = "wiou_ops.jax, jit"  # with this device's default backward
CODES = "wiou_ops.jax, backward from label codes, jit"
FROM_INPUTS = "wiou_ops.jax, backward from y and p, jit"
PALLAS = "wiou_ops.jax, Pallas forward + label codes, jit"


def _default_backward():
    import jax

    from wiou_ops._kernels import jax as jax_kernel

    platform = {"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())
    return "label codes" if platform in jax_kernel.CODE_PLATFORMS else "y and p"


def _variants(pallas):
    """{name: jitted value_and_grad}: each wiou_ops variant chosen by its arguments."""
    import functools

    import jax
    import jax.numpy as jnp

    import wiou_ops
    import wiou_ops.jax

    seed = wiou_ops.SeedWeightedIoULoss(WB, WF, EPS)

    def seed_loss(y_true, y_pred):  # what Keras's Loss.__call__ does before the seed's call()
        return seed(y_true.astype(jnp.float32), y_pred.astype(jnp.float32))

    def fused(loss_fn, backward):
        return functools.partial(loss_fn, weight_background=WB, weight_foreground=WF,
                                 epsilon=EPS, backward=backward)

    # The backward this device does not take by default, so that one run shows whether the
    # default is the faster one here.
    other, other_backward = ((FROM_INPUTS, "inputs") if _default_backward() == "label codes"
                             else (CODES, "label_codes"))
    variants = {SEED: seed_loss, FUSED: fused(wiou_ops.jax.weighted_iou_loss, "auto"),
                other: fused(wiou_ops.jax.weighted_iou_loss, other_backward)}
    if pallas:
        from wiou_ops.experimental import pallas as pallas_kernel

        variants[PALLAS] = fused(pallas_kernel.weighted_iou_loss, "label_codes")
    return {name: jax.jit(jax.value_and_grad(fn, argnums=1)) for name, fn in variants.items()}


def label_code_bytes(n, pred_itemsize, true_itemsize):
    """Bytes the label-code backward moves: the forward reads y and p and writes a 1-byte
    code; the backward reads the codes and writes the gradient."""
    return n * (true_itemsize + pred_itemsize + 1) + n * (1 + pred_itemsize)


def _bandwidth(nbytes, rounds):
    """(copy GB/s counting read and write, read GB/s) of a float32 buffer."""
    import jax
    import jax.numpy as jnp


    x = jnp.ones((nbytes // 4,), jnp.float32)
    scale, read = jax.jit(lambda v: v * 2.0), jax.jit(jnp.sum)
    times = harness.interleaved_times({"copy": lambda: scale(x).block_until_ready(),
                                       "read": lambda: read(x).block_until_ready()},
                                      rounds=rounds)
    copy_s = harness.summarize(times["copy"])["median_ms"] / 1e3
    read_s = harness.summarize(times["read"])["median_ms"] / 1e3
    return 2 * nbytes / copy_s / 1e9, nbytes / read_s / 1e9


def run_case(fns, shape, pred_dtype, true_dtype, rounds, seed=0):
    import jax
    import jax.numpy as jnp
    import numpy as np


    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    y_true = (jax.random.uniform(k1, shape) < 0.05).astype(true_dtype)
    y_pred = jax.random.uniform(k2, shape, jnp.float32).astype(pred_dtype)
    failed = {}
    for name, fn in list(fns.items()):
        try:  # compile first: a variant that fails here (say, the Pallas kernel's Triton
            jax.block_until_ready(fn(y_true, y_pred))  # compile) is reported, not fatal
        except Exception as error:  # noqa: BLE001 - any compile or runtime error
            failed[name] = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
            print(f"[wiou-bench jax] {name} failed: {failed[name]}", file=sys.stderr)
    fns = {name: fn for name, fn in fns.items() if name not in failed}
    calls = {name: (lambda fn=fn: jax.block_until_ready(fn(y_true, y_pred)))
             for name, fn in fns.items()}
    samples = harness.interleaved_times(calls, rounds=rounds)
    y_np = np.asarray(y_true)
    p_np = np.asarray(y_pred.astype(jnp.float32))
    want, sums = oracle.seed_loss_float64(y_np, p_np, WB, WF, EPS, chunks=64)
    n = int(np.prod(shape))
    case = {"shape": list(shape), "pred_dtype": pred_dtype, "true_dtype": true_dtype,
            "bytes": harness.forward_backward_bytes(n, y_pred.dtype.itemsize,
                                                    y_true.dtype.itemsize),
            "label_code_bytes": label_code_bytes(n, y_pred.dtype.itemsize,
                                                 y_true.dtype.itemsize),
            "clip_ties": int(np.sum((p_np == np.float32(EPS)) | (p_np == np.float32(1 - EPS)))),
            "variants": {}, "failed": failed}
    for name, secs in samples.items():
        stats = harness.summarize(secs)
        stats["samples_s"] = secs
        value, grad = fns[name](y_true, y_pred)
        stats["rel_error"] = abs(float(value) - want) / abs(want)
        stats["grad_rel_error"] = oracle.seed_grad_error(
            y_np, p_np, np.asarray(grad.astype(jnp.float32)), sums, EPS)
        case["variants"][name] = stats
    return case


def markdown(results):
    ratios = {f"{c['pred_dtype']}/{c['true_dtype']}": c["label_code_bytes"] / c["bytes"]
              for c in results["cases"]}
    code_ratios = ", ".join(f"{pair} {ratio:.2f}x" for pair, ratio in ratios.items())
    lines = [f"# wiou-bench --backend jax: seed class vs wiou_ops.jax on {results['device']}",
             "",
             f"JAX {results['jax']}, Keras {results['keras']}, Python {results['python']}, "
             f"{results['timestamp']}. Forward+backward under jax.jit, median of "
             f"{results['rounds']} interleaved rounds after warm-up; copy bandwidth "
             f"{results['copy_gbps']:.0f} GB/s (read+write), read {results['read_gbps']:.0f} "
             "GB/s, both measured in this run; byte floor = fewest bytes (read y and p twice, "
             "write the gradient) over the copy bandwidth. "
             f"`{FUSED}` takes this device's default backward (from "
             f"{results['default_backward']}). The backward from 1-byte label codes moves "
             f"fewer bytes than that floor ({code_ratios} of it), so it can go below 1.00.", "",
             "| shape | y_pred/y_true | variant | median ms | p20 | p80 | vs seed (95 % CI) "
             "| x byte floor | loss rel. error | grad error vs float64 |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for case in results["cases"]:
        floor_ms = case["bytes"] / results["copy_gbps"] / 1e6
        base = case["variants"][SEED]["samples_s"]
        for name, v in case["variants"].items():
            lines.append(
                f"| {'x'.join(map(str, case['shape']))} | {case['pred_dtype']}/"
                f"{case['true_dtype']} | {name} | {v['median_ms']:.3f} | {v['p20_ms']:.3f} | "
                f"{v['p80_ms']:.3f} | {harness.speedup_text(base, v['samples_s'])} | "
                f"{v['median_ms'] / floor_ms:.2f} | {v['rel_error']:.1e} | "
                f"{v['grad_rel_error']:.1e} |")
    failures = [f"- {'x'.join(map(str, c['shape']))} {c['pred_dtype']}/{c['true_dtype']}: "
                f"{name} failed: {error}" for c in results["cases"]
                for name, error in c.get("failed", {}).items()]
    if failures:
        lines += ["", "Variants that did not run:", *failures]
    lines += ["", "Predictions exactly at ε or 1-ε (`clip_ties`) get half the gradient from the "
              "seed's `jnp.clip` autodiff and all of it from wiou_ops (TensorFlow's rule): "
              + ", ".join(f"{'x'.join(map(str, c['shape']))} {c['pred_dtype']}: {c['clip_ties']}"
                          for c in results["cases"]), ""]
    return "\n".join(lines)


def _write_hlo(fns, shape, dtypes, out):
    """hlo-<variant>.txt: the optimized HLO of each wiou_ops variant (not the seed's)."""
    import re

    import jax

    y_true = jax.ShapeDtypeStruct(shape, dtypes[1])
    y_pred = jax.ShapeDtypeStruct(shape, dtypes[0])
    for name, fn in fns.items():
        if name == SEED:
            continue
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower().replace(", jit", "")).strip("-")
        try:
            text = fn.lower(y_true, y_pred).compile().as_text()
        except Exception as error:  # noqa: BLE001 - reported in its file, the run goes on
            text = f"compile failed: {type(error).__name__}: {error}"
        (out / f"hlo-{slug}.txt").write_text(text)


def device_slug():
    """jax-gpu-nvidia-h200, ...; on a CPU (whose device kind is just "cpu") the processor and
    core count, as wiou-bench names its TensorFlow reports: jax-cpu-amd-epyc-2c."""
    import re

    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"jax-{harness.machine_slug('cpu')}"
    kind = re.sub(r"[^a-z0-9]+", "-", device.device_kind.lower()).strip("-")
    return f"jax-{device.platform}-{kind}"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="wiou-bench --backend jax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_case_arguments(parser, PRED_DTYPES, TRUE_DTYPES, DTYPES,
                               "shapes like 1024x512x512x1 (default per device)",
                               "jax-<platform>-<device kind> (jax-cpu-<processor>-<cores>c "
                               "on a CPU)")
    parser.add_argument("--pallas", choices=("auto", "on", "off"), default="auto",
                        help="time the Pallas (Triton) forward too: auto = on a GPU; on "
                        "elsewhere runs it interpreted (slow: tiny sizes only)")
    parser.add_argument("--hlo", choices=("auto", "on", "off"), default="auto",
                        help="write the optimized HLO of each wiou_ops variant (the largest "
                        "size, the first dtype pair) beside the report: auto = on a GPU, to "
                        "see what XLA fused")
    args = harness.parse_case_arguments(parser, argv, "jax", DTYPES)
    import jax
    import keras
    import numpy as np

    dtypes = args.dtypes
    platform_name = jax.default_backend()
    shapes = args.sizes or [harness.size_argument(size) for size in
                            DEFAULT_SIZES.get(platform_name, DEFAULT_SIZES["cpu"])]
    device = jax.devices()[0]
    results = {"backend": "jax", "device": f"{device.platform}:{device.device_kind}",
               "jax": jax.__version__, "keras": keras.__version__,
               "python": platform.python_version(), "rounds": args.rounds,
               "default_backward": _default_backward(),
               "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(
                   timespec="seconds"), "cases": []}
    results["copy_gbps"], results["read_gbps"] = _bandwidth(
        max(4 * int(np.prod(shapes[-1])), 1 << 26), args.rounds)
    fns = _variants(args.pallas == "on" or (args.pallas == "auto" and platform_name == "gpu"))
    results["cases"] = harness.run_cases(
        shapes, dtypes, lambda *case: run_case(fns, *case, args.rounds), "wiou-bench jax")
    out = harness.out_folder(args, device_slug())
    if args.hlo == "on" or (args.hlo == "auto" and platform_name == "gpu"):
        out.mkdir(parents=True, exist_ok=True)
        _write_hlo(fns, shapes[-1], dtypes[0], out)
    harness.write_results(out, results, markdown(results), "wiou-bench jax")

if __name__ == "__main__":
    main()
