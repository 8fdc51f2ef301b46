"""cross_replica=True under tf.distribute: the global-batch IoU on every replica.

Training parity (tests/distributed_training.py, in subprocesses): the same model,
initial weights and global batches, trained on one device and under
MirroredStrategy on 2 and 4 logical CPU devices (a custom loop and model.fit),
and under MultiWorkerMirroredStrategy with 2 worker processes on 127.0.0.1.
With cross_replica=True losses and weights match the single device within
1e-5; with cross_replica=False (and the seed class) each replica computes its
own IoU and the run drifts away, by the amounts asserted below.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import wiou_ops
from tests import distributed_training

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
PARITY = 1e-5
# Per-replica IoUs instead of the global one: measured weight drift after 4 steps on the
# test data is 1e-4 (class) to 6e-3 (pixel) with 2 replicas; asserted well below.
MIN_DRIFT = 2e-5


def _json_line(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


_RUNS = {}


def _mirrored_run(replicas):
    if replicas not in _RUNS:
        run = subprocess.run(
            [sys.executable, "-m", "tests.distributed_training", "--replicas", str(replicas)],
            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        _RUNS[replicas] = _json_line(run.stdout)
    return _RUNS[replicas]


@pytest.fixture(params=[2, 4], ids=lambda r: f"{r}-replicas")
def mirrored(request):
    return _mirrored_run(request.param)


def _check_parity_and_drift(results):
    checked = 0
    for key, diff in results.items():
        if not isinstance(diff, dict):
            continue
        _, name, flag = key.split("|")
        assert diff["reference_moved"] > 0.05, (key, diff)  # training really moved
        if flag == "cross_replica=True" or "per_image" in name:
            # The global IoU; per-image IoUs need no all-reduce and match either way.
            assert diff["weight_max_diff"] <= PARITY, (key, diff)
            assert diff["loss_rel_diff"] <= PARITY, (key, diff)
        else:
            assert diff["weight_max_diff"] >= MIN_DRIFT, (key, diff)
        checked += 1
    return checked


def test_mirrored_strategy_training_parity(mirrored):
    assert _check_parity_and_drift(mirrored) == 2 * (2 * len(distributed_training.LOSSES) + 1)


def test_without_cross_replica_we_drift_exactly_like_the_seed_class(mirrored):
    """The drop-in holds under tf.distribute too: per-replica IoUs, as the seed class."""
    for trainer in ("loop", "fit"):
        ours = mirrored[f"{trainer}|seed|cross_replica=False"]
        seed = mirrored[f"{trainer}|seed class|cross_replica=False"]
        assert abs(ours["weight_max_diff"] - seed["weight_max_diff"]) <= 1e-6
        assert abs(ours["loss_rel_diff"] - seed["loss_rel_diff"]) <= 1e-5


def test_the_per_replica_gap_grows_with_the_number_of_replicas():
    two, four = _mirrored_run(2), _mirrored_run(4)
    for name in ("seed", "pixel", "class"):
        key = f"loop|{name}|cross_replica=False"
        assert four[key]["weight_max_diff"] > two[key]["weight_max_diff"], key


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_multi_worker_mirrored_strategy_on_loopback():
    """Two worker processes, started and always stopped here, bounded in time."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    try:
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                 "index": index}})
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "tests.distributed_training", "--multi-worker",
                 "--trainers", "loop"],
                cwd=ROOT, env=dict(ENV, TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True))
        outputs = [worker.communicate(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=30)
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
        results = _json_line(stdout)
        assert results["replicas"] == 2
        assert _check_parity_and_drift(results) == 2 * len(distributed_training.LOSSES) + 1


@pytest.mark.parametrize("weighting", ["seed", "pixel", "class"])
def test_cross_replica_is_a_no_op_outside_a_replica_context(weighting):
    rng = np.random.default_rng(0)
    y = (rng.random((4, 16, 16, 1)) < 0.2).astype(np.float32)
    p = rng.random((4, 16, 16, 1)).astype(np.float32)
    on = wiou_ops.weighted_iou_loss(y, p, weighting=weighting, cross_replica=True)
    off = wiou_ops.weighted_iou_loss(y, p, weighting=weighting, cross_replica=False)
    assert float(on) == float(off)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])  # one replica: nothing to reduce
    with strategy.scope():
        one = strategy.run(lambda: wiou_ops.weighted_iou_loss(y, p, weighting=weighting,
                                                              cross_replica=True))
    assert float(strategy.reduce("SUM", one, axis=None)) == pytest.approx(float(off), rel=1e-6)


@pytest.mark.parametrize("options", [dict(), dict(weighting="pixel"),
                                     dict(weighting="class", per_image=True, log=False),
                                     dict(from_logits=True)],
                         ids=["seed", "pixel", "class-per_image", "logits"])
def test_train_step_with_cross_replica_compiles_with_xla(options):
    """What a TPU compiles: the whole step under jit_compile (static shapes, no host ops),
    the loss on the `xla` implementation inside it."""
    import keras

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(1, 1)])
    loss_fn = wiou_ops.WeightedIoULoss(cross_replica=True, **options)
    activation = (lambda z: z) if options.get("from_logits") else tf.sigmoid

    @tf.function(jit_compile=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, activation(model(x)))
        return loss, tape.gradient(loss, model.trainable_variables)

    x = tf.random.stateless_normal((4, 8, 8, 3), seed=(1, 2))
    y = tf.cast(tf.random.stateless_uniform((4, 8, 8, 1), seed=(3, 4)) < 0.2, tf.float32)
    hlo = step.experimental_get_compiler_ir(x, y)(stage="hlo")
    for host_op in (" send(", " recv(", " infeed(", " outfeed(", " custom-call("):
        assert host_op not in hlo, host_op  # nothing leaves the device mid-step
    loss, grads = step(x, y)
    assert wiou_ops.last_implementation() == "xla"
    assert np.isfinite(float(loss)) and all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_guide_strategy_example_runs():
    """The worked example in the user guide, as written (2 logical CPU devices)."""
    readme = (ROOT / "docs" / "guide.md").read_text()
    section = readme[readme.index("## Training on several devices"):]
    code = section[section.index("```python\n") + len("```python\n"):]
    code = code[:code.index("```")]
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    losses = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(losses) == 2 and all(np.isfinite(losses)) and losses[1] < losses[0]
