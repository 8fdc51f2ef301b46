"""What the TPU and GPU compilers make of the loss, with no TPU or GPU: ``make bench-aot``.

Compiles forward+backward (the gradient w.r.t. y_pred) of ``wiou_ops.jax`` and of the
same loss written naively in ``jax.numpy`` (``naive.py``, autodiff), both under
``shard_map`` with the batch split over every chip of the target, deviceless: TPU
topologies through libtpu, NVIDIA GPUs through the CUDA plugin with a target
description (``targets.py``). Per chip it records, from the optimized HLO (``hlo.py``),
the bytes moved, fusions, full-size float32 arrays (float32 copies of an input among
them) and the longest float32 addition
chain of any reduction; from the compiler, temp/argument/output sizes and, on TPU, XLA's
own ``bytes accessed`` and flops. The byte floor of forward+backward: the inputs read
twice and the gradient written once.

    python benchmarks/aot/report.py --out benchmarks/results/aot [--targets v5e h100]
        [--cases quick|all]

Needs ``jax[tpu]`` and ``jax-cuda12-plugin`` (the Makefile's ``.venv-aot``); no Keras,
no TensorFlow.
"""

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import sys
import time

# Deviceless: no local accelerator is used or probed (CUDA's version check needs a driver).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Deviceless compiles hold no TPU: several processes (a test beside a report) may load it.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import cases as grid  # noqa: E402
import hlo  # noqa: E402
import naive  # noqa: E402
import targets  # noqa: E402

def loss_functions(case):
    """{"naive": fn, "wiou_ops": fn} of shard arguments, the global-batch loss (no
    "wiou_ops" where ``wiou_ops.jax`` does not take the case: ``cases.Case.jax_api``)."""
    import wiou_ops.jax as wj

    if case.classes is None:
        options = dict(weighting=case.weighting, per_image=case.per_image,
                       from_logits=case.from_logits)

        def wiou(y_true, y_pred, *weights):
            return wj.weighted_iou_loss(
                y_true, y_pred, weight_background=0.5, weight_foreground=1.5,
                sample_weight=weights[0] if weights else None, axis_name="batch", **options)

        def plain(y_true, y_pred, *weights):
            return naive.binary(y_true, y_pred, weight_map=weights[0] if weights else None,
                                **options)
        return {"naive": plain, **({"wiou_ops": wiou} if case.jax_api else {})}
    options = dict(sparse=case.sparse, multi_label=case.multi_label,
                   from_logits=case.from_logits, per_image=case.per_image)

    def wiou_multiclass(y_true, y_pred):
        return wj.multiclass_iou_loss(
            y_true, y_pred, sparse_y_true=options["sparse"], multi_label=case.multi_label,
            from_logits=case.from_logits, per_image=case.per_image, axis_name="batch")

    def plain_multiclass(y_true, y_pred):
        return naive.multiclass(y_true, y_pred, classes=case.classes, **options)
    return {"naive": plain_multiclass, "wiou_ops": wiou_multiclass}


def compile_program(fn, case, devices):
    """The compiled forward+backward (gradient w.r.t. y_pred) over ``devices``."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("batch",))
    shards = NamedSharding(mesh, PartitionSpec("batch"))
    args = [jax.ShapeDtypeStruct(shape, dtype, sharding=shards)
            for shape, dtype in case.shapes()]
    grad = jax.grad(fn, argnums=1)
    mapped = jax.shard_map(grad, mesh=mesh, in_specs=(PartitionSpec("batch"),) * len(args),
                           out_specs=PartitionSpec("batch"))
    return jax.jit(mapped).lower(*args).compile()


def compile_tensorflow(path, device):
    """TensorFlow's program of one chip (an HloModuleProto from tensorflow_programs.py),
    compiled for ``device`` by the same compiler: the HLO converted to StableHLO and
    given to the target's compile-only client, as ``jax.jit(...).compile()`` does."""
    from jax._src import compiler
    from jax._src.interpreters import mlir
    from jax._src.lib import _jax
    from jax._src.lib.mlir import ir

    with mlir.make_ir_context():
        module = ir.Module.parse(_jax.mlir.hlo_to_stablehlo(pathlib.Path(path).read_bytes()))
        options = compiler.get_compile_options(num_replicas=1, num_partitions=1,
                                               device_assignment=[device])
        return device.client.compile(module, executable_devices=_jax.DeviceList((device,)),
                                     compile_options=options)


def tensorflow_program(folder, target, case):
    """The path of ``case``'s TensorFlow program for ``target`` under ``folder``."""
    return pathlib.Path(folder) / ("tpu" if target.platform == "tpu" else "gpu") / \
        f"{case.slug}.pb"


def measure(compiled, case, chips, shard=True):
    """The numbers of one compiled program, per chip (``shard``: the program covers every
    chip's shard, else one chip's, as TensorFlow's)."""
    import jax.numpy as jnp
    import numpy as np

    text = compiled.as_text() if shard else compiled.hlo_modules()[0].to_string()
    memory = compiled.memory_analysis() if shard else compiled.get_compiled_memory_stats()
    try:
        cost = compiled.cost_analysis() or {}
    except Exception:  # noqa: BLE001 - XLA:GPU without a device has none
        cost = {}
    shapes = case.shapes()
    per_chip = [int(np.prod(shape)) // chips * jnp.dtype(dtype).itemsize
                for shape, dtype in shapes]
    pred_elements = int(np.prod(shapes[1][0])) // chips
    pixels = int(np.prod(shapes[0][0] if case.classes is None else grid.MULTICLASS_SHAPE)) // chips
    return {
        "bytes": hlo.program_bytes(text),
        "xla_bytes_accessed": cost.get("bytes accessed"),
        "flops": cost.get("flops"),
        "floor_bytes": 2 * sum(per_chip) + per_chip[1],
        "temp_bytes": memory.temp_size_in_bytes,
        "argument_bytes": memory.argument_size_in_bytes,
        "output_bytes": memory.output_size_in_bytes,
        "fusions": hlo.fusion_count(text),
        "longest_chain": hlo.longest_float32_chain(text),
        "full_size_float32": hlo.full_size_float32(text, min(pixels, pred_elements)),
        "float32_input_copies": hlo.float32_input_copies(text),
    }, text


def _host():
    """The CPU model and core count of the machine that compiled (nothing runs on it)."""
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def run(args):
    import jax

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"date": datetime.date.today().isoformat(), "jax": jax.__version__,
               "host": _host(), "targets": {}}
    for target_name in args.targets:
        target = targets.TARGETS[target_name]
        devices = target.devices()
        rows = []
        for case in grid.cases(args.cases):
            if args.only and args.only not in case.name:
                continue
            row = {"case": case.name, "spec": dataclasses.asdict(case)}
            for which, fn in loss_functions(case).items():
                start = time.perf_counter()
                compiled = compile_program(fn, case, devices)
                row[which], text = measure(compiled, case, len(devices))
                row[which]["compile_s"] = round(time.perf_counter() - start, 2)
                if args.hlo:
                    (out / f"hlo-{target_name}-{case.slug}-{which}.txt").write_text(text)
            if args.tensorflow:
                compiled = compile_tensorflow(
                    tensorflow_program(args.tensorflow, target, case), devices[0])
                row["tensorflow"], text = measure(compiled, case, len(devices), shard=False)
                if args.hlo:
                    (out / f"hlo-{target_name}-{case.slug}-tensorflow.txt").write_text(text)
            rows.append(row)
            print(f"{target_name:6s} {case.name:40s} x naive " + " ".join(
                f"{which} {row[which]['bytes'] / row['naive']['bytes']:.3f}"
                for which in ("wiou_ops", "tensorflow") if which in row), flush=True)
        results["targets"][target_name] = {"description": target.description,
                                           "chips": len(devices), "rows": rows}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text(markdown(results))
    return results


def _mib(n):
    return "—" if n is None else f"{n / 2**20:.1f}"



def _jax_cells(n, w):
    """The table's cells of ``wiou_ops.jax``'s program ``w`` beside the naive one's ``n``,
    from "wiou_ops MiB" to "f32 input copies"."""
    xla = ("—" if not n["xla_bytes_accessed"] else
           f"{w['xla_bytes_accessed'] / n['xla_bytes_accessed']:.3f}")
    flops = "—" if n["flops"] is None else f"{n['flops'] / 1e9:.2f} / {w['flops'] / 1e9:.2f}"
    return [_mib(w["bytes"]), f"{w['bytes'] / n['bytes']:.3f}",
            f"{w['bytes'] / w['floor_bytes']:.2f}", xla,
            f"{_mib(n['temp_bytes'])} / {_mib(w['temp_bytes'])}",
            f"{_mib(w['argument_bytes'])} / {_mib(w['output_bytes'])}",
            f"{n['fusions']} / {w['fusions']}", flops,
            f"{n['longest_chain']} / {w['longest_chain']}",
            f"{len(n['full_size_float32'])} / {len(w['full_size_float32'])}",
            f"{len(n['float32_input_copies'])} / {len(w['float32_input_copies'])}"]


def markdown(results):
    lines = ["# The loss as the TPU and GPU compilers build it (deviceless)", "",
             f"{results['date']}, JAX {results['jax']}, compiled on a {results['host']} host "
             "with no accelerator (`make bench-aot`, benchmarks/aot/report.py). "
             "Forward+backward (gradient w.r.t. y_pred) under `shard_map`, the batch split "
             "over every chip; binary inputs (1024, 512, 512, 1), multi-class logits "
             "(64, 512, 512, C). Per chip. Bytes: read+written by the executed "
             "instructions of the optimized HLO (benchmarks/aot/hlo.py; XLA's own count "
             "beside it on TPU); floor: inputs read twice, gradient written once; chain: "
             "the most float32 numbers one reduction adds into one output; full-size f32: "
             "float32 arrays as large as an input that the program writes besides its "
             "output; f32 input copies: those that only widen or copy an input. TF: "
             "TensorFlow's program of the Keras loss (a jit_compile step for one chip's "
             "shard, benchmarks/aot/tensorflow_programs.py) compiled for the same target.",
             ""]
    for name, target in results["targets"].items():
        rows = target["rows"]
        tensorflow = all("tensorflow" in r for r in rows)
        worst = {which: max(r[which]["bytes"] / r["naive"]["bytes"] for r in rows
                            if which in r)
                 for which in ("wiou_ops", "tensorflow") if which == "wiou_ops" or tensorflow}
        lines += [f"## {name}: {target['description']} ({target['chips']} chips)", "",
                  "Largest bytes ratio to naive: " + ", ".join(
                      f"{which} {ratio:.5f}" for which, ratio in worst.items()) + ".", "",
                  "| case | naive MiB | wiou_ops MiB | × naive | × floor | XLA bytes "
                  "× naive | temp MiB naive / wiou_ops | args / out MiB | fusions | "
                  "GFLOP naive / wiou_ops | chain naive / wiou_ops | full-size f32 | f32 input "
                  "copies |" + (" TF MiB | TF × naive | TF temp MiB | TF chain | TF f32 "
                               "full-size / input copies |" if tensorflow else ""),
                  "|---|---:|---:|---:|---:|---:|---|---|---|---|---|---|---|" +
                  ("---:|---:|---:|---:|---|" if tensorflow else "")]
        for r in rows:
            n = r["naive"]
            line = f"| {r['case']} | {_mib(n['bytes'])} | " + " | ".join(
                _jax_cells(n, r["wiou_ops"]) if "wiou_ops" in r else
                # TensorFlow's program alone (cases.Case.jax_api)
                ["—"] * 4 + [f"{_mib(n['temp_bytes'])} / —", "—", f"{n['fusions']} / —",
                             "—", f"{n['longest_chain']} / —",
                             f"{len(n['full_size_float32'])} / —",
                             f"{len(n['float32_input_copies'])} / —"]) + " |"
            if tensorflow:
                t = r["tensorflow"]
                line += (f" {_mib(t['bytes'])} | {t['bytes'] / n['bytes']:.3f} | "
                         f"{_mib(t['temp_bytes'])} | {t['longest_chain']} | "
                         f"{len(t['full_size_float32'])} / {len(t['float32_input_copies'])} |")
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="aot-results")
    parser.add_argument("--targets", nargs="+", default=list(targets.TARGETS),
                        choices=list(targets.TARGETS))
    parser.add_argument("--cases", choices=("quick", "test", "all"), default="all")
    parser.add_argument("--only", help="only the cases whose name contains this")
    parser.add_argument("--tensorflow", metavar="DIR",
                        help="also compile TensorFlow's programs from this folder "
                             "(tensorflow_programs.py, run with TensorFlow)")
    parser.add_argument("--hlo", action="store_true",
                        help="also write the optimized HLO of every program")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
