"""Past 2^31 elements on TensorFlow: value and gradient against float64 on native and xla.

One image of 2^31 + 2^21 + 7 elements (uint8 labels, bfloat16 predictions), eager,
tf.function and inside jit_compile, per image and not: ``tests/past_int32_tf.py``
says what is checked; it runs once in a fresh interpreter (~15 GB peak, ~4 minutes).
Marked ``large``: ``pytest -m "not large"`` skips it locally; ``make test`` runs it.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.past_int32_tf import CASES, case_id

pytestmark = pytest.mark.large
ROOT = pathlib.Path(__file__).resolve().parents[1]


_RUN = []  # the one subprocess run, kept even when it fails (no rerun per case)


@pytest.fixture
def results():
    if not _RUN:
        _RUN.append(subprocess.run(
            [sys.executable, "-m", "tests.past_int32_tf"], cwd=ROOT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
            capture_output=True, text=True, timeout=1800))
    run = _RUN[0]
    assert run.returncode == 0, (run.returncode, run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES, ids=lambda case: case_id(*case))
def test_value_and_gradient_past_int32(results, case):
    assert results[case_id(*case)] == "ok"
