"""End-to-end benchmark: a small U-Net trained with model.fit, seed class vs WeightedIoULoss.

    python -m wiou_ops.bench.e2e [--runs 3] [--steps 40] [--batch 8] [--size 128]
                                 [--data FOLDER] [--out DIR]

Every training runs in a fresh process from the same initial weights on the same
batches (built-in synthetic roads, or ``--data`` tiles read with
``data.image_mask_dataset``), interleaved: seed, wiou_ops, seed, wiou_ops, ...
(``--runs`` each), so that a machine that gets slower or faster during the
benchmark weighs on both alike. One run per loss, in sequence, can show a 30 %
difference that is not there. Reported per loss: the median step time over the
runs' steps (first three steps of each run, which trace, left out), the spread
of the runs' own medians, the speed-up with a bootstrap 95 % interval
(resampling runs, then steps), peak resident memory of the training above what
model and data took (Linux), the IoU reached on held-out tiles, and the loss's
share of the step (the loss alone, forward+backward at the same batch shape,
over the step time). For a model of any size the loss is a small part of the
step: this table says how small.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

from wiou_ops.bench import harness

LOSSES = ("seed", "wiou_ops")


def unet(size, base=16, classes=1):
    """A small U-Net: sigmoid probabilities (classes=1), else one logit per class."""
    import keras
    from keras import layers

    def block(x, filters):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        return layers.Conv2D(filters, 3, padding="same", activation="relu")(x)

    inputs = keras.Input((size, size, 3))
    d1 = block(inputs, base)
    d2 = block(layers.MaxPooling2D()(d1), 2 * base)
    bottom = block(layers.MaxPooling2D()(d2), 4 * base)
    u2 = block(layers.Concatenate()([layers.UpSampling2D()(bottom), d2]), 2 * base)
    u1 = block(layers.Concatenate()([layers.UpSampling2D()(u2), d1]), base)
    outputs = layers.Conv2D(classes, 1, activation="sigmoid" if classes == 1 else None)(u1)
    return keras.Model(inputs, outputs, name="unet")


def _vm(field):
    """A byte count from /proc/self/status (Linux), or None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _binary_iou(masks, probabilities):
    truth = masks.astype(bool)
    guess = probabilities >= 0.5
    union = np.logical_or(truth, guess).sum()
    return float(np.logical_and(truth, guess).sum() / union) if union else 1.0


def train_one(loss_name, steps, batch, size, data=None):
    """Runs in the child process; returns the measurements as a dict."""
    import keras
    import tensorflow as tf

    import wiou_ops
    from wiou_ops.bench import data as bench_data

    keras.utils.set_random_seed(0)
    model = unet(size)
    if data:
        dataset = bench_data.image_mask_dataset(data, batch_size=batch, size=size,
                                                shuffle=False).repeat().take(steps)
    else:
        images, masks = bench_data.synthetic_roads(steps * batch, size, seed=1)
        dataset = tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch)
    loss = (wiou_ops.SeedWeightedIoULoss(0.5, 1.5) if loss_name == "seed"
            else wiou_ops.WeightedIoULoss(0.5, 1.5))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)

    step_times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, step, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, step, logs=None):
            step_times.append(time.perf_counter() - self.start)

    try:  # reset the resident high-water mark (Linux); elsewhere no peak is reported
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _vm("VmRSS")
    except OSError:
        base = None
    history = model.fit(dataset, epochs=1, steps_per_epoch=steps, callbacks=[Timer()],
                        shuffle=False, verbose=0)
    high = _vm("VmHWM")
    peak = None if base is None or high is None else high - base

    held_images, held_masks = bench_data.synthetic_roads(32, size, seed=2)
    iou = _binary_iou(held_masks, model.predict(held_images, batch_size=batch, verbose=0))

    y_true = tf.constant(held_masks[:batch].astype(np.float32))
    y_pred = tf.constant(np.random.default_rng(0).random(y_true.shape, dtype=np.float32))

    @tf.function
    def loss_step(y_true, y_pred):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            value = loss(y_true, y_pred)
        return value, tape.gradient(value, y_pred)

    loss_step(y_true, y_pred)
    loss_times = []
    for _ in range(20):
        start = time.perf_counter()
        loss_step(y_true, y_pred)[0].numpy()
        loss_times.append(time.perf_counter() - start)
    timed = step_times[3:] or step_times
    step_ms = float(np.median(timed) * 1e3)
    loss_ms = float(np.median(loss_times) * 1e3)
    return {
        "loss": loss_name, "steps": steps, "batch": batch, "size": size,
        "data": str(data) if data else "synthetic roads",
        "implementation": wiou_ops.last_implementation() if loss_name != "seed" else "seed",
        "step_ms_median": step_ms, "step_ms_p20": float(np.percentile(timed, 20) * 1e3),
        "step_ms_p80": float(np.percentile(timed, 80) * 1e3),
        "step_s": [float(t) for t in timed],
        "peak_bytes": None if peak is None else int(peak), "iou": iou,
        "final_loss": float(history.history["loss"][-1]),
        "loss_ms": loss_ms, "loss_share": loss_ms / step_ms,
    }


def run_order(runs):
    """seed, wiou_ops, seed, wiou_ops, ...: ``runs`` of each loss, interleaved."""
    return [loss for _ in range(runs) for loss in LOSSES]


def step_interval(seed_runs, our_runs, resamples=2000, seed=0):
    """Bootstrap 95 % interval of median step(seed) / median step(wiou_ops): runs are
    resampled (a run's process and the machine's state while it ran), then steps."""
    rng = np.random.default_rng(seed)

    def median_of_resample(runs):
        chosen = [runs[k] for k in rng.integers(0, len(runs), len(runs))]
        steps = np.concatenate([np.asarray(r["step_s"]) for r in chosen])
        return np.median(steps[rng.integers(0, steps.size, steps.size)])

    ratios = [median_of_resample(seed_runs) / median_of_resample(our_runs)
              for _ in range(resamples)]
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def summary(runs):
    """Per loss: runs pooled (median step), the spread of the runs' medians, the rest."""
    rows = {}
    for loss in LOSSES:
        mine = [r for r in runs if r["loss"] == loss]
        steps = np.concatenate([np.asarray(r["step_s"]) for r in mine]) * 1e3
        peaks = [r["peak_bytes"] for r in mine if r["peak_bytes"] is not None]
        rows[loss] = {
            "implementation": mine[0]["implementation"], "runs": len(mine),
            "step_ms_median": float(np.median(steps)),
            "run_medians_ms": [r["step_ms_median"] for r in mine],
            "loss_ms": float(np.median([r["loss_ms"] for r in mine])),
            "peak_bytes": max(peaks) if peaks else None,
            "final_loss": float(np.median([r["final_loss"] for r in mine])),
            "iou": float(np.median([r["iou"] for r in mine])),
        }
    seed_runs = [r for r in runs if r["loss"] == "seed"]
    our_runs = [r for r in runs if r["loss"] == "wiou_ops"]
    rows["wiou_ops"]["speedup"] = rows["seed"]["step_ms_median"] / rows["wiou_ops"][
        "step_ms_median"]
    rows["wiou_ops"]["speedup_95"] = step_interval(seed_runs, our_runs)
    return rows


def markdown(runs):
    first = runs[0]
    rows = summary(runs)
    lines = [
        "## End-to-end: U-Net, model.fit, seed class vs wiou_ops",
        "",
        f"{first['steps']} steps, batch {first['batch']}, {first['size']}x{first['size']} tiles "
        f"({first['data']}), Adam 1e-3, same initial weights and batches. "
        f"{rows['seed']['runs']} runs per loss, each in a fresh process, interleaved "
        "(seed, wiou_ops, seed, ...). Step ms: median over all runs' steps after each run's "
        "first three; runs: each run's own median; speed-up: seed step / wiou_ops step with "
        "its bootstrap 95 % interval (runs resampled, then steps): an interval that contains "
        "1.00 means no measurable difference. Values per run: medians over runs. IoU on 32 "
        "held-out tiles at threshold 0.5.",
        "",
        "| loss | implementation | step ms | runs' medians ms | speed-up (95 % CI) "
        "| loss alone ms | loss share of step | peak MB | final loss | IoU |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for loss, r in rows.items():
        speedup = "1.00x (baseline)" if loss == "seed" else (
            f"{r['speedup']:.2f}x ({r['speedup_95'][0]:.2f}-{r['speedup_95'][1]:.2f})")
        peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 1e6:.0f}"
        lines.append(
            f"| {loss} | {r['implementation']} | {r['step_ms_median']:.1f} | "
            + ", ".join(f"{m:.1f}" for m in r["run_medians_ms"]) + f" | {speedup} | "
            f"{r['loss_ms']:.2f} | {100 * r['loss_ms'] / r['step_ms_median']:.1f} % | {peak} | "
            f"{r['final_loss']:.4f} | {r['iou']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m wiou_ops.bench.e2e", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=harness.positive_int, default=3,
                        help="trainings per loss, interleaved, each in a fresh process "
                             "(default 3)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="tile side, a multiple of 4")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="folder with images/ and masks/ (default: synthetic roads)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="also write e2e.json and e2e.md there")
    parser.add_argument("--child", choices=LOSSES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 4 or args.batch < 1 or args.size < 4 or args.size % 4:
        parser.error("need --steps >= 4, --batch >= 1 and --size a multiple of 4")
    if args.data is not None and not args.data.is_dir():
        parser.error(f"--data {args.data} is not a folder")
    if args.child:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        print(json.dumps(train_one(args.child, args.steps, args.batch, args.size, args.data)))
        return
    runs = []
    order = run_order(args.runs)
    for k, loss_name in enumerate(order, 1):
        print(f"[wiou-bench e2e] run {k}/{len(order)}: training with the {loss_name} loss",
              file=sys.stderr, flush=True)
        command = [sys.executable, "-m", "wiou_ops.bench.e2e", "--child", loss_name,
                   "--steps", str(args.steps), "--batch", str(args.batch), "--size", str(args.size)]
        if args.data:
            command += ["--data", str(args.data)]
        out = subprocess.run(command, capture_output=True, text=True,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        if out.returncode != 0:
            raise SystemExit(f"e2e training with {loss_name} failed:\n{out.stderr[-3000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    text = markdown(runs)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "e2e.json").write_text(json.dumps(runs, indent=1))
        (args.out / "e2e.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
