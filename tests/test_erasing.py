"""Random erasing: one rectangle of the stated area and aspect, at the stated rate, stateless, in the pipeline."""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_vit import cli_train, data, erasing


def erased_boxes(originals, outputs):
    """(rows, cols, count) of the pixels that changed, per image; rows x cols == count for a rectangle."""
    changed = np.any(originals != outputs, axis=-1)
    return [(c.any(1).sum(), c.any(0).sum(), c.sum()) for c in changed]


def test_always_erases_one_rectangle_of_the_stated_area_and_aspect_filled_with_noise():
    size = 40
    image = tf.fill((size, size, 3), -1.0)  # outside the noise range: every erased pixel shows
    rows_cols = []
    for i in range(300):
        out = erasing.random_erasing(image, tf.constant([i, 7]), probability=1.0).numpy()
        changed = np.any(out != -1.0, axis=-1)
        rows, cols = changed.any(1).sum(), changed.any(0).sum()
        assert changed.sum() == rows * cols > 0, "the erased pixels form one full rectangle"
        assert (out[changed] >= 0).all() and (out[changed] <= 255).all(), "noise in the pixel range"
        assert len(np.unique(out[changed])) > rows * cols, "noise differs per pixel and channel"
        rows_cols.append((rows, cols))
    rows, cols = np.array(rows_cols, "float64").T
    area = rows * cols / size**2
    # Rounding each side to whole pixels moves the area by under (h + w + 1) / size**2.
    slack = (rows + cols + 1) / size**2
    assert (area >= erasing.AREA_RANGE[0] - slack).all() and (area <= erasing.AREA_RANGE[1] + slack).all()
    uncut = (rows < size) & (cols < size)
    ratio = rows[uncut] / cols[uncut]
    low, high = erasing.ASPECT_RATIO_RANGE
    assert (ratio >= low * 0.8).all() and (ratio <= high / 0.8).all()
    # Log-uniform aspect: the mean log ratio sits near 0, about as many tall boxes as wide ones.
    assert abs(np.mean(np.log(ratio))) < 0.25
    # Uniform area: the mean near the middle of the range (about 0.18 of the image).
    assert abs(area.mean() - sum(erasing.AREA_RANGE) / 2) < 0.03


def test_erases_at_the_stated_rate_and_never_at_zero():
    image = tf.fill((16, 16, 1), -1.0)
    hits = [bool(np.any(erasing.random_erasing(image, tf.constant([i, 0]), probability=0.3).numpy() != -1.0))
            for i in range(1000)]
    # Binomial(1000, 0.3): standard deviation 14.5; five of them either way.
    assert abs(sum(hits) - 300) < 73
    for i in range(20):
        out = erasing.random_erasing(image, tf.constant([i, 0]), probability=0.0)
        np.testing.assert_array_equal(out, image)


def test_the_same_seed_erases_the_same_way():
    image = tf.zeros((28, 28, 1))
    first = erasing.random_erasing(image, tf.constant([3, 4]), probability=1.0)
    again = erasing.random_erasing(image, tf.constant([3, 4]), probability=1.0)
    other = erasing.random_erasing(image, tf.constant([3, 5]), probability=1.0)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("kwargs, message", [
    (dict(probability=1.5), "probability must be in \\[0, 1\\]"),
    (dict(probability=0.5, area_range=(0.0, 0.3)), "area range"),
    (dict(probability=0.5, area_range=(0.4, 0.3)), "area range"),
    (dict(probability=0.5, aspect_ratio_range=(2.0, 1.0)), "aspect ratio range"),
])
def test_bad_settings_name_what_was_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        erasing.random_erasing(tf.zeros((8, 8, 1)), tf.constant([0, 0]), **kwargs)


def test_the_pipeline_erases_training_images_only_and_deterministically():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (64, 28, 28, 1)).astype("uint8")
    source = tf.data.Dataset.from_tensor_slices({"image": images, "label": np.zeros(64, "int64")})

    def first_batch(**kwargs):
        return next(iter(data.pipeline(source, 28, 64, 10, area_range=None, flip=False, shuffle_buffer=1,
                                       seed=5, **kwargs)))[0].numpy()

    erased = first_batch(training=True, erasing=0.5)
    np.testing.assert_array_equal(erased, first_batch(training=True, erasing=0.5))
    plain = first_batch(training=True)
    np.testing.assert_array_equal(plain[..., 0], images[..., 0].astype("float32"))
    boxes = erased_boxes(plain, erased)
    hit = [count > 0 for _, _, count in boxes]
    assert 16 < sum(hit) < 48, "about half of the 64 images are erased"
    assert all(rows * cols == count for rows, cols, count in boxes), "each erased region is one rectangle"
    assert np.array_equal(erased[..., 0], erased[..., 2]), "erased before grey becomes RGB: grey noise"
    evaluated = first_batch(training=False, erasing=0.5)
    np.testing.assert_array_equal(evaluated, plain)
    with pytest.raises(ValueError, match="probability"):
        data.pipeline(source, 28, 64, 10, training=True, erasing=2.0)


def test_train_flag_reaches_the_pipeline():
    from absl import flags

    values = flags.FlagValues()
    cli_train.define_flags(values)
    values(["keras-vit", "--erasing=0.25"])
    assert cli_train.augmentation(values)["erasing"] == 0.25
    assert math.isclose(erasing.ASPECT_RATIO_RANGE[0] * erasing.ASPECT_RATIO_RANGE[1], 1.0)
