"""The report tool: statistics on known inputs, byte counts, a seconds-long run."""

import json

import pytest

from wiou_ops.bench import __main__ as bench
from wiou_ops.bench import harness


def test_summarize_known_samples():
    stats = harness.summarize([0.001 * k for k in range(1, 11)])  # 1..10 ms
    assert stats["median_ms"] == pytest.approx(5.5)
    assert stats["p20_ms"] == pytest.approx(2.8)
    assert stats["p80_ms"] == pytest.approx(8.2)
    assert stats["n"] == 10


def test_interleaved_order_rotates():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    ticks = iter(range(1000))
    samples = harness.interleaved_times(fns, rounds=3, warmup=1, clock=lambda: next(ticks))
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(v) == 3 and all(s == 1 for s in v) for v in samples.values())


def test_forward_backward_bytes():
    # float32 y and p: read both twice (16 B), write a float32 gradient (4 B).
    assert harness.forward_backward_bytes(10, 4, 4) == 200
    # bfloat16 p, uint8 y: 2·(2 + 1) + 2 = 8 B per element.
    assert harness.forward_backward_bytes(10, 2, 1) == 80


def test_bad_sizes_are_named():
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "16xabc"])


def test_quick_run_writes_report(tmp_path):
    bench.main(["--quick", "--sizes", "2x32x32x1", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    variants = results["cases"][0]["variants"]
    assert {"seed eager", "seed tf.function", "seed jit_compile"} <= set(variants)
    for stats in variants.values():
        assert stats["n"] == 5 and stats["median_ms"] > 0
        assert stats["rel_error"] < 1e-4
    assert "| seed tf.function |" in (tmp_path / "report.md").read_text()
