"""``wiou-bench --backend torch``: the seed class against wiou_ops on Keras's PyTorch backend.

There wiou_ops has no fused kernel: ``WeightedIoULoss`` runs the same sums in
``keras.ops`` (``wiou_ops/_kernels/ops.py``) with their hand-written VJP
(``keras.ops.custom_gradient``); the seed class runs through PyTorch's autograd.
What wiou_ops saves is work: no per-pixel weight map and log map (the seed
weighting's reduction comes from the sums) and fewer full-size intermediates in
the backward. Both run as Keras's ``Loss.__call__`` runs them in ``model.fit``
(eager PyTorch, ``backward()``),
forward+backward, float32/bfloat16 y_pred x float32/uint8 y_true. Protocol as
for TensorFlow (docs/design.md): warm-up, every variant once per round in a seeded
order, median/p20/p80, speed-ups against the seed in the same run with a bootstrap
95 % interval, streaming
read bandwidth of the same device in the same run and the byte floor (read y
and p twice, write the gradient), loss and gradient error against float64.

Needs ``KERAS_BACKEND=torch`` before Keras is imported (``wiou-bench --backend
torch`` starts this module in such a process) and PyTorch installed (not a
dependency of wiou_ops).

    python -m wiou_ops.bench.torch_bench --out DIR [--sizes 16x512x512x1 ...] [--rounds 20]
"""

import argparse
import datetime
import os
import platform

from wiou_ops import oracle
from wiou_ops.bench import harness

DEFAULT_SIZES = ["16x512x512x1", "64x512x512x1"]
PRED_DTYPES = ("float32", "float16", "bfloat16")
TRUE_DTYPES = ("float32", "float16", "bfloat16", "uint8", "bool")
DTYPES = [("float32", "float32"), ("float32", "uint8"), ("bfloat16", "float32"),
          ("bfloat16", "uint8")]
EPS, WB, WF = 1e-7, 0.5, 1.5
SEED = "seed class (keras.ops, autograd)"
OURS = "wiou_ops WeightedIoULoss (keras.ops, hand-written VJP)"


def _read_bandwidth(nbytes, rounds):
    import torch

    x = torch.ones(nbytes // 4, dtype=torch.float32)
    times = harness.interleaved_times({"read": lambda: x.sum().item()}, rounds=rounds)
    return nbytes / (harness.summarize(times["read"])["median_ms"] / 1e3) / 1e9


def run_case(shape, pred_dtype, true_dtype, rounds, seed=0):
    import numpy as np
    import torch

    import wiou_ops

    generator = torch.Generator().manual_seed(seed)
    y_true = (torch.rand(shape, generator=generator) < 0.05).to(getattr(torch, true_dtype))
    y_pred = torch.rand(shape, generator=generator).to(getattr(torch, pred_dtype))
    losses = {SEED: wiou_ops.SeedWeightedIoULoss(WB, WF, EPS),
              OURS: wiou_ops.WeightedIoULoss(WB, WF, EPS)}

    def step(loss):
        prediction = y_pred.detach().requires_grad_()
        value = loss(y_true, prediction)
        value.backward()
        return value.detach(), prediction.grad

    calls = {name: (lambda loss=loss: step(loss)) for name, loss in losses.items()}
    samples = harness.interleaved_times(calls, rounds=rounds)
    y_np = y_true.float().numpy()
    p_np = y_pred.float().numpy()
    want, sums = oracle.seed_loss_float64(y_np, p_np, WB, WF, EPS, chunks=64)
    n = int(np.prod(shape))
    case = {"shape": list(shape), "pred_dtype": pred_dtype, "true_dtype": true_dtype,
            "bytes": harness.forward_backward_bytes(n, y_pred.element_size(),
                                                    y_true.element_size()),
            "variants": {}}
    for name, secs in samples.items():
        stats = harness.summarize(secs)
        stats["samples_s"] = secs
        value, grad = step(losses[name])
        stats["rel_error"] = abs(float(value) - want) / abs(want)
        stats["grad_rel_error"] = oracle.seed_grad_error(y_np, p_np, grad.float().numpy(),
                                                          sums, EPS)
        stats["grad_dtype"] = str(grad.dtype).replace("torch.", "")
        case["variants"][name] = stats
    return case


def markdown(results):
    lines = [f"# wiou-bench --backend torch: seed class vs wiou_ops on {results['device']}", "",
             f"PyTorch {results['torch']} ({results['threads']} threads), Keras "
             f"{results['keras']}, Python {results['python']}, {results['timestamp']}. "
             "Forward+backward as Keras's `Loss.__call__` runs them (eager, `backward()`), median "
             f"of {results['rounds']} interleaved rounds after warm-up; streaming read "
             f"{results['read_gbps']:.1f} GB/s measured in this run; byte floor = fewest bytes "
             "(read y and p twice, write the gradient) over it. No fused kernel on this "
             "backend: both run keras.ops; wiou_ops does less work (no per-pixel weight and "
             "log maps, a hand-written backward). Eager PyTorch writes every intermediate "
             "to fresh memory, hence the distance to the floor.", "",
             "| shape | y_pred/y_true | variant | median ms | p20 | p80 | vs seed (95 % CI) | x byte floor "
             "| loss rel. error | grad error vs float64 | grad dtype |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for case in results["cases"]:
        floor_ms = case["bytes"] / results["read_gbps"] / 1e6
        base = case["variants"][SEED]["samples_s"]
        for name, v in case["variants"].items():
            lines.append(
                f"| {'x'.join(map(str, case['shape']))} | {case['pred_dtype']}/"
                f"{case['true_dtype']} | {name} | {v['median_ms']:.2f} | {v['p20_ms']:.2f} | "
                f"{v['p80_ms']:.2f} | {harness.speedup_text(base, v['samples_s'])} | "
                f"{v['median_ms'] / floor_ms:.2f} | {v['rel_error']:.1e} | "
                f"{v['grad_rel_error']:.1e} | {v['grad_dtype']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="wiou-bench --backend torch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_case_arguments(parser, PRED_DTYPES, TRUE_DTYPES, DTYPES,
                               f"shapes like 16x512x512x1 (default: {' '.join(DEFAULT_SIZES)})",
                               "torch-cpu-<processor>-<cores>c")
    args = harness.parse_case_arguments(parser, argv, "torch", DTYPES)
    import keras
    import numpy as np
    import torch

    shapes = args.sizes or [harness.size_argument(size) for size in DEFAULT_SIZES]
    results = {"backend": "torch",
               "device": f"CPU ({harness.cpu_name()}, {os.cpu_count()} cores)",
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "keras": keras.__version__, "python": platform.python_version(),
               "rounds": args.rounds,
               "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(
                   timespec="seconds")}
    results["read_gbps"] = _read_bandwidth(max(4 * int(np.prod(shapes[-1])), 1 << 26),
                                           args.rounds)
    results["cases"] = harness.run_cases(
        shapes, args.dtypes, lambda *case: run_case(*case, args.rounds), "wiou-bench torch")
    out = harness.out_folder(args, f"torch-{harness.machine_slug('cpu')}")
    harness.write_results(out, results, markdown(results), "wiou-bench torch")

if __name__ == "__main__":
    main()
