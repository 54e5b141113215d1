"""keras_vit's LayerNorm computes what `keras.layers.LayerNormalization` computes, gradients included."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit import normalization
from keras_vit import layers as vit_layers


def random_norm(width=24, epsilon=1e-6, seed=0):
    layer = keras.layers.LayerNormalization(epsilon=epsilon)
    layer.build((None, 5, width))
    rng = np.random.default_rng(seed)
    layer.gamma.assign(rng.normal(1, 0.5, width).astype("float32"))
    layer.beta.assign(rng.normal(0, 0.5, width).astype("float32"))
    # a large common offset per token: the centring must happen before squaring
    x = (rng.normal(size=(3, 5, width)) * 2 + rng.normal(0, 50, (3, 5, 1))).astype("float32")
    return layer, x


def gradients(call, layer, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.cast(call(x), "float32") * upstream)
    return tape.gradient(loss, [x, layer.gamma, layer.beta])


@pytest.mark.parametrize("epsilon", [1e-6, 1e-12, 1e-3])
def test_values_and_gradients_equal_the_keras_layer(epsilon):
    layer, x = random_norm(epsilon=epsilon)
    assert normalization.can_fuse(layer)
    x = tf.constant(x)
    np.testing.assert_allclose(normalization.layer_norm(layer, x), layer(x), atol=2e-5, rtol=1e-5)
    upstream = tf.constant(np.random.default_rng(1).normal(size=x.shape).astype("float32"))
    ours = gradients(lambda t: normalization.layer_norm(layer, t), layer, x, upstream)
    theirs = gradients(layer, layer, x, upstream)
    for name, a, b in zip(("x", "gamma", "beta"), ours, theirs):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4, err_msg=name)


def test_gradient_against_finite_differences_in_float64_numpy():
    layer, x = random_norm(width=6, seed=2)
    gamma, beta, eps = layer.gamma.numpy().astype("float64"), layer.beta.numpy().astype("float64"), 1e-6

    def numpy_loss(values):
        mean = values.mean(-1, keepdims=True)
        var = ((values - mean) ** 2).mean(-1, keepdims=True)
        return (((values - mean) / np.sqrt(var + eps) * gamma + beta) ** 2).sum()

    x64 = x.astype("float64")
    expected = np.zeros_like(x64)
    for index in np.ndindex(x64.shape):
        step = np.zeros_like(x64)
        step[index] = 1e-4
        expected[index] = (numpy_loss(x64 + step) - numpy_loss(x64 - step)) / 2e-4
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(normalization.layer_norm(layer, x) ** 2)
    np.testing.assert_allclose(tape.gradient(loss, x), expected, atol=5e-3, rtol=5e-3)


def test_mixed_bfloat16_keeps_float32_statistics_and_weights(mixed_bfloat16):
    with mixed_bfloat16():
        layer, x = random_norm(seed=3)
    x16 = tf.cast(x, "bfloat16")
    outputs = normalization.layer_norm(layer, x16)
    assert outputs.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(outputs, "float32"), tf.cast(layer(x16), "float32"), atol=0.05)
    dx, dgamma, dbeta = gradients(lambda t: normalization.layer_norm(layer, t), layer, x16,
                                  tf.ones(x.shape, "float32"))
    assert dx.dtype == tf.bfloat16 and dgamma.dtype == tf.float32 and dbeta.dtype == tf.float32


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
def test_other_normalizations_are_not_fused():
    for layer in (keras.layers.LayerNormalization(rms_scaling=True), keras.layers.LayerNormalization(axis=1),
                  keras.layers.LayerNormalization(center=False)):
        layer.build((None, 5, 8))
        assert not normalization.can_fuse(layer)
    assert not normalization.can_fuse(keras.layers.LayerNormalization())  # not built


def test_vit_blocks_use_it_and_train_the_same(monkeypatch):
    model = keras_vit.ViT(2, 16, 32, 2, 4, input_shape=(8, 8, 3), classes=3)
    blocks = [layer for layer in model.layers if isinstance(layer, vit_layers.TransformerBlock)]
    assert all(normalization.can_fuse(b.attention_norm) and normalization.can_fuse(b.mlp_norm) for b in blocks)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 4)
    keras_norm = keras.models.clone_model(model)
    keras_norm.set_weights(model.get_weights())
    for m in (model, keras_norm):
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    with monkeypatch.context() as patch:
        patch.setattr(normalization, "can_fuse", lambda layer: False)
        keras_norm.train_on_batch(x, y)  # traced without the fused LayerNorm
    model.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), keras_norm.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("traced", [False, True], ids=["eager", "graph"])
def test_normalized_product_equals_the_layer_then_the_product(policy, traced):
    """Values and all five gradients of `norm(x) @ kernel + bias` against the LayerNorm layer and a
    matmul (float32 1e-4; bfloat16 2e-2: the same casts); in a graph the recomputation is deferred
    (`keras_vit.compiling.after`), eagerly it is not."""
    layer, x = random_norm(seed=4)
    layer.dtype_policy = keras.DTypePolicy(policy)
    dtype = layer.compute_dtype
    rng = np.random.default_rng(5)
    kernel = tf.Variable(rng.normal(0, 0.3, (24, 10)).astype("float32"))
    bias = tf.Variable(rng.normal(0, 0.3, 10).astype("float32"))
    x = tf.cast(tf.constant(x), dtype)
    upstream = tf.constant(rng.normal(size=(15, 10)).astype("float32"))

    def run(function):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = function(x, tf.cast(kernel, dtype), tf.cast(bias, dtype))
            loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
        return [y] + tape.gradient(loss, [x, layer.gamma, layer.beta, kernel, bias])

    def fused(x, k, b):
        return normalization.normalized_product(layer, x, k, b)

    def separate(x, k, b):
        return tf.matmul(tf.reshape(layer(x), (-1, 24)), k) + b

    if traced:
        fused, separate = tf.function(fused), tf.function(separate)
    tolerance = 1e-4 if policy == "float32" else 2e-2
    for name, a, b in zip(("y", "x", "gamma", "beta", "kernel", "bias"), run(fused), run(separate)):
        assert a.dtype == b.dtype, name
        a, b = np.asarray(tf.cast(a, "float32")), np.asarray(tf.cast(b, "float32"))
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance * np.abs(b).max(), err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_column_sum_is_the_sum_over_all_but_the_last_axis(dtype):
    x = np.random.default_rng(0).normal(size=(4, 37, 24)).astype("float32")
    want = x.reshape(-1, 24).sum(axis=0)
    tolerance = 1e-4 if dtype == "float32" else 0.05 * np.abs(x).sum(axis=(0, 1)).max()
    eager = normalization.column_sum(tf.cast(x, dtype))
    # In a graph with the leading sizes unknown, as in a training step of any batch size.
    traced = tf.function(normalization.column_sum, input_signature=[tf.TensorSpec((None, None, 24), dtype)])
    for got in (eager, traced(tf.cast(x, dtype))):
        assert got.shape == (24,) and got.dtype == dtype
        np.testing.assert_allclose(tf.cast(got, "float32").numpy(), want, atol=tolerance, rtol=0)
