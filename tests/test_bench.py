"""The report tool: statistics on known inputs, byte counts, schema, report and plot."""

import json

import pytest

from wiou_ops.bench import __main__ as bench
from wiou_ops.bench import harness, memory, variants


def test_summarize_known_samples():
    stats = harness.summarize([0.001 * k for k in range(1, 11)])  # 1..10 ms
    assert stats["median_ms"] == pytest.approx(5.5)
    assert stats["p20_ms"] == pytest.approx(2.8)
    assert stats["p80_ms"] == pytest.approx(8.2)
    assert stats["n"] == 10


def test_interleaved_rounds_are_seeded_permutations():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    ticks = iter(range(10000))
    samples = harness.interleaved_times(fns, rounds=6, warmup=1, clock=lambda: next(ticks))
    assert calls[:4] == ["a", "b", "c", "d"]  # warm-up
    rounds = [tuple(calls[4 + 4 * r:8 + 4 * r]) for r in range(6)]
    assert all(sorted(r) == ["a", "b", "c", "d"] for r in rounds)  # each variant once a round
    assert len(set(rounds)) > 1  # the order changes between rounds
    again = []
    harness.interleaved_times({n: (lambda n=n: again.append(n)) for n in "abcd"}, rounds=6,
                              warmup=1, clock=lambda: 0)
    assert again == calls  # seeded: the same schedule every run
    assert all(len(v) == 6 and all(s == 1 for s in v) for v in samples.values())


def test_speedup_interval_on_known_samples():
    """Paired rounds: a variant that is 2x faster in every round, with noise shared by the
    round, has a tight interval at 2; one no faster has an interval around 1."""
    import numpy as np

    rng = np.random.default_rng(1)
    round_noise = rng.uniform(1.0, 1.5, 30)  # the machine's state, shared by the round
    base = 0.010 * round_noise
    low, high = harness.ratio_interval(base, base / 2)
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)
    same = 0.010 * rng.uniform(1.0, 1.5, 30)
    low, high = harness.ratio_interval(base, same)
    assert low < 1.0 < high
    assert harness.speedup_text(base, base / 2) == "2.00x (2.00-2.00)"


def test_default_output_folder_is_under_the_working_directory():
    import argparse
    import pathlib

    parser = argparse.ArgumentParser()
    harness.add_out_arguments(parser, "<machine>")
    args = parser.parse_args([])
    assert harness.out_folder(args, "cpu-x-2c") == pathlib.Path("wiou-bench-results/cpu-x-2c")
    args = parser.parse_args(["--out-root", "benchmarks/results"])
    assert harness.out_folder(args, "cpu-x-2c") == pathlib.Path("benchmarks/results/cpu-x-2c")
    args = parser.parse_args(["--out", "here"])
    assert harness.out_folder(args, "cpu-x-2c") == pathlib.Path("here")


@pytest.mark.parametrize("module", ["jax_bench", "torch_bench", "distribute", "e2e"])
@pytest.mark.parametrize("argv", [["--sizes", "0x8"], ["--dtypes", "int8/uint8"],
                                  ["--rounds", "0"], ["--size", "abc"], ["--replicas", "1"],
                                  ["--runs", "0"]])
def test_every_benchmark_validates_its_arguments(module, argv, capsys):
    """A bad value is refused by name before anything runs (an unknown argument too)."""
    import importlib

    main = importlib.import_module(f"wiou_ops.bench.{module}").main
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    assert argv[0] in capsys.readouterr().err


def test_byte_counts():
    # forward: read float32 y and p once (8 B); forward+backward: twice, plus the gradient.
    assert harness.forward_bytes(10, 4, 4) == 80
    assert harness.forward_backward_bytes(10, 4, 4) == 200
    # bfloat16 p, uint8 y: 2·(2 + 1) + 2 = 8 B per element.
    assert harness.forward_backward_bytes(10, 2, 1) == 80


@pytest.mark.parametrize("argv", [["--sizes", "16xabc"], ["--dtypes", "float32"],
                                  ["--dtypes", "int8/uint8"], ["--rounds", "0"],
                                  ["--implementations", "cuda"]])
def test_bad_arguments_exit_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv + ["--quick", "--sizes", "1x8x8x1"] if argv[0] != "--sizes" else argv)
    assert exit_info.value.code != 0
    assert argv[0].lstrip("-") in (capsys.readouterr().err + str(exit_info.value.code))


def test_quick_run_writes_schema_report_and_plot(tmp_path):
    import re

    from wiou_ops._backends import tensorflow as tf_backend

    implementations = dict(tf_backend.IMPLEMENTATIONS)
    bench.main(["--quick", "--sizes", "2x32x32x1", "--dtypes", "bfloat16/uint8",
                "--distribute", "--out", str(tmp_path)])
    # The kernel variants (label masks on and off) came in as arguments: nothing changed.
    assert tf_backend.IMPLEMENTATIONS == implementations
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("device", "cpu", "cores", "tensorflow", "keras", "timestamp", "rounds", "cases"):
        assert key in results
    assert {c["pass"] for c in results["cases"]} == set(variants.PASSES)
    for case in results["cases"]:
        assert case["pred_dtype"] == "bfloat16" and case["true_dtype"] == "uint8"
        assert case["read_gbps"] > 0 and case["bytes"] > 0
        assert set(case["variants"]) == set(variants.variant_names(
            __import__("wiou_ops").available_implementations()))
        for stats in case["variants"].values():
            assert stats["n"] == 5 and len(stats["samples_s"]) == 5 and stats["median_ms"] > 0
            assert stats["rel_error"] < 1e-4
    options = results["options"]
    implementations = __import__("wiou_ops").available_implementations()
    assert set(options["median_ms"]) == {f"{impl}|{name}" for impl in implementations
                                         for name in variants.OPTION_SETS}
    assert options["baseline_ms"] > 0 and all(ms > 0 for ms in options["median_ms"].values())
    [masks_row] = results["label_masks"]  # one size, one dtype pair
    assert masks_row["pred_dtype"] == "bfloat16" and masks_row["true_dtype"] == "uint8"
    assert set(masks_row["median_ms"]) == {"label masks", "y and p"}
    assert all(ms > 0 for ms in masks_row["median_ms"].values())
    report_md = (tmp_path / "report.md").read_text()
    assert "## The native gradient from label masks" in report_md
    assert "| seed tf.function |" in report_md
    # Every speed-up carries its bootstrap interval: main tables, options, label masks.
    interval = r"\d+\.\d\dx \(\d+\.\d\d-\d+\.\d\d\)"
    assert re.search(r"\| seed eager \| [^|]+\| [^|]+\| [^|]+\| " + interval, report_md)
    assert re.search(r"\| class \+ weight map \| [^|]+, " + interval, report_md)
    assert re.search(r"\| 2x32x32x1 \| bfloat16/uint8 \| [^|]+\| [^|]+\| " + interval,
                     report_md)
    assert "## What each option costs" in report_md and "| class + weight map |" in report_md
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "distribute.json").read_text())["rounds"] == 5


def test_peak_memory_of_a_variant():
    """16 MB gradient output: the native fused loss needs about that, the seed far more."""
    shape = (16, 512, 512, 1)
    native = memory.measure("wiou_ops native tf.function", "forward+backward", shape,
                            "float32", "float32")
    seed = memory.measure("seed tf.function", "forward+backward", shape, "float32", "float32")
    assert 8e6 < native < 64e6
    assert seed > 2 * native


def test_float64_reference_of_the_report_matches_the_test_oracle():
    import numpy as np

    from wiou_ops import oracle

    rng = np.random.default_rng(3)
    y = (rng.random((3, 17, 19, 1)) < 0.1).astype(np.uint8)
    p = rng.random((3, 17, 19, 1)).astype(np.float32)
    got, _ = oracle.seed_loss_float64(y, p, 0.5, 1.5, chunks=5)
    want, _ = oracle.seed_value_and_grad(y, p, weight_background=0.5, weight_foreground=1.5)
    assert got == pytest.approx(want, rel=1e-12)


def test_distribute_benchmark_reports_the_all_reduce_cost(tmp_path):
    from wiou_ops.bench import distribute

    distribute.main(["--replicas", "2", "--size", "4x32x32x1", "--rounds", "2",
                     "--out", str(tmp_path)])
    results = json.loads((tmp_path / "distribute.json").read_text())
    times = results["times"]["2"]
    assert set(times) == set(distribute.VARIANTS) | {"one device, whole batch"}
    assert all(ms > 0 for ms in times.values())
    assert "cross_replica cost, seed (True - False)" in (tmp_path / "distribute.md").read_text()


def test_jax_backend_benchmark_and_the_prepared_gpu_script(tmp_path):
    """wiou-bench --backend jax (a KERAS_BACKEND=jax process) and benchmarks/gpu_jax_bench.py,
    both on this CPU with a tiny size: schema, every dtype pair, errors against float64."""
    import os
    import pathlib
    import subprocess
    import sys

    from wiou_ops.bench import jax_bench

    bench.main(["--backend", "jax", "--sizes", "2x32x32x1", "--rounds", "2",
                "--out", str(tmp_path / "jax")])
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    run = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_jax_bench.py"),
                          "--sizes", "2x32x32x1", "--rounds", "2", "--dtypes", "bfloat16/uint8",
                          "--pallas", "on", "--hlo", "on", "--out", str(tmp_path / "gpu")],
                         env=dict(env, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3"),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for folder, pairs in (("jax", jax_bench.DTYPES), ("gpu", [("bfloat16", "uint8")])):
        results = json.loads((tmp_path / folder / "results.json").read_text())
        assert results["backend"] == "jax" and results["copy_gbps"] > 0
        assert [(c["pred_dtype"], c["true_dtype"]) for c in results["cases"]] == list(pairs)
        for case in results["cases"]:
            # This CPU's default backward reads y and p; the other one is timed beside it.
            assert results["default_backward"] == "y and p"
            pallas = {jax_bench.PALLAS} if folder == "gpu" else set()  # interpreted here
            assert set(case["variants"]) == {jax_bench.SEED, jax_bench.FUSED, jax_bench.CODES,
                                             *pallas} and not case["failed"]
            assert case["label_code_bytes"] < case["bytes"]
            for stats in case["variants"].values():
                assert stats["n"] == 2 and stats["rel_error"] < 1e-5
                assert stats["grad_rel_error"] < (1e-5 if case["pred_dtype"] == "float32"
                                                  else 8e-3)
        assert "| seed class (keras.ops), jit |" in (tmp_path / folder / "report.md").read_text()
    # The optimized HLO of each wiou_ops variant, to see on a GPU what XLA fused.
    hlo = {path.name: path.read_text() for path in (tmp_path / "gpu").glob("hlo-*.txt")}
    assert set(hlo) == {"hlo-wiou-ops-jax.txt", "hlo-wiou-ops-jax-backward-from-label-codes.txt",
                        "hlo-wiou-ops-jax-pallas-forward-label-codes.txt"}
    assert "conditional" in hlo["hlo-wiou-ops-jax-backward-from-label-codes.txt"]
    assert "conditional" not in hlo["hlo-wiou-ops-jax.txt"]  # this CPU: y/p backward


def test_jax_bench_reports_a_variant_that_fails_and_times_the_others():
    """On the GPU a kernel may fail to compile (the Pallas forward's Triton step runs only
    there): the run must go on and the report say so."""
    import jax

    from wiou_ops import jax as wiou_jax
    from wiou_ops.bench import jax_bench

    def broken(y_true, y_pred):
        raise RuntimeError("Triton compile failed\nlong details")

    fns = {jax_bench.SEED: jax.jit(jax.value_and_grad(
        lambda y, p: wiou_jax.seed_weighted_iou_loss(y, p, weight_background=jax_bench.WB,
                                                     weight_foreground=jax_bench.WF), 1)),
           jax_bench.PALLAS: broken}
    case = jax_bench.run_case(fns, (1, 8, 8, 1), "float32", "float32", rounds=2)
    assert list(case["variants"]) == [jax_bench.SEED]
    assert case["failed"] == {jax_bench.PALLAS: "RuntimeError: Triton compile failed"}
    results = {"device": "cpu:test", "jax": "x", "keras": "x", "python": "x", "timestamp": "t",
               "rounds": 2, "copy_gbps": 1.0, "read_gbps": 1.0, "default_backward": "y and p",
               "cases": [case]}
    assert f"{jax_bench.PALLAS} failed: RuntimeError: Triton compile failed" in \
        jax_bench.markdown(results)
