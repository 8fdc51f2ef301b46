"""End-to-end benchmark: a small U-Net trained with model.fit, seed class vs WeightedIoULoss.

    python -m wiou_ops.bench.e2e [--steps 40] [--batch 8] [--size 128] [--data FOLDER] [--out DIR]

Each loss trains in a fresh process from the same initial weights on the same
batches (built-in synthetic roads, or ``--data`` tiles read with
``data.image_mask_dataset``). Reported per loss: median step time (first
three steps, which trace, left out), peak resident memory of the training
above what model and data took, the IoU reached on held-out tiles, and the
loss's share of the step (the loss alone, forward+backward at the same batch
shape, over the step time). For a model of any size the loss is a small part
of the step: this table says how small.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

LOSSES = ("seed", "wiou_ops")


def unet(size, base=16):
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
    outputs = layers.Conv2D(1, 1, activation="sigmoid")(u1)
    return keras.Model(inputs, outputs, name="unet")


def _vm(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


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

    if os.path.exists("/proc/self/clear_refs"):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    base = _vm("VmRSS")
    history = model.fit(dataset, epochs=1, steps_per_epoch=steps, callbacks=[Timer()],
                        shuffle=False, verbose=0)
    peak = _vm("VmHWM") - base

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
        "peak_bytes": int(peak), "iou": iou, "final_loss": float(history.history["loss"][-1]),
        "loss_ms": loss_ms, "loss_share": loss_ms / step_ms,
    }


def markdown(runs):
    first = runs[0]
    lines = [
        "## End-to-end: U-Net, model.fit, seed class vs wiou_ops",
        "",
        f"{first['steps']} steps, batch {first['batch']}, {first['size']}x{first['size']} tiles "
        f"({first['data']}), Adam 1e-3, same initial weights and batches; step times are "
        "medians after the first three steps; IoU on 32 held-out tiles at threshold 0.5.",
        "",
        "| loss | implementation | step ms (p20-p80) | loss alone ms | loss share of step "
        "| peak MB | final loss | IoU |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['loss']} | {r['implementation']} | {r['step_ms_median']:.1f} "
            f"({r['step_ms_p20']:.1f}-{r['step_ms_p80']:.1f}) | {r['loss_ms']:.2f} | "
            f"{100 * r['loss_share']:.1f} % | {r['peak_bytes'] / 1e6:.0f} | "
            f"{r['final_loss']:.4f} | {r['iou']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m wiou_ops.bench.e2e", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    for loss_name in LOSSES:
        print(f"[wiou-bench e2e] training with the {loss_name} loss", file=sys.stderr, flush=True)
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
