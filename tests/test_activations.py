"""keras_vit's GELU: values and written-out derivatives against scipy and TensorFlow's own autodiff."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import erf

from keras_vit.activations import gelu

X = np.linspace(-8, 8, 4001).astype("float32")


def reference(x, approximate):
    x = x.astype("float64")
    if approximate:
        t = np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))
        return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x**2)
    cdf = 0.5 * (1 + erf(x / np.sqrt(2)))
    return x * cdf, cdf + x * np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi)


def value_and_gradient(function, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = function(x)
    return y, tape.gradient(y, x)


@pytest.mark.parametrize("approximate", [False, True])
def test_values_and_derivatives_match_the_formulas(approximate):
    y, dy = value_and_gradient(lambda x: gelu(x, approximate), X)
    expected_y, expected_dy = reference(X, approximate)
    # float32 tanh reaches -1 near x = -5, where the true slope is still -4e-6: hence 5e-6.
    np.testing.assert_allclose(y, expected_y, atol=2e-6)
    np.testing.assert_allclose(dy, expected_dy, atol=5e-6)
    # and against what TensorFlow differentiates out of keras.activations.gelu
    keras_y, keras_dy = value_and_gradient(lambda x: keras.activations.gelu(x, approximate=approximate), X)
    np.testing.assert_allclose(y, keras_y, atol=2e-6)
    np.testing.assert_allclose(dy, keras_dy, atol=5e-6)


@pytest.mark.parametrize("approximate", [False, True])
def test_bfloat16_in_bfloat16_out_with_float32_inside(approximate):
    y, dy = value_and_gradient(lambda x: gelu(x, approximate), tf.cast(X, "bfloat16"))
    assert y.dtype == tf.bfloat16 and dy.dtype == tf.bfloat16
    bf16_x = tf.cast(tf.cast(X, "bfloat16"), "float32").numpy()
    expected_y, expected_dy = reference(bf16_x, approximate)
    # one bfloat16 rounding of the result (8 bits of mantissa), no more
    np.testing.assert_allclose(tf.cast(y, "float32"), expected_y, rtol=2**-8, atol=5e-6)
    np.testing.assert_allclose(tf.cast(dy, "float32"), expected_dy, rtol=2**-8, atol=5e-6)


def test_gradient_flows_through_a_jit_compiled_function():
    dense = keras.layers.Dense(8)
    dense.build((None, 4))
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 4)).astype("float32"))

    @tf.function(jit_compile=True)
    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(gelu(dense(x)) ** 2)
        return tape.gradient(loss, dense.trainable_variables)

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(keras.activations.gelu(dense(x), approximate=False) ** 2)
    expected = tape.gradient(loss, dense.trainable_variables)
    for got, want in zip(grads(x), expected):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_xla_compiling_is_seen_while_tracing_for_xla_only():
    from keras_vit.compiling import xla_compiling

    seen = {}

    def probe(name):
        def function(x):
            seen[name] = xla_compiling()
            return x
        return function

    tf.function(probe("jit"), jit_compile=True)(tf.constant(1.0))
    tf.function(probe("graph"))(tf.constant(1.0))
    probe("eager")(tf.constant(1.0))
    assert seen == {"jit": True, "graph": False, "eager": False}
