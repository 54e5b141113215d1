"""keras_vit.mlp: the Transformer block's MLP with its backward pass written out.

Values and gradients against the two Dense layers and the GELU called in turn (float32: rtol 1e-5,
the same products in another order; bfloat16: the same casts, so 2e-2), which path the blocks take,
and the memory it is there to save, measured by TensorFlow's own allocator.
"""

import json
import os
import subprocess
import sys
import textwrap

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


@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "tanh"])
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_values_and_gradients_match_the_layers(approximate, policy):
    dense_0, dense_1 = dense_pair(dtype=keras.DTypePolicy(policy))
    x = np.random.default_rng(1).normal(0, 2, (3, 5, 8)).astype("float32")

    def layers(x):
        return dense_1(activations.gelu(dense_0(x), approximate=approximate))

    fused = values_and_gradients(lambda x: mlp.mlp(dense_0, dense_1, x, approximate), x, (dense_0, dense_1))
    plain = values_and_gradients(layers, x, (dense_0, dense_1))
    tolerance = 1e-5 if policy == "float32" else 2e-2
    assert fused[0].dtype == plain[0].dtype == dense_0.compute_dtype
    for a, b in zip(fused, plain):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(tf.cast(a, "float32")), np.asarray(tf.cast(b, "float32")),
                                   rtol=tolerance, atol=tolerance * np.abs(np.asarray(tf.cast(b, "float32"))).max())


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


PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, keras, tensorflow as tf
    import keras_vit
    from keras_vit import mlp

    if sys.argv[1] == "layers":
        mlp.can_fuse = lambda *layers: False
    model = keras_vit.ViT(4, 64, 256, 2, 4, input_shape=(64, 64, 3), classes=10)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=False)
    x = np.random.default_rng(0).uniform(0, 255, (16, 64, 64, 3)).astype("float32")
    model.train_on_batch(x, np.arange(16) % 10)
    print(json.dumps(tf.config.experimental.get_memory_info("CPU:0")))
    """
)


def test_the_gelu_output_is_not_kept_for_the_backward_pass(tmp_path):
    """Peak tensor memory of a training step, from TensorFlow's allocator, each way in its own process:
    the fused MLP must save at least 80% of one (tokens x mlp_dim) float32 tensor per block."""
    script = tmp_path / "peak.py"
    script.write_text(PEAK_SCRIPT)
    env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    peak = {}
    for way in ("fused", "layers"):
        result = subprocess.run([sys.executable, str(script), way], env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        peak[way] = json.loads(result.stdout.strip().splitlines()[-1])["peak"]
    hidden_tensor = 16 * (16 * 16 + 1) * 256 * 4  # batch x tokens x mlp_dim float32
    assert peak["layers"] - peak["fused"] >= 0.8 * 4 * hidden_tensor, peak
