"""ONNX export (bonus path): parity with Keras through onnxruntime, variable batch."""

import os

import numpy as np
import pytest

import keras_vit

import onnxruntime  # noqa: F401  (the `test` extra installs it and tf2onnx)

from keras_vit import onnx_export


def test_onnx_matches_keras_at_any_batch_size(tmp_path):
    # Exact GELU is the default; keras_vit computes it with Erf, which tf2onnx converts.
    model = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3), classes=3)
    rng = np.random.default_rng(0)
    for weight in model.get_layer("head").weights:
        weight.assign(rng.normal(0, 0.5, weight.shape).astype("float32"))
    path = onnx_export.export_onnx(model, tmp_path / "vit.onnx")
    assert os.listdir(tmp_path) == ["vit.onnx"]
    images = rng.uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    runner = onnx_export.ONNXModel(path)
    for batch in (1, 5):
        np.testing.assert_allclose(runner(images[:batch]), model.predict(images[:batch], verbose=0), atol=1e-5)
    assert onnx_export.verify_onnx(path, model, images)["top1_agreement"] == 1.0


def test_erfc_of_tensorflows_exact_gelu_is_rewritten(tmp_path):
    # keras.activations.gelu (TensorFlow's Erfc), which tf2onnx cannot convert on its own.
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Dense(6, activation=lambda t: keras.activations.gelu(t, approximate=False))(
        keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    path = onnx_export.export_onnx(model, tmp_path / "gelu.onnx")
    images = np.random.default_rng(0).normal(0, 2, (4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(onnx_export.ONNXModel(path)(images), model.predict(images, verbose=0), atol=1e-5)


def test_onnx_path_must_end_in_onnx(tmp_path):
    model = keras_vit.ViT(1, 8, 16, 1, 8, input_shape=(8, 8, 3), classes=2)
    with pytest.raises(ValueError, match="must end with '.onnx'"):
        onnx_export.export_onnx(model, tmp_path / "vit.bin")
