"""Hybrid ResNet + ViT models (paper section 3.1): shapes, parameter counts, features, layers."""

import inspect

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import resnet

# A stride-8 stem (two stages, width 32) under a 2-layer, width-32 Transformer: 32x32 images give a 4x4 grid.
TINY = dict(num_layers=2, hidden_size=32, mlp_dim=64, num_heads=2, patch_size=1, resnet=dict(num_layers=(1, 1), width=32))


def tiny(**kwargs):
    kwargs.setdefault("input_shape", (32, 32, 3))
    return keras_vit.ViT(**TINY, **kwargs)


def images(size=32, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3)).astype("float32")


# --- the paper's hybrids ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_models():
    return {"R50+B/16": keras_vit.ViT_R50_B16(weights=None), "R26+S/32": keras_vit.ViT_R26_S32(weights=None)}


def test_paper_hybrids_parameter_counts_and_shapes(paper_models):
    r50, r26 = paper_models["R50+B/16"], paper_models["R26+S/32"]
    assert r50.count_params() == 98_659_112  # R50+ViT-B/16 at 224, 1000 classes
    assert r26.count_params() == 36_431_912
    assert r50.get_layer("resnet").output.shape == (None, 14, 14, 1024)
    assert tuple(r50.get_layer("embedding").projection.kernel.shape) == (1, 1, 1024, 768)
    assert tuple(r50.get_layer("posembed_input").pos_embedding.shape) == (1, 197, 768)
    assert r26.get_layer("resnet").output.shape == (None, 7, 7, 2048)
    assert tuple(r26.get_layer("posembed_input").pos_embedding.shape) == (1, 50, 384)
    variables = r50.get_layer("resnet").official_variables()
    assert tuple(variables["conv_root/kernel"].shape) == (7, 7, 3, 64)
    assert tuple(variables["block3/unit9/conv3/kernel"].shape) == (1, 1, 256, 1024)
    assert tuple(variables["block2/unit1/conv_proj/kernel"].shape) == (1, 1, 256, 512)
    assert "block2/unit2/conv_proj/kernel" not in variables
    assert (r50.name, r50.output_shape) == ("vit_r50_b16", (None, 1000))
    params = inspect.signature(keras_vit.ViT_R26_S32).parameters
    assert list(params)[:8] == list(inspect.signature(keras_vit.ViT_B16).parameters)[:8]
    assert "ViT_R50_B16" in keras_vit.__all__ and "(3, 4, 9)" in keras_vit.ViT_R50_B16.__doc__


# --- a tiny hybrid -----------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling, shape", [(None, (None, 17, 32)), ("token", (None, 32)), ("avg", (None, 32))])
def test_features_without_top_and_forward_intermediates(pooling, shape):
    model = tiny(include_top=False, pooling=pooling)
    assert model.output_shape == shape
    x = images()
    tokens = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer("encoder_norm").output)(x))
    expected = {None: tokens, "token": tokens[:, 0], "avg": tokens[:, 1:].mean(axis=1)}[pooling]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, atol=1e-5)
    out = keras_vit.forward_intermediates(model, x)
    assert len(out["attention"]) == 2 and tuple(out["attention"][0].shape) == (2, 2, 17, 17)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["encoded"]), tokens, atol=1e-5)


def test_layers_round_trip_through_their_config():
    for layer, x in [(resnet.StdConv2D(8, 3, strides=2, epsilon=1e-3), np.ones((1, 9, 9, 4))),
                     (resnet.BottleneckUnit(32, strides=2), np.ones((1, 8, 8, 64))),
                     (resnet.ResNetStem(num_layers=(2,), width=32), np.ones((1, 16, 16, 3)))]:
        y = layer(x)
        clone = layer.__class__.from_config(layer.get_config())
        clone(x)
        clone.set_weights(layer.get_weights())
        np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), keras.ops.convert_to_numpy(y), atol=1e-6)
    assert resnet.ResNetStem(num_layers=()).stride == 4 and resnet.ResNetStem((2, 2, 2, 2)).stride == 32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_shape=(36, 32, 3)), "multiples of the patch size 8. Received: input_shape=(36, 32, 3)"),
        (dict(resnet=dict(num_layers=(1,), width=48)), "a multiple of 32"),
        (dict(resnet=dict(layers=(1,))), "`resnet` must be a tuple of stage depths"),
    ],
)
def test_validation_errors(kwargs, message):
    with pytest.raises(ValueError) as error:
        keras_vit.ViT(**{**TINY, "input_shape": (32, 32, 3), **kwargs})
    assert message in str(error.value)
