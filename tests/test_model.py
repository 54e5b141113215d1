"""The builder, the generated constructors, validation and serialization."""

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import layers as vit_layers
from keras_vit.variants import VARIANTS, constructor_name

TINY = dict(num_layers=2, hidden_size=32, mlp_dim=64, num_heads=2, patch_size=8)

# DESIGN.md, section 2: parameters at 224x224 with a 1000-class head.
EXPECTED_PARAMS = {
    "Ti/16": 5_717_416,
    "S/16": 22_050_664,
    "S/32": 22_878_952,
    "B/8": 86_576_872,
    "B/16": 86_567_656,
    "B/32": 88_224_232,
    "L/16": 304_326_632,
    "L/32": 306_535_400,
    "H/14": 632_045_800,
}


def tiny(**kwargs):
    kwargs.setdefault("input_shape", (32, 32, 3))
    return keras_vit.ViT(**TINY, **kwargs)


def images(batch=2, height=32, width=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_parameter_counts_and_shapes(variant):
    model = getattr(keras_vit, constructor_name(variant))(weights=None)
    assert model.count_params() == EXPECTED_PARAMS[variant]
    patch = VARIANTS[variant]["patch_size"]
    tokens = (224 // patch) ** 2 + 1
    assert model.output_shape == (None, 1000)
    assert model.get_layer("encoder_norm").output.shape == (None, tokens, VARIANTS[variant]["hidden_size"])
    assert len([l for l in model.layers if l.name.startswith("encoderblock_")]) == VARIANTS[variant]["num_layers"]
    assert model.name == "vit_" + variant.replace("/", "").lower()


def test_constructors_are_generated_with_keras_applications_signature():
    import inspect

    params = inspect.signature(keras_vit.ViT_B16).parameters
    assert list(params)[:8] == [
        "include_top",
        "weights",
        "input_tensor",
        "input_shape",
        "pooling",
        "classes",
        "classifier_activation",
        "name",
    ]
    assert params["weights"].default == "imagenet"
    assert keras_vit.ViT_B16.__name__ == "ViT_B16"
    assert "12 layers, width\n    768" in keras_vit.ViT_B16.__doc__


def test_block_and_attention_shapes_match_official_checkpoint():
    model = keras_vit.ViT_B16(weights=None)
    block = model.get_layer("encoderblock_0")
    shapes = {w.path.split("/", 1)[1]: tuple(w.shape) for w in block.weights}
    assert shapes["MultiHeadDotProductAttention_1/query/kernel"] == (768, 12, 64)
    assert shapes["MultiHeadDotProductAttention_1/query/bias"] == (12, 64)
    assert shapes["MultiHeadDotProductAttention_1/attention_output/kernel"] == (12, 64, 768)
    assert shapes["MlpBlock_3_Dense_0/kernel"] == (768, 3072)
    assert tuple(model.get_layer("embedding").weights[0].shape) == (16, 16, 3, 768)
    assert tuple(model.get_layer("posembed_input").weights[0].shape) == (1, 197, 768)
    assert block.attention_norm.epsilon == 1e-6
    assert model.get_layer("encoder_norm").epsilon == 1e-6


def test_initialisation_follows_the_paper():
    model = tiny(classes=5)
    assert np.all(model.get_layer("class_token").weights[0].numpy() == 0)
    head = model.get_layer("head")
    assert np.all(head.kernel.numpy() == 0) and np.all(head.bias.numpy() == 0)
    pos = keras_vit.ViT_B16(weights=None).get_layer("posembed_input").weights[0].numpy()
    assert abs(pos.std() - 0.02) < 0.001
    block = model.get_layer("encoderblock_0")
    assert np.all(block.attention.query_dense.bias.numpy() == 0)
    assert 0 < np.abs(block.mlp_dense_0.bias.numpy()).max() < 1e-4
    # Glorot-uniform over the (32, 2*16) view: limit sqrt(6 / 64).
    q = block.attention.query_dense.kernel.numpy()
    assert np.abs(q).max() <= np.sqrt(6 / 64) and np.abs(q).max() > 0.8 * np.sqrt(6 / 64)


@pytest.mark.parametrize(
    "pooling, expected", [(None, (None, 17, 32)), ("token", (None, 32)), ("avg", (None, 32)), ("max", (None, 32))]
)
def test_pooling_modes(pooling, expected):
    model = tiny(include_top=False, pooling=pooling)
    assert model.output_shape == expected
    x = images()
    out = keras.ops.convert_to_numpy(model(x))
    tokens = keras.ops.convert_to_numpy(
        keras.Model(model.input, model.get_layer("encoder_norm").output)(x)
    )
    reference = {
        None: tokens,
        "token": tokens[:, 0],
        "avg": tokens[:, 1:].mean(axis=1),
        "max": tokens[:, 1:].max(axis=1),
    }[pooling]
    np.testing.assert_allclose(out, reference, atol=1e-6)


def test_gap_classifier_has_no_class_token():
    model = tiny(classifier="gap", classes=3)
    assert "class_token" not in [l.name for l in model.layers]
    assert model.get_layer("posembed_input").weights[0].shape == (1, 16, 32)
    assert model.output_shape == (None, 3)
    assert model.get_layer("pool").mode == "avg"


def test_representation_size_adds_pre_logits():
    model = tiny(representation_size=24, classes=7)
    assert model.get_layer("pre_logits").kernel.shape == (32, 24)
    assert model.get_layer("head").kernel.shape == (24, 7)


def test_non_square_input():
    model = tiny(input_shape=(32, 48, 3), classes=4)
    assert model.get_layer("posembed_input").grid_size == (4, 6)
    out = model(images(height=32, width=48))
    assert out.shape == (2, 4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out).sum(axis=1), 1.0, rtol=1e-5)


def test_input_tensor_is_used():
    tensor = keras.Input((32, 32, 3), name="my_images")
    model = tiny(input_tensor=tensor, classes=2)
    assert model.inputs[0] is tensor


@pytest.mark.parametrize("kind", ["learned", "learned_2d", "sincos_2d", "none"])
def test_position_embedding_kinds(kind):
    model = tiny(position_embedding=kind, classes=3)
    layer = model.get_layer("posembed_input")
    expected_weights = {"learned": 1, "learned_2d": 3, "sincos_2d": 0, "none": 0}[kind]
    assert len(layer.weights) == expected_weights
    assert model(images()).shape == (2, 3)


def test_drop_path_rate_increases_linearly_with_depth():
    model = keras_vit.ViT(4, 32, 64, 2, 8, input_shape=(32, 32, 3), drop_path_rate=0.3)
    rates = [model.get_layer(f"encoderblock_{i}").drop_path_rate for i in range(4)]
    np.testing.assert_allclose(rates, [0.0, 0.1, 0.2, 0.3])


def test_include_preprocessing_scales_pixels_in_graph():
    with_pre = tiny(include_top=False, pooling="avg")
    without = tiny(include_top=False, pooling="avg", include_preprocessing=False)
    without.set_weights(with_pre.get_weights())
    x = images()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(with_pre(x)),
        keras.ops.convert_to_numpy(without(keras_vit.imagenet.scale_pixels(x))),
        atol=1e-5,
    )
    assert keras_vit.preprocess_input(x) is x


def test_training_mode_dropout_changes_outputs_inference_is_deterministic():
    model = tiny(dropout_rate=0.5, drop_path_rate=0.5, include_top=False, pooling="avg")
    x = images()
    a, b = model(x, training=False), model(x, training=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    c = model(x, training=True)
    assert not np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(c))


def test_forward_intermediates_uses_the_models_own_weights():
    model = tiny(classes=3)
    x = images()
    out = keras_vit.forward_intermediates(model, x)
    assert len(out["tokens"]) == 2 and len(out["attention"]) == 2
    probs = keras.ops.convert_to_numpy(out["attention"][1])
    assert probs.shape == (2, 2, 17, 17)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    encoded = keras.Model(model.input, model.get_layer("encoder_norm").output)(x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out["encoded"]), keras.ops.convert_to_numpy(encoded), atol=1e-5
    )


def test_keras_save_and_load_gives_identical_outputs(tmp_path):
    model = tiny(classes=5, representation_size=16, position_embedding="learned_2d")
    # Give the zero-initialised head some weights so the outputs differ per class.
    head = model.get_layer("head")
    head.kernel.assign(np.random.default_rng(1).normal(size=head.kernel.shape))
    path = tmp_path / "vit.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = images()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(loaded(x)))
    assert not any(isinstance(l, keras.layers.Lambda) for l in loaded.layers)


def test_weights_file_loads_through_the_weights_argument(tmp_path):
    model = tiny(classes=5)
    model.get_layer("head").bias.assign(np.arange(5, dtype="float32"))
    path = str(tmp_path / "vit.weights.h5")
    model.save_weights(path)
    loaded = tiny(classes=5, weights=path)
    np.testing.assert_array_equal(loaded.get_layer("head").bias.numpy(), np.arange(5))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(weights=3), "The `weights` argument should be either"),
        (dict(weights="/no/such/file.weights.h5"), "does not exist"),
        (dict(pooling="mean", include_top=False), "`pooling` must be one of"),
        (dict(classifier="cls"), "`classifier` must be one of"),
        (dict(position_embedding="rope"), "`position_embedding` must be one of"),
        (dict(input_shape=(33, 32, 3)), "multiples of the patch size 8. Received: input_shape=(33, 32, 3)"),
        (dict(input_shape=(None, 32, 3)), "fixed image height and width"),
        (dict(input_shape=(32, 32)), "(height, width, channels)"),
        (dict(classes=0), "`classes` must be a positive int"),
        (dict(include_top=False, pooling="token", classifier="gap"), "needs a class token"),
    ],
)
def test_validation_errors(kwargs, message):
    with pytest.raises(ValueError) as error:
        tiny(**kwargs)
    assert message in str(error.value)


def test_keras_applications_errors_on_named_constructor(tmp_path):
    path = str(tmp_path / "vit.weights.h5")
    with pytest.raises(ValueError, match="multiples of the patch size 16. Received: input_shape=\\(225, 224, 3\\)"):
        keras_vit.ViT_Ti16(weights=None, input_shape=(225, 224, 3))
    with pytest.raises(ValueError, match="3 channels when loading pretrained weights"):
        keras_vit.ViT(**TINY, weights=path, input_shape=(32, 32, 1))
    with pytest.raises(ValueError, match="Only `None` and `softmax` activations"):
        keras_vit.ViT(**TINY, weights=path, input_shape=(32, 32, 3), classifier_activation="sigmoid")
    with pytest.raises(ValueError, match="Unknown ViT variant"):
        keras_vit.variants.get_variant("B/15")


def test_layer_validation_errors():
    with pytest.raises(ValueError, match="`rate` must be in"):
        vit_layers.DropPath(1.0)
    with pytest.raises(ValueError, match="divisible by num_heads=3"):
        vit_layers.TransformerBlock(3, 8)(np.zeros((1, 2, 8)))
    with pytest.raises(ValueError, match="expects 7 tokens"):
        vit_layers.AddPositionEmbedding((2, 3))(np.zeros((1, 9, 8)))
    with pytest.raises(ValueError, match="`mode` must be one of"):
        vit_layers.TokenPooling("first")


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_an_empty_batch_gives_an_empty_output(classifier):
    model = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 40, 3), classes=5, classifier=classifier)
    assert tuple(model(np.zeros((0, 32, 40, 3), "float32")).shape) == (0, 5)
    tokens = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 40, 3), include_top=False)
    assert tuple(tokens(np.zeros((0, 32, 40, 3), "float32")).shape) == (0, 21, 32)
