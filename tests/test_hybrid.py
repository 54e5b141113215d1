"""Hybrid ResNet + ViT models (paper section 3.1): shapes, parameter counts, official checkpoints.

The official-layout files are written here with random values under exactly
the official keys and shapes; the ResNet stem is checked against an
independent NumPy forward pass (weight standardisation, TF "SAME" padding
written out, GroupNorm, ReLU, max pool), the whole model against the NumPy
ViT of test_checkpoints applied to that feature map.
"""

import inspect

import keras
import numpy as np
import pytest
from test_checkpoints import numpy_vit, official_params

import keras_vit
from keras_vit import checkpoints, cli_convert, loading, resnet

# A stride-8 stem (two stages, width 32) under a 2-layer, width-32 Transformer: 32x32 images give a 4x4 grid.
TINY = dict(num_layers=2, hidden_size=32, mlp_dim=64, num_heads=2, patch_size=1, resnet=dict(num_layers=(1, 1), width=32))
STEM_ATOL = 1e-4  # float32 Keras against float64 NumPy


def tiny(**kwargs):
    kwargs.setdefault("input_shape", (32, 32, 3))
    return keras_vit.ViT(**TINY, **kwargs)


def images(size=32, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3)).astype("float32")


def hybrid_params(rng, stages=(1, 1), width=32, old_flax=False, **vit):
    """Random arrays under the official hybrid keys: the ResNet, then the Transformer of `official_params`."""
    n = lambda *shape, s=0.2: (rng.standard_normal(shape) * s).astype("float32")  # noqa: E731
    gn_shape = (lambda c: (1, 1, 1, c)) if old_flax else (lambda c: (c,))  # older Flax: GroupNorm params 4-D

    def gn(key, c):
        p[key + "/scale"], p[key + "/bias"] = 1 + n(*gn_shape(c)), n(*gn_shape(c))

    p = {"conv_root/kernel": n(7, 7, 3, width)}
    gn("gn_root", width)
    channels = width
    for s, depth in enumerate(stages, 1):
        w = width * 2 ** (s - 1)
        for u in range(1, depth + 1):
            b = f"block{s}/unit{u}/"
            p[b + "conv1/kernel"], p[b + "conv2/kernel"] = n(1, 1, channels, w), n(3, 3, w, w)
            p[b + "conv3/kernel"] = n(1, 1, w, 4 * w)
            gn(b + "gn1", w), gn(b + "gn2", w), gn(b + "gn3", 4 * w)
            if u == 1:
                p[b + "conv_proj/kernel"] = n(1, 1, channels, 4 * w)
                gn(b + "gn_proj", 4 * w)
            channels = 4 * w
    p.update(official_params(rng, patch=1, **vit))
    p["embedding/kernel"] = n(1, 1, channels, p["embedding/bias"].shape[0])
    return p


# --- the NumPy reference of the stem ----------------------------------------------------------


def _same(size, kernel, stride):
    """TF "SAME": output ceil(size / stride), padding split with the extra row/column after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, (total // 2, total - total // 2)


def np_std_conv(x, w, stride=1):
    w = w.astype(np.float64) - w.mean(axis=(0, 1, 2), keepdims=True)
    w = w / (w.std(axis=(0, 1, 2), keepdims=True) + 1e-5)
    (oh, ph), (ow, pw) = _same(x.shape[1], w.shape[0], stride), _same(x.shape[2], w.shape[1], stride)
    x = np.pad(x, ((0, 0), ph, pw, (0, 0)))
    out = np.zeros(x.shape[:1] + (oh, ow, w.shape[-1]))
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            out += x[:, i : i + stride * oh : stride, j : j + stride * ow : stride] @ w[i, j]
    return out


def np_group_norm(x, scale, bias, groups=32, eps=1e-6):
    g = x.reshape(x.shape[:3] + (groups, -1))
    g = (g - g.mean(axis=(1, 2, 4), keepdims=True)) / np.sqrt(g.var(axis=(1, 2, 4), keepdims=True) + eps)
    return g.reshape(x.shape) * scale.reshape(-1) + bias.reshape(-1)


def np_max_pool(x, size=3, stride=2):
    (oh, ph), (ow, pw) = _same(x.shape[1], size, stride), _same(x.shape[2], size, stride)
    x = np.pad(x, ((0, 0), ph, pw, (0, 0)), constant_values=-np.inf)
    return np.max([x[:, i : i + stride * oh : stride, j : j + stride * ow : stride]
                   for i in range(size) for j in range(size)], axis=0)


def numpy_stem(p, pixels):
    relu = lambda t: np.maximum(t, 0)  # noqa: E731
    gn = lambda t, key: np_group_norm(t, p[key + "/scale"], p[key + "/bias"])  # noqa: E731
    x = pixels.astype(np.float64) / 127.5 - 1.0
    x = np_max_pool(relu(gn(np_std_conv(x, p["conv_root/kernel"], 2), "gn_root")))
    s = 1
    while f"block{s}/unit1/conv1/kernel" in p:
        u = 1
        while (b := f"block{s}/unit{u}/") + "conv1/kernel" in p:
            stride = 2 if s > 1 and u == 1 else 1
            y = relu(gn(np_std_conv(x, p[b + "conv1/kernel"]), b + "gn1"))
            y = relu(gn(np_std_conv(y, p[b + "conv2/kernel"], stride), b + "gn2"))
            y = gn(np_std_conv(y, p[b + "conv3/kernel"]), b + "gn3")
            if b + "conv_proj/kernel" in p:
                x = gn(np_std_conv(x, p[b + "conv_proj/kernel"], stride), b + "gn_proj")
            x, u = relu(x + y), u + 1
        s += 1
    return x


def stem_of(model, pixels):
    return keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer("resnet").output)(pixels))


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


def test_catalogue_rows_of_the_hybrids(paper_models):
    counts = {v: m.count_params() for v, m in paper_models.items()}
    head = lambda width, classes: width * classes + classes  # noqa: E731
    sizes = {
        "vit_r50_b16_in21k": counts["R50+B/16"] - head(768, 1000) + head(768, 768) + head(768, 21843),
        "vit_r50_b16_in21k_ft_in1k_384": counts["R50+B/16"] + (577 - 197) * 768,
        "vit_r26_s32_augreg_in21k": counts["R26+S/32"] - head(384, 1000) + head(384, 21843),
        "vit_r26_s32_augreg_in21k_ft_in1k_224": counts["R26+S/32"],
        "vit_r26_s32_augreg_in21k_ft_in1k_384": counts["R26+S/32"] + (145 - 50) * 384,
    }
    for name, params in sizes.items():
        assert checkpoints.WEIGHTS[name]["size"] == 4 * params, name
    assert "imagenet21k/R50%2BViT-B_16.npz" in checkpoints.WEIGHTS["vit_r50_b16_in21k"]["url"]
    assert checkpoints.WEIGHTS["vit_r50_b16_in21k"]["representation_size"] == 768
    assert checkpoints.get_entry("imagenet", "R50+B/16")["name"] == "vit_r50_b16_in21k_ft_in1k_384"
    assert checkpoints.get_entry("imagenet21k", "R26+S/32")["name"] == "vit_r26_s32_augreg_in21k"
    assert checkpoints.variant_of({**keras_vit.variants.get_variant("R50+ViT-B_16")}) == "R50+B/16"
    assert checkpoints.variant_of(loading.model_architecture(paper_models["R26+S/32"])) == "R26+S/32"  # load_weights(m, "imagenet")
    assert [w["name"] for w in checkpoints.list_weights("ViT_R26_S32")][0] == "vit_r26_s32_augreg_in21k"
    with pytest.raises(ValueError, match="are for ViT-R50\\+B/16, and this model is ViT-R26\\+S/32"):
        keras_vit.ViT_R26_S32(weights="vit_r50_b16_in21k", classes=21843)
    with pytest.raises(ValueError, match="`classes` should be 1000. Received: classes=10"):
        keras_vit.ViT_R50_B16(weights="imagenet", classes=10)


def test_convert_reads_a_hybrid_off_its_keys():
    shapes = {"conv_root/kernel": (7, 7, 3, 64), "embedding/kernel": (1, 1, 1024, 768), "cls": (1, 1, 768),
              "Transformer/posembed_input/pos_embedding": (1, 577, 768), "head/kernel": (768, 1000)}
    shapes.update({f"block{s}/unit{u}/conv1/kernel": (1,) for s, d in enumerate((3, 4, 9), 1) for u in range(1, d + 1)})
    shapes.update({f"Transformer/encoderblock_{i}/MlpBlock_3/Dense_0/kernel": (768, 3072) for i in range(12)})
    params = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}  # shapes only, no memory
    found = cli_convert.describe(params)
    assert (found["variant"], found["image_size"], found["classes"]) == ("R50+B/16", 384, 1000)


# --- a tiny hybrid and official-layout files ----------------------------------------------------


@pytest.mark.parametrize("layout", ["official", "old_flax"])
def test_official_npz_matches_numpy_stem_and_forward(tmp_path, layout):
    params = hybrid_params(np.random.default_rng(0), old_flax=layout == "old_flax", rep=16)
    stored = {"opt/target/" + k: v for k, v in params.items()} if layout == "old_flax" else params
    np.savez(tmp_path / "hybrid.npz", **stored)
    model = tiny(classes=10, weights=str(tmp_path / "hybrid.npz"), classifier_activation=None)
    x = images()
    features = numpy_stem(params, x)
    assert features.shape == (2, 4, 4, 256)
    np.testing.assert_allclose(stem_of(model, x), features, atol=STEM_ATOL)
    # The Transformer sees the feature map as a 4x4 image of 1x1 patches; numpy_vit rescales its input.
    expected = numpy_vit(params, (features + 1.0) * 127.5, patch=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, atol=STEM_ATOL)


def test_mismatched_checkpoints_name_the_tensor_and_both_shapes(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "wide.npz", **hybrid_params(rng, width=64))
    np.savez(tmp_path / "deep.npz", **hybrid_params(rng, stages=(1, 1, 1)))
    np.savez(tmp_path / "plain.npz", **official_params(rng))
    model = tiny(classes=10)
    cases = {
        "wide.npz": "tensor 'conv_root/kernel' expected shape (7, 7, 3, 32), found (7, 7, 3, 64)",
        "deep.npz": "'embedding/kernel' expected shape (1, 1, 256, 32), found (1, 1, 512, 32). Is it a checkpoint "
                    "of another hybrid",
        "plain.npz": "no tensor 'conv_root/kernel' (expected shape (7, 7, 3, 32))",
    }
    for name, message in cases.items():
        with pytest.raises(ValueError) as error:
            keras_vit.load_weights(model, str(tmp_path / name))
        assert message in str(error.value), (name, str(error.value))
    np.savez(tmp_path / "hybrid.npz", **hybrid_params(rng))
    with pytest.raises(ValueError, match="The checkpoint is a ResNet hybrid: build the model with `resnet=`"):
        keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3), classes=10, weights=str(tmp_path / "hybrid.npz"))


def test_keras_round_trip_and_keras_files_at_another_size(tmp_path):
    model = tiny(classes=5, representation_size=16)
    rng = np.random.default_rng(2)
    model.set_weights([w + rng.normal(0, 0.1, w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "hybrid.keras")
    model.save_weights(tmp_path / "hybrid.weights.h5")
    loaded = keras.models.load_model(tmp_path / "hybrid.keras", safe_mode=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(images())),
                                  keras.ops.convert_to_numpy(loaded(images())))
    for suffix in (".keras", ".weights.h5"):
        bigger = tiny(input_shape=(48, 48, 3), classes=3, representation_size=16)
        report = keras_vit.load_weights(bigger, str(tmp_path / f"hybrid{suffix}"))
        assert report["resampled"][:2] == ((1, 17, 32), (1, 37, 32)) and report["skipped"] == ["head/bias", "head/kernel"]
        source, target = (m.get_layer("resnet").official_variables() for m in (model, bigger))
        for key in source:
            np.testing.assert_array_equal(target[key].numpy(), source[key].numpy(), err_msg=key)


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


@pytest.mark.parametrize("size", [14, 15, 7])
def test_max_pool_same_matches_the_pool_in_values_and_gradients(size):
    import tensorflow as tf

    pool = keras.layers.MaxPooling2D(3, strides=2, padding="same")
    # Distinct values, so no window has a tie and the gradients must agree exactly.
    x = tf.constant(np.random.default_rng(size).permutation(2 * size * size * 4).reshape(2, size, size, 4), tf.float32)
    upstream = tf.constant(np.random.default_rng(0).normal(size=pool.compute_output_shape(x.shape)), tf.float32)

    def value_and_grad(f):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f(x)
            loss = tf.reduce_sum(y * upstream)
        return y, tape.gradient(loss, x)

    for run in (value_and_grad, lambda f: tf.function(lambda: value_and_grad(f), jit_compile=True)()):
        (y, dx), (y_ref, dx_ref) = run(resnet.max_pool_same), run(pool)
        np.testing.assert_array_equal(y.numpy(), y_ref.numpy())
        np.testing.assert_array_equal(dx.numpy(), dx_ref.numpy())


def test_stem_gives_the_same_features_in_training_and_inference():
    stem = resnet.ResNetStem(num_layers=(1,), width=32)
    x = images(size=30)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(stem(x, training=True)),
                                  keras.ops.convert_to_numpy(stem(x, training=False)))
