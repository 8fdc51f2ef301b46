"""Synthetic road tiles, the tf.data recipe for real tiles, and the end-to-end run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from wiou_ops.bench import data, e2e


def test_synthetic_roads_foreground_share_and_determinism():
    images, masks = data.synthetic_roads(64, 128, seed=0)
    assert images.shape == (64, 128, 128, 3) and images.dtype == np.float32
    assert masks.shape == (64, 128, 128, 1) and masks.dtype == np.uint8
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert set(np.unique(masks)) == {0, 1}
    share = masks.mean()
    assert 0.03 <= share <= 0.08, share
    again_images, again_masks = data.synthetic_roads(64, 128, seed=0)
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(masks, again_masks)
    assert not np.array_equal(masks, data.synthetic_roads(64, 128, seed=1)[1])
    # The same share at another tile size.
    assert 0.03 <= data.synthetic_roads(16, 256, seed=0)[1].mean() <= 0.08


def _write_tiles(folder, images, masks):
    import tifffile

    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    as_u8 = (images * 255).round().astype(np.uint8)
    tf.io.write_file(str(folder / "images" / "a.png"), tf.io.encode_png(as_u8[0]))
    tf.io.write_file(str(folder / "masks" / "a.png"), tf.io.encode_png(masks[0] * 255))
    tf.io.write_file(str(folder / "images" / "b.jpg"), tf.io.encode_jpeg(as_u8[1], quality=100))
    tf.io.write_file(str(folder / "masks" / "b.png"), tf.io.encode_png(masks[1]))
    tifffile.imwrite(folder / "images" / "c.tif", (images[2] * 4000).astype(np.uint16))
    tifffile.imwrite(folder / "masks" / "c.tif", masks[2, ..., 0])
    (folder / "images" / "orphan.png").write_bytes(b"no mask for me")


def test_image_mask_dataset_reads_png_jpeg_and_geotiff(tmp_path):
    images, masks = data.synthetic_roads(3, 32, seed=4)
    _write_tiles(tmp_path, images, masks)
    batches = list(data.image_mask_dataset(tmp_path, batch_size=3, shuffle=False))
    assert len(batches) == 1
    got_images, got_masks = (b.numpy() for b in batches[0])
    assert got_images.shape == (3, 32, 32, 3) and got_images.dtype == np.float32
    assert got_masks.shape == (3, 32, 32, 1) and got_masks.dtype == np.uint8
    np.testing.assert_array_equal(got_masks, masks)
    np.testing.assert_allclose(got_images[0], images[0], atol=1 / 255)  # PNG: exact 8-bit
    assert np.mean(np.abs(got_images[1] - images[1])) < 0.05  # JPEG: lossy, chroma subsampled
    # 16-bit GeoTIFF: scaled by the tile's maximum
    np.testing.assert_allclose(got_images[2], images[2] / images[2].max(), atol=1e-3)
    resized = next(iter(data.image_mask_dataset(tmp_path, batch_size=2, size=16)))
    assert resized[0].shape == (2, 16, 16, 3) and resized[1].shape == (2, 16, 16, 1)


def test_image_mask_dataset_needs_pairs(tmp_path):
    with pytest.raises(ValueError, match="images/"):
        data.image_mask_dataset(tmp_path)


def test_end_to_end_smoke(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "wiou_ops.bench.e2e", "--runs", "2", "--steps", "4",
         "--batch", "2", "--size", "32", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, out.stderr[-3000:]
    runs = json.loads((tmp_path / "e2e.json").read_text())
    # Interleaved, each in its own process: seed, wiou_ops, seed, wiou_ops.
    assert [r["loss"] for r in runs] == list(e2e.LOSSES) * 2
    for r in runs:
        assert r["step_ms_median"] > 0 and 0 < r["loss_share"] < 1
        assert 0.0 <= r["iou"] <= 1.0 and np.isfinite(r["final_loss"])
        assert len(r["step_s"]) == 1  # 4 steps, the first three left out
    assert runs[1]["implementation"] in ("native", "xla")
    report = (tmp_path / "e2e.md").read_text()
    assert "| wiou_ops |" in report and "2 runs per loss" in report


def _fake_run(loss, step_s):
    return {"loss": loss, "implementation": loss, "step_s": list(step_s),
            "step_ms_median": float(np.median(step_s) * 1e3), "loss_ms": 1.0,
            "peak_bytes": None, "final_loss": 0.5, "iou": 0.5}


def test_end_to_end_speedup_interval_spans_the_runs():
    """Runs that differ only by which process they ran in must not show a speed-up: the
    interval resamples runs, so a slow seed run and a fast one give an interval around 1."""
    rng = np.random.default_rng(0)
    slow, fast = 0.17 + rng.normal(0, 0.002, 40), 0.13 + rng.normal(0, 0.002, 40)
    runs = [_fake_run("seed", slow), _fake_run("wiou_ops", fast), _fake_run("seed", fast),
            _fake_run("wiou_ops", slow), _fake_run("seed", fast), _fake_run("wiou_ops", slow)]
    low, high = e2e.summary(runs)["wiou_ops"]["speedup_95"]
    assert low < 1.0 < high
    # A real difference in every run stays one.
    runs = [_fake_run("seed", slow), _fake_run("wiou_ops", fast)] * 3
    low, high = e2e.summary(runs)["wiou_ops"]["speedup_95"]
    assert 1.2 < low <= high < 1.4
    assert "| - |" in e2e.markdown([dict(r, steps=4, batch=2, size=32, data="synthetic")
                                    for r in runs])


def test_end_to_end_on_a_tile_folder(tmp_path):
    images, masks = data.synthetic_roads(3, 32, seed=4)
    _write_tiles(tmp_path, images, masks)
    run = e2e.train_one("wiou_ops", steps=4, batch=2, size=32, data=tmp_path)
    assert run["data"] == str(tmp_path) and run["steps"] == 4
    assert np.isfinite(run["final_loss"]) and run["step_ms_median"] > 0


def test_end_to_end_arguments():
    with pytest.raises(SystemExit):
        e2e.main(["--size", "30"])
