"""Every public layer: config round-trips, and the numbers it computes."""

import keras
import numpy as np
import pytest
from scipy.special import erf

import keras_vit
from keras_vit import layers as vit_layers

LAYERS = [
    (vit_layers.DropPath, dict(rate=0.2, seed=3), (2, 5, 8)),
    (vit_layers.PatchEncoder, dict(patch_size=(4, 8), hidden_size=16), (2, 16, 32, 3)),
    (vit_layers.AddClassToken, dict(), (2, 5, 8)),
    (vit_layers.AddPositionEmbedding, dict(grid_size=(2, 3), embedding_type="learned_2d"), (2, 7, 8)),
    (vit_layers.AddPositionEmbedding, dict(grid_size=(3, 3), embedding_type="sincos_2d", num_prefix_tokens=0), (2, 9, 8)),
    (
        vit_layers.TransformerBlock,
        dict(num_heads=2, mlp_dim=16, dropout_rate=0.1, attention_dropout_rate=0.1,
             drop_path_rate=0.1, gelu_approximate=True, layer_norm_epsilon=1e-5),
        (2, 5, 8),
    ),
    (vit_layers.TokenPooling, dict(mode="max", num_prefix_tokens=2), (2, 5, 8)),
]


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("cls, kwargs, shape", LAYERS, ids=lambda v: getattr(v, "__name__", None))
def test_layer_round_trip(cls, kwargs, shape):
    layer = cls(**kwargs, name="under_test")
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    y = to_numpy(layer(x))
    config = layer.get_config()
    for key, value in kwargs.items():
        assert config[key] == value, key
    serialized = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(serialized, safe_mode=True)
    assert type(clone) is cls and clone.get_config() == config
    assert clone.built, "build_config restores the built state"
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(to_numpy(clone(x)), y)
    assert tuple(layer.compute_output_shape(shape)) == tuple(y.shape)


def test_patch_encoder_is_row_major_conv_patchify():
    rng = np.random.default_rng(0)
    layer = vit_layers.PatchEncoder(4, 5)
    x = rng.normal(size=(1, 8, 12, 3)).astype("float32")
    y = to_numpy(layer(x))
    kernel, bias = (w.numpy() for w in layer.weights)
    assert kernel.shape == (4, 4, 3, 5)
    for index in range(6):
        row, col = divmod(index, 3)
        patch = x[0, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4]
        np.testing.assert_allclose(y[0, index], np.einsum("hwc,hwcd->d", patch, kernel) + bias, atol=1e-5)


def test_learned_2d_embedding_concatenates_row_and_column():
    layer = vit_layers.AddPositionEmbedding((2, 3), "learned_2d", num_prefix_tokens=1)
    layer.build((None, 7, 8))
    table = to_numpy(layer.embedding())[0]
    rows, cols, prefix = layer.row_embedding.numpy(), layer.column_embedding.numpy(), layer.prefix_embedding.numpy()
    np.testing.assert_array_equal(table[0], prefix[0, 0])
    np.testing.assert_array_equal(table[1 + 1 * 3 + 2], np.concatenate([rows[1], cols[2]]))


def test_sincos_embedding_matches_formula():
    table = vit_layers.sincos_2d_embedding((2, 3), 8)
    # Patch at row 1, column 2: omega = [1, 1e-4]; columns sin(x), cos(x), sin(y), cos(y).
    omega = np.array([1.0, 1e-4])
    expected = np.concatenate([np.sin(2 * omega), np.cos(2 * omega), np.sin(1 * omega), np.cos(1 * omega)])
    np.testing.assert_allclose(table[5], expected, rtol=1e-6)


def test_drop_path_drops_whole_samples_and_rescales():
    layer = vit_layers.DropPath(0.5, seed=0)
    y = to_numpy(layer(np.ones((256, 3, 4), "float32"), training=True))
    per_sample = y.reshape(256, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))
    assert 0.3 < (per_sample[:, 0] == 0).mean() < 0.7


def test_token_pooling_excludes_prefix_tokens():
    x = np.arange(2 * 4 * 3, dtype="float32").reshape(2, 4, 3)
    np.testing.assert_array_equal(to_numpy(vit_layers.TokenPooling("token")(x)), x[:, 0])
    np.testing.assert_allclose(to_numpy(vit_layers.TokenPooling("avg", 1)(x)), x[:, 1:].mean(1))
    np.testing.assert_array_equal(to_numpy(vit_layers.TokenPooling("max", 2)(x)), x[:, 2:].max(1))


# --- the whole forward pass against an independent NumPy implementation -------------------------


def layer_norm(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def gelu(x, approximate):
    if approximate:
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_vit(params, images, patch, eps, approximate):
    """ViT forward pass written from the paper's equations, on float64."""
    x = images / 127.5 - 1.0
    b, h, w, c = x.shape
    gh, gw = h // patch, w // patch
    patches = x.reshape(b, gh, patch, gw, patch, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, -1)
    kernel = params["embedding/kernel"].reshape(-1, params["embedding/kernel"].shape[-1])
    tokens = patches @ kernel + params["embedding/bias"]
    cls = np.broadcast_to(params["cls"], (b, 1, tokens.shape[-1]))
    tokens = np.concatenate([cls, tokens], axis=1) + params["pos_embedding"]
    for i in range(params["num_layers"]):
        p = {k.split("/", 1)[1]: v for k, v in params.items() if k.startswith(f"block{i}/")}
        y = layer_norm(tokens, p["ln0/scale"], p["ln0/bias"], eps)
        q, k, v = (np.einsum("btd,dhk->bthk", y, p[f"{n}/kernel"]) + p[f"{n}/bias"] for n in "qkv")
        logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
        attended = np.einsum("bhqs,bshk->bqhk", softmax(logits), v)
        tokens = tokens + np.einsum("bqhk,hkd->bqd", attended, p["out/kernel"]) + p["out/bias"]
        y = layer_norm(tokens, p["ln2/scale"], p["ln2/bias"], eps)
        y = gelu(y @ p["mlp0/kernel"] + p["mlp0/bias"], approximate)
        tokens = tokens + y @ p["mlp1/kernel"] + p["mlp1/bias"]
    tokens = layer_norm(tokens, params["norm/scale"], params["norm/bias"], eps)
    logits = tokens[:, 0] @ params["head/kernel"] + params["head/bias"]
    return softmax(logits)


def random_params(model, rng):
    """Gives every weight of `model` random values and returns them under NumPy-reference names."""
    params = {"num_layers": 2}

    def put(name, variable, scale=0.3):
        value = rng.normal(scale=scale, size=variable.shape).astype("float32")
        variable.assign(value)
        params[name] = value.astype("float64")

    put("embedding/kernel", model.get_layer("embedding").projection.kernel, 0.05)
    put("embedding/bias", model.get_layer("embedding").projection.bias)
    put("cls", model.get_layer("class_token").cls)
    put("pos_embedding", model.get_layer("posembed_input").pos_embedding)
    for i in range(2):
        block = model.get_layer(f"encoderblock_{i}")
        put(f"block{i}/ln0/scale", block.attention_norm.gamma)
        put(f"block{i}/ln0/bias", block.attention_norm.beta)
        for name, dense in zip("qkv", (block.attention.query_dense, block.attention.key_dense, block.attention.value_dense)):
            put(f"block{i}/{name}/kernel", dense.kernel)
            put(f"block{i}/{name}/bias", dense.bias)
        put(f"block{i}/out/kernel", block.attention.output_dense.kernel)
        put(f"block{i}/out/bias", block.attention.output_dense.bias)
        put(f"block{i}/ln2/scale", block.mlp_norm.gamma)
        put(f"block{i}/ln2/bias", block.mlp_norm.beta)
        put(f"block{i}/mlp0/kernel", block.mlp_dense_0.kernel)
        put(f"block{i}/mlp0/bias", block.mlp_dense_0.bias)
        put(f"block{i}/mlp1/kernel", block.mlp_dense_1.kernel)
        put(f"block{i}/mlp1/bias", block.mlp_dense_1.bias)
    put("norm/scale", model.get_layer("encoder_norm").gamma)
    put("norm/bias", model.get_layer("encoder_norm").beta)
    put("head/kernel", model.get_layer("head").kernel)
    put("head/bias", model.get_layer("head").bias)
    return params


@pytest.mark.parametrize("approximate", [False, True])
def test_forward_pass_equals_numpy_reference(approximate):
    model = keras_vit.ViT(
        2, 32, 64, 2, 8, input_shape=(32, 40, 3), classes=10, gelu_approximate=approximate
    )
    rng = np.random.default_rng(0)
    params = random_params(model, rng)
    assert len(model.weights) == len(params) - 1, "every weight is covered by the reference"
    x = rng.uniform(0, 255, (3, 32, 40, 3)).astype("float32")
    expected = numpy_vit(params, x.astype("float64"), 8, 1e-6, approximate)
    np.testing.assert_allclose(to_numpy(model(x)), expected, atol=1e-5)
    # The two GELU flavours really differ on these inputs.
    other = numpy_vit(params, x.astype("float64"), 8, 1e-6, not approximate)
    assert np.abs(other - expected).max() > 1e-5
