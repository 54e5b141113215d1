"""The fused self-attention computes what `keras.layers.MultiHeadAttention` computes, on its weights."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit import attention
from keras_vit import layers as vit_layers
from keras_vit.relative import RelativePositionAttention


def random_attention(num_heads=3, key_dim=8, width=24, dropout=0.0, seed=0):
    layer = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=key_dim, dropout=dropout)
    layer.build((None, 7, width), (None, 7, width))
    rng = np.random.default_rng(seed)
    for weight in layer.weights:  # biases too: zero biases would hide a wrong bias layout
        weight.assign(rng.normal(0, 0.4, weight.shape).astype("float32"))
    return layer, rng.normal(size=(2, 7, width)).astype("float32")


def test_fused_equals_the_keras_layer_with_scores():
    layer, x = random_attention()
    assert attention.can_fuse(layer)
    expected, expected_scores = layer(x, x, return_attention_scores=True)
    outputs, scores = attention.self_attention(layer, tf.constant(x), return_attention_scores=True)
    np.testing.assert_allclose(outputs, expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-6)
    np.testing.assert_allclose(np.sum(scores, axis=-1), 1.0, atol=1e-6)


def test_fused_gradients_equal_the_keras_layer():
    layer, x = random_attention(seed=1)
    x = tf.constant(x)
    upstream = tf.constant(np.random.default_rng(2).normal(size=(2, 7, 24)).astype("float32"))

    def gradients(call):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(call() * upstream)
        return tape.gradient(loss, [x] + layer.trainable_variables)

    fused = gradients(lambda: attention.self_attention(layer, x))
    keras_own = gradients(lambda: layer(x, x))
    assert len(fused) == 9  # the input, then q/k/v/output kernels and biases
    for a, b in zip(fused, keras_own):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bfloat16", [False, True], ids=["float32", "mixed_bfloat16"])
def test_with_its_layer_norm_in_a_graph_equals_the_layers(bfloat16, mixed_bfloat16):
    """The training path: LayerNorm taken in, probabilities and normalised input recomputed in the
    backward pass (deferred in a graph), against the LayerNorm layer and Keras' own attention call;
    all eleven gradients (float32 1e-4; bfloat16 3e-2, of each tensor's largest value). The key
    bias's gradient is zero but for rounding (softmax ignores a shift shared by a row), so it is held
    to the largest gradient of all instead."""
    with mixed_bfloat16() if bfloat16 else contextlib.nullcontext():
        layer, x = random_attention(seed=5)
        norm = keras.layers.LayerNormalization(epsilon=1e-6)
        norm.build((None, 7, 24))
    norm.gamma.assign(np.random.default_rng(6).normal(1, 0.5, 24).astype("float32"))
    x = tf.cast(tf.constant(x), layer.compute_dtype)
    upstream = tf.constant(np.random.default_rng(7).normal(size=(2, 7, 24)).astype("float32"))
    variables = norm.trainable_variables + layer.trainable_variables

    @tf.function
    def run(fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            if fused:
                y = attention.self_attention(layer, x, training=True, norm=norm)
            else:
                normalized = norm(x)
                y = layer(normalized, normalized, training=True)
            loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
        return [y] + tape.gradient(loss, [x] + variables)

    ours, theirs = run(True), run(False)
    assert len(ours) == 12 and ours[0].dtype == theirs[0].dtype == layer.compute_dtype
    tolerance = 3e-2 if bfloat16 else 1e-4
    ours, theirs = ([np.asarray(tf.cast(t, "float32")) for t in side] for side in (ours, theirs))
    largest = max(np.abs(t).max() for t in theirs[1:])
    key_bias = 2 + [v.path for v in variables].index(layer.key_dense.bias.path)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        scale = largest if i == key_bias else np.abs(b).max()
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance * scale, err_msg=str(i))


def test_the_backward_pass_recomputes_the_probabilities_only_where_it_may(monkeypatch):
    """Training without attention dropout recomputes; returned maps, dropout in training and XLA keep
    the probabilities of the forward pass."""
    calls = []
    original = attention._attend
    monkeypatch.setattr(attention, "_attend", lambda *a: calls.append(1) or original(*a))
    layer, x = random_attention(seed=8)
    x = tf.constant(x)
    attention.self_attention(layer, x, training=True)
    assert len(calls) == 1
    attention.self_attention(layer, x, training=True, return_attention_scores=True)
    tf.function(lambda x: attention.self_attention(layer, x, training=True), jit_compile=True)(x)
    assert len(calls) == 1
    dropping, _ = random_attention(dropout=0.2, seed=8)
    dropping_x = tf.constant(_)
    attention.self_attention(dropping, dropping_x, training=True)
    assert len(calls) == 1
    attention.self_attention(dropping, dropping_x, training=False)
    assert len(calls) == 2


def test_fused_in_mixed_bfloat16_keeps_softmax_in_float32(mixed_bfloat16):
    with mixed_bfloat16():
        layer, x = random_attention(seed=3)
    outputs, scores = attention.self_attention(layer, tf.cast(x, "bfloat16"), return_attention_scores=True)
    expected = layer(x, x)
    assert outputs.dtype == tf.bfloat16 and scores.dtype == tf.float32
    np.testing.assert_allclose(np.sum(scores, axis=-1), 1.0, atol=1e-5)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(tf.cast(outputs, "float32"), tf.cast(expected, "float32"), atol=0.03 * scale)


def test_fused_attention_dropout_applies_in_training_only():
    layer, x = random_attention(dropout=0.5, seed=4)
    x = tf.constant(x)
    inference = attention.self_attention(layer, x, training=False)
    np.testing.assert_allclose(inference, layer(x, x, training=False), atol=1e-5, rtol=1e-5)
    trained = attention.self_attention(layer, x, training=True)
    assert np.abs(np.asarray(trained) - np.asarray(inference)).max() > 1e-3


def test_layers_with_their_own_attention_rule_are_not_fused():
    relative = RelativePositionAttention(num_tokens=7, num_heads=2, key_dim=4)
    relative.build((None, 7, 8), (None, 7, 8))
    assert not attention.can_fuse(relative)
    gated = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, use_gate=True)
    gated.build((None, 7, 8), (None, 7, 8))
    assert not attention.can_fuse(gated)


def _matmul_count(model):
    forward = tf.function(lambda images: model(images, training=False))
    graph = forward.get_concrete_function(tf.TensorSpec((None,) + model.input_shape[1:], tf.float32)).graph
    return sum(op.type == "MatMul" for op in graph.get_operations())


@pytest.mark.parametrize("position_embedding, fused", [("learned", True), ("relative", False)])
def test_vit_blocks_take_the_fused_path(position_embedding, fused, monkeypatch):
    model = keras_vit.ViT(2, 16, 32, 2, 4, input_shape=(8, 8, 3), classes=3,
                          position_embedding=position_embedding)
    blocks = [layer for layer in model.layers if isinstance(layer, vit_layers.TransformerBlock)]
    assert [attention.can_fuse(block.attention) for block in blocks] == [fused, fused]
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected, matmuls = model(x), _matmul_count(model)
    with monkeypatch.context() as patch:
        patch.setattr(attention, "can_fuse", lambda layer: False)
        unfused = keras.models.clone_model(model)
        unfused.set_weights(model.get_weights())
        np.testing.assert_allclose(unfused(x), expected, atol=1e-5)
        unfused_matmuls = _matmul_count(unfused)
    # Fused: one q/k/v product and one output product per block, beside the MLP's two.
    assert matmuls - unfused_matmuls == (2 * len(blocks) if fused else 0)
