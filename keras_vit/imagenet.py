"""ImageNet helpers: `preprocess_input`, `decode_predictions` and the class index.

The ImageNet-1k class index ships inside the package
(`imagenet_class_index.json`, the same `{"0": ["n01440764", "tench"], ...}`
layout as the one `keras.applications` downloads): WordNet ids in the
standard ILSVRC-2012 order, named by each synset's first lemma.
"""

import functools
import json
from importlib import resources

import numpy as np

NUM_CLASSES = 1000


def preprocess_input(x, data_format=None):
    """A placeholder that returns its input, as for Keras' ConvNeXt.

    Models built with `include_preprocessing=True` (the default) take RGB
    pixels in [0, 255] and scale them to [-1, 1] in the graph, so nothing is
    needed here. For a model built with `include_preprocessing=False`, use
    `keras_vit.imagenet.scale_pixels`.

    Args:
        x: float array or tensor of RGB pixels in [0, 255].
        data_format: unused; kept for the `keras.applications` signature.

    Returns:
        `x`, unchanged.

    Example:

    >>> preprocess_input(np.full((1, 2, 2, 3), 255.0)).max()
    np.float64(255.0)
    """
    del data_format
    return x


def scale_pixels(x):
    """Maps RGB pixels in [0, 255] to [-1, 1] as `(x - 127.5) / 127.5` (paper's input scaling)."""
    return (np.asarray(x, dtype="float32") - 127.5) / 127.5


@functools.lru_cache(maxsize=None)
def class_index():
    """Returns the ImageNet-1k class index: {"0": ["n01440764", "tench"], ...}."""
    text = resources.files("keras_vit").joinpath("imagenet_class_index.json").read_text("utf-8")
    return json.loads(text)


def decode_predictions(preds, top=5):
    """Decodes the predictions of an ImageNet-1k model.

    Same output as `keras.applications.imagenet_utils.decode_predictions`,
    without the download: the class index is part of the package.

    Args:
        preds: array of shape `(samples, 1000)`, probabilities or logits.
        top: int, how many top guesses to return. Defaults to `5`.

    Returns:
        A list with one list per sample of `(class_name, class_description,
        score)` tuples, best first.

    Example:

    >>> p = np.zeros((1, 1000)); p[0, 281] = 1.0
    >>> decode_predictions(p, top=1)[0][0][:2]
    ('n02123045', 'tabby')
    """
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != NUM_CLASSES:
        raise ValueError(
            "`decode_predictions` expects a batch of predictions (i.e. a 2D array of shape "
            f"(samples, 1000)). Received array with shape: {preds.shape}"
        )
    index = class_index()
    results = []
    for pred in preds:
        best = np.argsort(pred)[-top:][::-1]
        results.append([tuple(index[str(i)]) + (pred[i],) for i in best])
    return results
