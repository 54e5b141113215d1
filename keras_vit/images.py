"""Decoding and resizing encoded images exactly as at evaluation.

One set of TensorFlow ops serves three callers, so a picture gets the same
pixels wherever it enters: `keras-vit predict` and Python users (through
`load_image`), and the `serve_bytes` signature of an exported SavedModel
(through `inspect_image` and `decode_and_resize`, which run inside its graph).

Evaluation preprocessing is the paper's (Dosovitskiy et al., ICLR 2021,
https://arxiv.org/abs/2010.11929): resize the whole image to the model's
size (bilinear, no crop), keep RGB pixels in [0, 255]; the model scales them
itself. Grayscale images are repeated to RGB and alpha is dropped, as in
`keras_vit.data`'s pipelines.

Accepted formats: JPEG, PNG, GIF (first frame) and BMP. Checks happen on the
header before any pixel is decoded, so a huge image is refused without
allocating it.
"""

import os

import numpy as np
import tensorflow as tf

# 40 megapixels: a 48 MP phone photo is refused, an 8K frame (33 MP) passes.
# Decoding allocates height * width * 3 bytes before any resize can happen.
MAX_PIXELS = 40_000_000
FORMATS = ("JPEG", "PNG", "GIF", "BMP")

# Status codes of `inspect_image`; the graph and Python share them.
OK, EMPTY, UNKNOWN_FORMAT, TOO_LARGE, CORRUPT = 0, 1, 2, 3, 4
_HEADER_BYTES = 32


class ImageError(ValueError):
    """An encoded image that cannot be used: empty, not an image, corrupt or too large."""


def _uint(header, start, length, little_endian):
    """Unsigned integer stored in `header[start:start + length]` (a uint8 tensor)."""
    order = range(length) if little_endian else range(length - 1, -1, -1)
    value = tf.constant(0, tf.int64)
    for shift, i in enumerate(order):
        value += tf.cast(header[start + i], tf.int64) * (256**shift)
    return value


def inspect_image(data, max_pixels=MAX_PIXELS):
    """Reads an encoded image's format and size from its header, without decoding it.

    Runs in eager mode and inside `tf.function`s. Never raises for short or
    non-image data; a corrupt JPEG header may raise `InvalidArgumentError`
    (JPEG sizes are read by `tf.image.extract_jpeg_shape`).

    Args:
        data: scalar `tf.string` tensor (or Python bytes), the encoded image.
        max_pixels: int, larger images get `TOO_LARGE`. Defaults to
            `MAX_PIXELS` (40 million).

    Returns:
        A tuple `(status, height, width)` of int64 scalars; `status` is one of
        `OK`, `EMPTY`, `UNKNOWN_FORMAT`, `TOO_LARGE`.

    Example:

    >>> png = tf.io.encode_png(np.zeros((5, 7, 3), "uint8"))
    >>> [int(v) for v in inspect_image(png)]
    [0, 5, 7]
    >>> int(inspect_image(b"hello")[0]) == UNKNOWN_FORMAT
    True
    """
    data = tf.convert_to_tensor(data, tf.string)
    length = tf.strings.length(data)
    # Padding makes every header read below safe for short inputs.
    padded = tf.strings.join([data, tf.constant(b"\0" * _HEADER_BYTES)])
    header = tf.io.decode_raw(tf.strings.substr(padded, 0, _HEADER_BYTES), tf.uint8)
    prefix = tf.strings.substr(padded, 0, 8)
    is_jpeg = tf.strings.substr(prefix, 0, 3) == b"\xff\xd8\xff"
    is_png = prefix == b"\x89PNG\r\n\x1a\n"
    is_gif = tf.strings.substr(prefix, 0, 4) == b"GIF8"
    is_bmp = tf.strings.substr(prefix, 0, 2) == b"BM"
    zero = tf.constant(0, tf.int64)

    def jpeg_size():
        shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
        return shape[0], shape[1]

    def png_size():
        return _uint(header, 20, 4, False), _uint(header, 16, 4, False)

    def gif_size():
        return _uint(header, 8, 2, True), _uint(header, 6, 2, True)

    def bmp_size():
        # Height is signed: negative for top-down bitmaps.
        height = tf.bitcast(tf.cast(_uint(header, 22, 4, True), tf.uint32), tf.int32)
        return tf.abs(tf.cast(height, tf.int64)), _uint(header, 18, 4, True)

    height, width = tf.case(
        [(is_jpeg, jpeg_size), (is_png, png_size), (is_gif, gif_size), (is_bmp, bmp_size)],
        default=lambda: (zero, zero),
    )
    known = is_jpeg | is_png | is_gif | is_bmp
    status = tf.where(
        length == 0,
        tf.constant(EMPTY, tf.int64),
        tf.where(
            ~known,
            tf.constant(UNKNOWN_FORMAT, tf.int64),
            tf.where(height * width > max_pixels, tf.constant(TOO_LARGE, tf.int64), zero + OK),
        ),
    )
    return status, height, width


def decode_and_resize(data, size, channels=3):
    """Decodes one encoded image and resizes it as at evaluation.

    Args:
        data: scalar `tf.string` tensor, a JPEG, PNG, GIF or BMP image.
        size: `(height, width)` of the model's input.
        channels: 3 (grayscale repeated, alpha dropped) or 1.

    Returns:
        float32 tensor `(height, width, channels)`, pixels in [0, 255].
        Raises `tf.errors.InvalidArgumentError` for corrupt or truncated data.

    Example:

    >>> png = tf.io.encode_png(np.full((10, 20, 1), 255, "uint8"))
    >>> image = decode_and_resize(png, (4, 4))
    >>> tuple(image.shape), float(image.numpy().min())
    ((4, 4, 3), 255.0)
    """
    if channels == 3:
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    else:
        # GIF decoders only give RGB, so decode as stored and convert here.
        image = tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False)
        stored = tf.shape(image)[-1]
        image = tf.cond(
            stored >= 3,
            lambda: tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image[..., :3], tf.float32))), tf.uint8),
            lambda: image[..., :1],
        )
    image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
    return tf.ensure_shape(tf.clip_by_value(image, 0.0, 255.0), tuple(size) + (channels,))


def status_message(status, height=0, width=0, max_pixels=MAX_PIXELS):
    """The human-readable reason for an `inspect_image` status code."""
    if status == EMPTY:
        return "empty image (0 bytes)"
    if status == UNKNOWN_FORMAT:
        return f"not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image (unrecognised header)"
    if status == TOO_LARGE:
        return f"image too large: {height}x{width} pixels is more than max_pixels={max_pixels:,}"
    if status == CORRUPT:
        return "corrupt or truncated image data (the decoder failed)"
    return ""


def read_bytes(source):
    """Returns the bytes of `source`: a path, or bytes as they are."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise ImageError(f"No such image file. Received: {path!r}")
    with open(path, "rb") as f:
        return f.read()


def load_image(source, size, channels=3, max_pixels=MAX_PIXELS):
    """Loads an image file (or encoded bytes) as the model sees it at evaluation.

    Args:
        source: path of a JPEG, PNG, GIF or BMP file, or its bytes.
        size: int or `(height, width)`, the model's input size.
        channels: 3 or 1. Defaults to `3`.
        max_pixels: larger images are refused before decoding.

    Returns:
        float32 numpy array `(height, width, channels)`, pixels in [0, 255].

    Raises:
        ImageError: for a missing or empty file, a file that is not an image,
            corrupt or truncated data, or an image larger than `max_pixels`;
            the message names the file and the reason.

    Example:

    >>> png = tf.io.encode_png(np.zeros((28, 28, 4), "uint8")).numpy()
    >>> load_image(png, 32).shape
    (32, 32, 3)
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3. Received: channels={channels!r}")
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    data = read_bytes(source)
    try:
        status, height, width = (int(v) for v in inspect_image(data, max_pixels))
        if status == OK:
            return decode_and_resize(tf.constant(data), size, channels).numpy()
    except tf.errors.InvalidArgumentError:
        status, height, width = CORRUPT, 0, 0
    raise ImageError(f"Cannot read image {name}: {status_message(status, height, width, max_pixels)}")


def load_images(sources, size, channels=3, max_pixels=MAX_PIXELS):
    """Loads several images into one float32 batch `(n, height, width, channels)`.

    Example:

    >>> png = tf.io.encode_png(np.zeros((8, 8, 3), "uint8")).numpy()
    >>> load_images([png, png], (16, 16)).shape
    (2, 16, 16, 3)
    """
    return np.stack([load_image(s, size, channels, max_pixels) for s in sources])
