"""Data for the end-to-end benchmark: synthetic road tiles, and a tf.data recipe for real ones.

``synthetic_roads`` makes satellite-like tiles without downloads: a textured
background (smooth random fields at two scales plus grain) crossed by thin
random polylines of random width, about 3-8 % foreground, deterministic for a
seed. ``image_mask_dataset`` reads a user's own tiles: ``images/`` and
``masks/`` with matching file stems, PNG/JPEG through ``tf.io`` and GeoTIFF
through ``tifffile`` (a maintained reader; ``tensorflow-io`` no longer loads
under TensorFlow 2.21).
"""

import pathlib

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _smooth_field(rng, size, cells):
    """Random field on a cells x cells grid, bilinearly upsampled to size x size."""
    grid = rng.random((cells + 1, cells + 1))
    coords = np.linspace(0, cells, size)
    i0 = np.minimum(coords.astype(int), cells - 1)
    t = coords - i0
    rows = grid[i0] * (1 - t)[:, None] + grid[i0 + 1] * t[:, None]
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i0 + 1] * t[None, :]


def _polyline_mask(rng, size):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    mask = np.zeros((size, size), bool)
    for _ in range(rng.integers(2, 5)):
        width = rng.uniform(2.0, 4.5) * size / 128  # the same foreground share at any size
        points = [rng.uniform(0, size, 2)]
        for _ in range(rng.integers(2, 5)):
            step = rng.normal(0, size / 3, 2)
            points.append(np.clip(points[-1] + step, -size * 0.1, size * 1.1))
        for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
            dy, dx = y1 - y0, x1 - x0
            length2 = max(dy * dy + dx * dx, 1e-9)
            t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / length2, 0.0, 1.0)
            dist2 = (yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2
            mask |= dist2 <= (width / 2) ** 2
    return mask


def synthetic_roads(count, size=128, seed=0):
    """``count`` road tiles: images float32 (count, size, size, 3) in [0, 1] and
    masks uint8 (count, size, size, 1) in {0, 1}; the same for the same seed."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), np.float32)
    masks = np.empty((count, size, size, 1), np.uint8)
    for k in range(count):
        ground = 0.6 * _smooth_field(rng, size, 4) + 0.4 * _smooth_field(rng, size, 16)
        tint = rng.uniform(0.2, 0.6, 3)
        image = ground[..., None] * tint + 0.05 * rng.standard_normal((size, size, 3))
        mask = _polyline_mask(rng, size)
        road = rng.uniform(0.55, 0.8) + 0.03 * rng.standard_normal((size, size))
        image[mask] = road[mask, None]
        images[k] = np.clip(image, 0.0, 1.0)
        masks[k, ..., 0] = mask
    return images, masks


LAND_COVER_CLASSES = ("ground", "water", "building", "road")


def synthetic_land_cover(count, size=64, seed=0):
    """``count`` land-cover tiles with 4 classes (``LAND_COVER_CLASSES``): images float32
    (count, size, size, 3) in [0, 1] and class ids uint8 (count, size, size). Water is a
    thresholded smooth field, buildings random rectangles, roads thin polylines (a few
    percent), the rest ground; each class has its own tint. The same for the same seed."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), np.float32)
    ids = np.zeros((count, size, size), np.uint8)
    tints = np.array([[0.45, 0.4, 0.3], [0.15, 0.3, 0.55], [0.7, 0.35, 0.3],
                      [0.75, 0.75, 0.72]])
    for k in range(count):
        label = np.zeros((size, size), np.uint8)
        label[_smooth_field(rng, size, 3) > rng.uniform(0.6, 0.75)] = 1
        for _ in range(rng.integers(1, 5)):
            h, w = rng.integers(size // 10, size // 4, 2)
            r, c = rng.integers(0, size - h), rng.integers(0, size - w)
            label[r:r + h, c:c + w] = 2
        label[_polyline_mask(rng, size)] = 3
        texture = 0.7 + 0.3 * _smooth_field(rng, size, 8)
        image = tints[label] * texture[..., None] + 0.04 * rng.standard_normal((size, size, 3))
        images[k] = np.clip(image, 0.0, 1.0)
        ids[k] = label
    return images, ids


def _pairs(folder):
    folder = pathlib.Path(folder)
    images = {p.stem: p for p in sorted((folder / "images").iterdir())
              if p.suffix.lower() in IMAGE_SUFFIXES} if (folder / "images").is_dir() else {}
    masks = {p.stem: p for p in sorted((folder / "masks").iterdir())
             if p.suffix.lower() in IMAGE_SUFFIXES} if (folder / "masks").is_dir() else {}
    stems = sorted(images.keys() & masks.keys())
    if not stems:
        raise ValueError(f"data folder {folder}: no images/<name>.* with a masks/<name>.* to "
                         "match (PNG, JPEG or GeoTIFF)")
    return [str(images[s]) for s in stems], [str(masks[s]) for s in stems]


def _read_tiff(path):
    import tifffile

    array = np.asarray(tifffile.imread(path.decode() if isinstance(path, bytes) else path))
    if array.ndim == 2:
        array = array[..., None]
    return array.astype(np.float32)


def image_mask_dataset(folder, batch_size=8, size=None, shuffle=True, seed=0):
    """tf.data pipeline of (image float32 in [0, 1], mask uint8 in {0, 1}) batches.

    ``folder/images/NAME.(png|jpg|tif)`` pairs with ``folder/masks/NAME.(png|tif)``.
    8-bit images are scaled by 1/255, others by their tile's maximum; a mask
    pixel is foreground when it is > 0. ``size`` resizes (bilinear for images,
    nearest for masks).
    """
    import tensorflow as tf

    image_paths, mask_paths = _pairs(folder)

    def read(path, channels):
        def tiff():
            return tf.numpy_function(_read_tiff, [path], tf.float32)

        def encoded():
            decoded = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                         expand_animations=False)
            return tf.cast(decoded, tf.float32) / 255.0 if decoded.dtype == tf.uint8 \
                else tf.cast(decoded, tf.float32)

        lowered = tf.strings.lower(path)
        is_tiff = tf.strings.regex_full_match(lowered, r".*\.tiff?")
        array = tf.cond(is_tiff, tiff, encoded)
        array = tf.ensure_shape(array, [None, None, None])
        return array

    def load(image_path, mask_path):
        image = read(image_path, 3)
        image = tf.math.divide_no_nan(image, tf.maximum(tf.reduce_max(image), 1.0))
        mask = tf.cast(read(mask_path, 1)[..., :1] > 0, tf.uint8)
        if size is not None:
            image = tf.image.resize(image, [size, size])
            mask = tf.image.resize(mask, [size, size], method="nearest")
        return image, mask

    dataset = tf.data.Dataset.from_tensor_slices((image_paths, mask_paths))
    if shuffle:
        dataset = dataset.shuffle(len(image_paths), seed=seed)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
