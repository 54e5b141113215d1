"""Random erasing (Zhong et al., AAAI 2020, https://arxiv.org/abs/1708.04896).

With probability `probability`, one axis-aligned rectangle of an image is
replaced by uniform noise over the pixel range. Its area is a uniform fraction
of the image in `area_range` and its aspect ratio (height / width) is
log-uniform in `aspect_ratio_range`; a rectangle taller or wider than the image
is cut to the image. The defaults are the paper's (and timm's `--reprob`):
area 2%-33.3%, aspect 0.3-3.3.

Stateless: the same seed erases the same rectangle with the same noise, which
keeps `data.pipeline` deterministic.
"""

import math

import tensorflow as tf

AREA_RANGE = (0.02, 1 / 3)
ASPECT_RATIO_RANGE = (0.3, 1 / 0.3)


def random_erasing(image, seed, probability=0.5, area_range=AREA_RANGE, aspect_ratio_range=ASPECT_RATIO_RANGE,
                   value_range=(0.0, 255.0)):
    """Erases one random rectangle of `image` with probability `probability`.

    Args:
        image: float `(H, W, C)` tensor.
        seed: shape-`(2,)` int tensor, the stateless seed.
        probability: float in [0, 1], the chance that the image is erased.
        area_range: `(low, high)`, the rectangle's area as a fraction of the
            image's, `0 < low <= high <= 1`.
        aspect_ratio_range: `(low, high)`, the rectangle's height / width,
            `0 < low <= high`.
        value_range: `(low, high)` of the noise that fills the rectangle.

    Returns:
        A tensor of `image`'s shape and dtype.

    Example:

    >>> erased = random_erasing(tf.zeros((28, 28, 1)), seed=[1, 2], probability=1.0)
    >>> 0 < int(tf.math.count_nonzero(erased)) <= 28 * 28 // 3 + 28
    True
    """
    check(probability, area_range, aspect_ratio_range)
    image = tf.convert_to_tensor(image)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = tf.random.stateless_uniform((), seeds[0], *area_range) * h * w
    log_ratio = tf.random.stateless_uniform((), seeds[1], *map(math.log, aspect_ratio_range))
    ratio = tf.exp(log_ratio)
    box_h = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * ratio)), tf.int32), 1, height)
    box_w = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / ratio)), tf.int32), 1, width)
    corner = tf.random.stateless_uniform((2,), seeds[2], 0.0, 1.0)
    top = tf.cast(corner[0] * tf.cast(height - box_h + 1, tf.float32), tf.int32)
    left = tf.cast(corner[1] * tf.cast(width - box_w + 1, tf.float32), tf.int32)
    rows = tf.range(height)[:, None, None]
    cols = tf.range(width)[None, :, None]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    noise_seed, coin_seed = tf.unstack(tf.random.experimental.stateless_split(seeds[3], 2))
    noise = tf.random.stateless_uniform(tf.shape(image), noise_seed, *value_range, dtype=image.dtype)
    erase = tf.random.stateless_uniform((), coin_seed) < probability
    return tf.where(inside & erase, noise, image)


def check(probability, area_range=AREA_RANGE, aspect_ratio_range=ASPECT_RATIO_RANGE):
    """Raises a `ValueError` naming the argument when the settings are out of range."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"The random-erasing probability must be in [0, 1]. Received: {probability}")
    low, high = area_range
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"The random-erasing area range must satisfy 0 < low <= high <= 1. Received: {area_range}")
    low, high = aspect_ratio_range
    if not 0.0 < low <= high:
        raise ValueError("The random-erasing aspect ratio range must satisfy 0 < low <= high. "
                         f"Received: {aspect_ratio_range}")
