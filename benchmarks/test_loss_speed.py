"""Every variant of wiou-bench (seed class and wiou_ops implementations) under pytest-benchmark."""

import pytest

import wiou_ops
from wiou_ops.bench import variants

NAMES = variants.variant_names(wiou_ops.available_implementations())


@pytest.fixture(scope="module")
def inputs(shape, dtypes):
    return variants.make_inputs(shape, *dtypes)


@pytest.mark.parametrize("pass_name", variants.PASSES)
@pytest.mark.parametrize("name", NAMES)
def test_loss_speed(benchmark, inputs, name, pass_name):
    y_true, y_pred = inputs
    run = variants.build(name, pass_name)
    run(y_true, y_pred)  # trace and compile outside the timing
    benchmark.group = f"{'x'.join(map(str, y_pred.shape))} {y_pred.dtype.name}/" \
                      f"{y_true.dtype.name} {pass_name}"
    benchmark.extra_info.update(variant=name, shape=list(y_pred.shape))
    loss = benchmark(lambda: run(y_true, y_pred)[0].numpy())
    assert loss == pytest.approx(float(run(y_true, y_pred)[0]), rel=1e-5)
