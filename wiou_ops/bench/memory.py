"""Peak memory of one variant, measured in a fresh process.

``python -m wiou_ops.bench.memory NAME PASS SHAPE PRED/TRUE DEVICE`` builds the
inputs, traces the variant where it is a tf.function (without running it),
resets the kernel's resident high-water mark (/proc/self/clear_refs), runs it
three times and prints the peak resident bytes above the resident size before
those runs: the memory the loss needs, inputs excluded. TensorFlow's CPU
allocator keeps what it frees, so this is the first runs' high-water mark; it
includes XLA's one-off compilation for the jit_compile variant. On a GPU
(TensorFlow GPU build; not exercised on the CPU-only CI machine) TensorFlow's
own peak statistics are used instead, after one compiling run.
"""

import os
import subprocess
import sys


def _status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_here(name, pass_name, shape, pred_dtype, true_dtype, device="cpu"):
    import tensorflow as tf

    from wiou_ops.bench import variants

    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    y_true, y_pred = variants.make_inputs(shape, pred_dtype, true_dtype)
    run = variants.build(name, pass_name)
    if hasattr(run, "get_concrete_function"):
        run.get_concrete_function(y_true, y_pred)  # trace without running
    if device == "gpu":  # the framework's own peak statistics
        run(y_true, y_pred)[0].numpy()  # compile (XLA) outside the measurement
        tf.config.experimental.reset_memory_stats("GPU:0")
        base = tf.config.experimental.get_memory_info("GPU:0")["current"]
        for _ in range(3):
            run(y_true, y_pred)[0].numpy()
        return max(0, tf.config.experimental.get_memory_info("GPU:0")["peak"] - base)
    return resident_peak(lambda: run(y_true, y_pred)[0].numpy())


def resident_peak(call, runs=3):
    """Peak resident bytes above the resident size before ``runs`` calls (Linux)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current VmRSS
    base = _status_bytes("VmRSS")
    for _ in range(runs):
        call()
    return max(0, _status_bytes("VmHWM") - base)


def measure(name, pass_name, shape, pred_dtype, true_dtype, device="cpu", timeout=300):
    """Peak extra bytes of the variant, from a subprocess; None if it cannot be measured."""
    if device == "cpu" and not os.path.exists("/proc/self/clear_refs"):
        return None
    command = [sys.executable, "-m", "wiou_ops.bench.memory", name, pass_name,
               "x".join(map(str, shape)), f"{pred_dtype}/{true_dtype}", device]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement of {name!r} failed:\n{out.stderr[-2000:]}")
    return int(out.stdout.split()[-1])


if __name__ == "__main__":
    variant, pass_arg, shape_arg, dtypes_arg, device_arg = sys.argv[1:6]
    pred, true = dtypes_arg.split("/")
    print(measure_here(variant, pass_arg, tuple(int(d) for d in shape_arg.split("x")), pred, true,
                       device_arg))
