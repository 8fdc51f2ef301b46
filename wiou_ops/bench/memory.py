"""Peak memory of one variant, measured in a fresh process (CPU).

``python -m wiou_ops.bench.memory NAME PASS SHAPE PRED/TRUE`` builds the inputs,
runs the variant once (tracing and compiling), resets the kernel's resident
high-water mark (/proc/self/clear_refs), runs it three more times and prints
the peak resident bytes above the resident size before those runs: the
memory the loss itself needs, inputs excluded.
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


def measure_here(name, pass_name, shape, pred_dtype, true_dtype):
    from wiou_ops.bench import variants

    y_true, y_pred = variants.make_inputs(shape, pred_dtype, true_dtype)
    run = variants.build(name, pass_name)
    if hasattr(run, "get_concrete_function"):
        run.get_concrete_function(y_true, y_pred)  # trace without running
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current VmRSS
    base = _status_bytes("VmRSS")
    for _ in range(3):
        run(y_true, y_pred)[0].numpy()
    return max(0, _status_bytes("VmHWM") - base)


def measure(name, pass_name, shape, pred_dtype, true_dtype, timeout=300):
    """Peak extra bytes of the variant, from a subprocess; None if it cannot be measured."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    command = [sys.executable, "-m", "wiou_ops.bench.memory", name, pass_name,
               "x".join(map(str, shape)), f"{pred_dtype}/{true_dtype}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement of {name!r} failed:\n{out.stderr[-2000:]}")
    return int(out.stdout.split()[-1])


if __name__ == "__main__":
    variant, pass_arg, shape_arg, dtypes_arg = sys.argv[1:5]
    pred, true = dtypes_arg.split("/")
    print(measure_here(variant, pass_arg, tuple(int(d) for d in shape_arg.split("x")), pred, true))
