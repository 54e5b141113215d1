"""The layers and model on the JAX and PyTorch backends of Keras 3.

Each backend runs in a fresh subprocess (the backend is fixed at import),
loads weights saved here with TensorFlow, and must give the same outputs.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_vit

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    import keras_vit

    weights, images, out = sys.argv[1:4]
    model = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 40, 3), classes=5,
                          representation_size=16, drop_path_rate=0.1, dropout_rate=0.1)
    model.load_weights(weights)
    x = np.load(images)
    probs = keras.ops.convert_to_numpy(model(x, training=False))
    attention = keras_vit.forward_intermediates(model, x)["attention"][1]
    # One training step must run (gradients through every layer on this backend).
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    loss = model.train_on_batch(x, np.arange(len(x)) % 5)
    np.savez(out, probs=probs, attention=keras.ops.convert_to_numpy(attention))
    print(json.dumps({"backend": keras.backend.backend(), "loss": float(loss)}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_matches_tensorflow(backend, tmp_path):
    # Imported only in the subprocess: torch beside TensorFlow in one process is fragile.
    assert importlib.util.find_spec(backend) is not None, f"{backend} is in the `test` extra"
    model = keras_vit.ViT(
        2, 32, 64, 2, 8, input_shape=(32, 40, 3), classes=5,
        representation_size=16, drop_path_rate=0.1, dropout_rate=0.1,
    )
    head = model.get_layer("head")
    head.kernel.assign(np.random.default_rng(0).normal(size=head.kernel.shape))
    model.save_weights(tmp_path / "w.weights.h5")
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 40, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "w.weights.h5"), str(tmp_path / "x.npy"), str(tmp_path / "out.npz")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["backend"] == backend and np.isfinite(info["loss"])
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["probs"], keras.ops.convert_to_numpy(model(x)), atol=1e-5)
    expected_attention = keras_vit.forward_intermediates(model, x)["attention"][1]
    np.testing.assert_allclose(out["attention"], keras.ops.convert_to_numpy(expected_attention), atol=1e-5)
