"""The TensorFlow backend's choice of kernel: what `auto` picks, and the XLA-context check."""

import numpy as np
import pytest
import tensorflow as tf

import wiou_ops
from tests import helpers
from wiou_ops._backends import tensorflow as tf_backend


def test_xla_context_detection():
    seen = {}

    def probe(x, key):
        seen[key] = tf_backend.in_xla_context()
        return x

    probe(tf.constant(1.0), "eager")
    tf.function(lambda x: probe(x, "graph"))(tf.constant(1.0))
    tf.function(lambda x: probe(x, "jit"), jit_compile=True)(tf.constant(1.0))
    outer = tf.function(lambda x: tf.function(lambda y: probe(y, "nested"))(x), jit_compile=True)
    outer(tf.constant(1.0))
    assert seen == {"eager": False, "graph": False, "jit": True, "nested": True}


def test_available_and_recorded():
    assert set(wiou_ops.available_implementations()) >= {"xla", "graph"}
    y = np.zeros((1, 4, 4, 1), np.float32)
    p = np.full((1, 4, 4, 1), 0.3, np.float32)
    for impl in wiou_ops.available_implementations():
        wiou_ops.weighted_iou_loss(y, p, implementation=impl)
        assert wiou_ops.last_implementation() == impl
    wiou_ops.weighted_iou_loss(y, p)
    assert wiou_ops.last_implementation() == helpers.expected_auto(in_xla=False)


@pytest.mark.skipif("native" not in wiou_ops.available_implementations(),
                    reason="the native kernel is tested in test_native.py for being built")
def test_native_inside_a_users_jit_compile_is_refused_by_name():
    y_true, y_pred = helpers.make_inputs((2, 8, 8, 1), "random")
    step = tf.function(lambda y, p: wiou_ops.weighted_iou_loss(y, p, implementation="native"),
                       jit_compile=True)
    with pytest.raises(ValueError, match="'native' cannot run inside an XLA computation"):
        step(y_true, y_pred)
