"""What cross_replica's all-reduce costs per step, next to the loss itself (tf.distribute).

For 2 and 4 logical CPU devices (MirroredStrategy; each count in a fresh
process, since logical devices are fixed before TensorFlow starts), one step is
``strategy.run`` of the loss and its gradient w.r.t. the replica's predictions
on its slice of a global batch. Timed, interleaved, in the same process:

* ``cross_replica=False`` and ``cross_replica=True`` (seed and pixel weighting):
  their difference is what the global IoU costs;
* the all-reduce alone: the same ``ReplicaContext.all_reduce`` of a (1, 3)
  float32 tensor and a scalar, as the loss does;
* the loss on one device on the whole global batch, for scale.

On one machine the "replicas" share its cores and memory bandwidth, so the
absolute step times say little about a real multi-device step; the all-reduce
cost (a few scalars through tf.distribute's cross-device ops) is the number
this reports.

    python -m wiou_ops.bench.distribute --out DIR [--replicas 2 4] [--size 16x512x512x1]
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

from wiou_ops.bench import harness

VARIANTS = ("seed, cross_replica=False", "seed, cross_replica=True",
            "pixel, cross_replica=False", "pixel, cross_replica=True",
            "all-reduce alone")


def _measure(replicas, shape, rounds):
    """Runs in the child process: returns {variant: median ms, ...}."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)])
    import wiou_ops
    from wiou_ops.bench import variants

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    y_np, p_np = (t.numpy() for t in variants.make_inputs(shape, "float32", "float32"))
    local = shape[0] // replicas

    def split(array):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(array[ctx.replica_id_in_sync_group * local:
                                          (ctx.replica_id_in_sync_group + 1) * local]))

    y_local, p_local = split(y_np), split(p_np)

    def loss_step(loss_fn):
        @tf.function
        def step(y, p):
            def replica_fn(yb, pb):
                with tf.GradientTape() as tape:
                    tape.watch(pb)
                    loss = loss_fn(yb, pb)
                return loss, tape.gradient(loss, pb)

            losses, grads = strategy.run(replica_fn, args=(y, p))
            # Returned, so that the graph keeps the backward pass (unused outputs are pruned).
            return (strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None),
                    strategy.experimental_local_results(grads))

        return lambda: step(y_local, p_local)[0].numpy()

    @tf.function
    def all_reduce_alone():
        def replica_fn():
            context = tf.distribute.get_replica_context()
            return context.all_reduce(tf.distribute.ReduceOp.SUM,
                                      (tf.ones([1, 3]), tf.constant(1.0)))

        sums, _ = strategy.run(replica_fn)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

    calls = {}
    for name in VARIANTS[:4]:
        weighting, flag = name.split(", ")
        loss_fn = wiou_ops.WeightedIoULoss(weighting=weighting,
                                           cross_replica=flag.endswith("True"))
        calls[name] = loss_step(loss_fn)
    calls["all-reduce alone"] = lambda: all_reduce_alone().numpy()
    y_all, p_all = tf.constant(y_np), tf.constant(p_np)
    whole = variants.build("wiou_ops auto tf.function", "forward+backward")
    calls["one device, whole batch"] = lambda: whole(y_all, p_all)[0].numpy()
    samples = harness.interleaved_times(calls, rounds=rounds)
    return {name: harness.summarize(secs)["median_ms"] for name, secs in samples.items()}


def markdown(results):
    shape = "x".join(map(str, results["shape"]))
    lines = [
        "# cross_replica: the all-reduce's cost per step (tf.distribute, logical CPU devices)",
        "",
        f"Machine: {results['cpu']}, {results['cores']} cores. TensorFlow "
        f"{results['tensorflow']}. Global batch {shape} float32, split evenly; one step = "
        "strategy.run(loss and its gradient w.r.t. the replica's predictions); median of "
        f"{results['rounds']} interleaved rounds. The logical devices share the machine's cores "
        "and memory bandwidth: compare rows within a column, not with a real multi-device step.",
        "",
        "| variant (median ms per step) | " + " | ".join(
            f"{r} replicas" for r in results["replicas"]) + " |",
        "|---|" + "---:|" * len(results["replicas"]),
    ]
    names = list(VARIANTS) + ["one device, whole batch"]
    for name in names:
        cells = [f"{results['times'][str(r)][name]:.2f}" for r in results["replicas"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for weighting in ("seed", "pixel"):
        cells = []
        for r in results["replicas"]:
            t = results["times"][str(r)]
            cells.append(f"{t[f'{weighting}, cross_replica=True'] - t[f'{weighting}, cross_replica=False']:+.2f}")
        lines.append(f"| cross_replica cost, {weighting} (True - False) | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m wiou_ops.bench.distribute",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=harness.positive_int, nargs="+", default=[2, 4],
                        help="logical CPU device counts, each >= 2 (default: 2 4)")
    parser.add_argument("--size", type=harness.size_argument, default=(16, 512, 512, 1),
                        help="global batch shape like 16x512x512x1")
    parser.add_argument("--rounds", type=harness.positive_int, default=20)
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="also write distribute.json and distribute.md there")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = args.size
    if any(r < 2 for r in args.replicas):
        parser.error(f"--replicas: each count must be >= 2, got {args.replicas}")
    if any(shape[0] % r for r in args.replicas):
        parser.error(f"--size: the batch {shape[0]} must split evenly over {args.replicas}")
    if args.child is not None:
        print(json.dumps(_measure(args.child, shape, args.rounds)), flush=True)
        return
    import tensorflow as tf

    results = {"cpu": harness.cpu_name(), "cores": os.cpu_count(),
               "tensorflow": tf.__version__, "shape": list(shape), "rounds": args.rounds,
               "replicas": args.replicas, "times": {}}
    for replicas in args.replicas:
        print(f"[wiou-bench distribute] {replicas} logical devices", file=sys.stderr, flush=True)
        child = subprocess.run(
            [sys.executable, "-m", "wiou_ops.bench.distribute", "--child", str(replicas),
             "--size", "x".join(map(str, shape)), "--rounds", str(args.rounds)],
            capture_output=True, text=True, timeout=1200,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        if child.returncode != 0:
            raise SystemExit(f"distribute benchmark with {replicas} replicas failed:\n"
                             f"{child.stderr[-3000:]}")
        results["times"][str(replicas)] = json.loads(child.stdout.strip().splitlines()[-1])
    text = markdown(results)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "distribute.json").write_text(json.dumps(results, indent=1))
        (args.out / "distribute.md").write_text(text)


if __name__ == "__main__":
    main()
