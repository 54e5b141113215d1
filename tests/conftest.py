"""Fixtures shared by the test modules."""

import numpy as np
import pytest

import keras_vit
from keras_vit import export as vit_export


@pytest.fixture(scope="session")
def save_tiny_classifier():
    """Returns `save(path, class_names)`: a tiny 32x32 ViT with a random (non-zero) head, saved as
    `path` (.keras) with its class names beside it; it returns the model."""

    def save(path, class_names):
        model = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3), classes=len(class_names))
        rng = np.random.default_rng(0)
        for weight in model.get_layer("head").weights:
            weight.assign(rng.normal(0, 0.5, weight.shape).astype("float32"))
        model.save(path)
        vit_export.write_labels(path, class_names)
        return model

    return save


@pytest.fixture
def mixed_bfloat16():
    """Layers built inside `with mixed_bfloat16():` get the mixed_bfloat16 policy; float32 is restored after."""
    import contextlib

    import keras

    @contextlib.contextmanager
    def policy():
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            yield
        finally:
            keras.mixed_precision.set_global_policy("float32")

    return policy
