"""keras_vit.mlp: the Transformer block's MLP with its backward pass written out.

Values and gradients against the two Dense layers and the GELU called in turn (float32: rtol 1e-5,
the same products in another order; bfloat16: the same casts, so 2e-2) and which path the blocks take
(the memory it is there to save is measured in `tests/test_training_memory.py`).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vit import activations, mlp
from keras_vit.layers import TransformerBlock


def dense_pair(width=8, hidden=32, dtype="float32"):
    dense_0 = keras.layers.Dense(hidden, dtype=dtype)
    dense_1 = keras.layers.Dense(width, dtype=dtype)
    dense_0.build((None, width))
    dense_1.build((None, hidden))
    rng = np.random.default_rng(0)
    for layer in (dense_0, dense_1):  # non-zero biases, so their gradients are checked too
        layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape).astype("float32"))
    return dense_0, dense_1


def values_and_gradients(function, x, layers):
    variables = [w for layer in layers for w in layer.trainable_variables]
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = function(x)
        loss = tf.reduce_sum(tf.cast(y, "float32") * tf.linspace(-1.0, 1.0, y.shape[-1]))
    return [y] + tape.gradient(loss, [x] + variables)


@pytest.mark.parametrize("norm", [False, True], ids=["mlp", "norm_mlp"])
@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "tanh"])
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_values_and_gradients_match_the_layers(approximate, policy, norm):
    """With `norm`, the block's LayerNorm taken in too: its output is recomputed in the backward pass."""
    dense_0, dense_1 = dense_pair(dtype=keras.DTypePolicy(policy))
    layers = [dense_0, dense_1]
    layer_norm = None
    if norm:
        layer_norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=keras.DTypePolicy(policy))
        layer_norm.build((None, 8))
        rng = np.random.default_rng(2)
        layer_norm.gamma.assign(rng.normal(1, 0.5, 8).astype("float32"))
        layer_norm.beta.assign(rng.normal(0, 0.5, 8).astype("float32"))
        layers = [layer_norm] + layers
    x = np.random.default_rng(1).normal(0, 2, (3, 5, 8)).astype("float32")

    def separate(x):
        if norm:
            x = layer_norm(x)
        return dense_1(activations.gelu(dense_0(x), approximate=approximate))

    def fused(x):
        return mlp.mlp(dense_0, dense_1, x, approximate, norm=layer_norm)

    for traced in (False, True):  # in a graph the recomputation waits for the incoming gradient
        wrap = tf.function if traced else (lambda f: f)
        ours = values_and_gradients(wrap(fused), x, layers)
        theirs = values_and_gradients(wrap(separate), x, layers)
        tolerance = 1e-5 if policy == "float32" else 2e-2
        assert ours[0].dtype == theirs[0].dtype == dense_0.compute_dtype
        assert len(ours) == 2 + 2 * len(layers)
        for a, b in zip(ours, theirs):
            assert a.shape == b.shape
            a, b = np.asarray(tf.cast(a, "float32")), np.asarray(tf.cast(b, "float32"))
            np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance * np.abs(b).max())


def test_blocks_take_the_fused_path_only_where_it_is_exact(monkeypatch):
    calls = []
    original = mlp.mlp
    monkeypatch.setattr(mlp, "mlp", lambda *a, **k: calls.append(1) or original(*a, **k))
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32"))
    block = TransformerBlock(num_heads=2, mlp_dim=16)
    block(x, training=True)
    assert len(calls) == 1
    tf.function(lambda x: block(x, training=True), jit_compile=True)(x)  # XLA: the layers
    assert len(calls) == 1
    dropping = TransformerBlock(num_heads=2, mlp_dim=16, dropout_rate=0.1)
    dropping(x, training=True)  # dropout between the two Dense: the layers
    assert len(calls) == 1
    dropping(x, training=False)
    assert len(calls) == 2


def test_bias_gradients_are_products_with_ones_not_sums_over_rows():
    # `normalization.column_sum` (TensorFlow's `Sum` over rows is slow); `benchmarks/ab.py --change column_sums`
    # restores the sums, and must, for its timing to mean anything.
    import contextlib
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import ab

    dense_0, dense_1 = dense_pair()
    x = tf.constant(np.random.default_rng(1).normal(size=(6, 8)).astype("float32"))
    variables = dense_0.trainable_variables + dense_1.trainable_variables

    def op_types(context):
        with context:
            @tf.function
            def step(x):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(mlp.mlp(dense_0, dense_1, x))
                return tape.gradient(loss, variables)

            graph = step.get_concrete_function(x).graph
        return [op.type for op in graph.get_operations()] + [
            op.type for function in graph._functions.values() for op in function.graph.get_operations()]

    now, before = op_types(contextlib.nullcontext()), op_types(ab.undone("column_sums"))
    assert before.count("Sum") - now.count("Sum") == 2  # the two biases'
    assert now.count("MatMul") - before.count("MatMul") == 2
