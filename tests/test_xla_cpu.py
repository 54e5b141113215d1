"""keras_vit.xla_cpu: XLA's matrix products on the CPU handed to YNNPACK through XLA_FLAGS."""

import os
import subprocess
import sys

from keras_vit import xla_cpu
from test_resume import train


def test_the_flag_is_added_once_and_never_over_the_users_choice():
    env = {}
    assert xla_cpu.use_ynnpack_dots(env) and env["XLA_FLAGS"] == xla_cpu.YNNPACK_DOTS
    assert not xla_cpu.use_ynnpack_dots(env) and env["XLA_FLAGS"] == xla_cpu.YNNPACK_DOTS
    env = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
    assert xla_cpu.use_ynnpack_dots(env)
    assert env["XLA_FLAGS"].split() == ["--xla_cpu_enable_fast_math=false", xla_cpu.YNNPACK_DOTS]
    keep_xlas_own = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
    assert not xla_cpu.use_ynnpack_dots(keep_xlas_own)
    assert keep_xlas_own["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="


# Asked for after TensorFlow's import and an eager product, before XLA's first compilation (as the
# training commands do); an XLA product of two matrices against NumPy's.
PROBE = """
import numpy as np
import tensorflow as tf
from keras_vit import xla_cpu

rng = np.random.default_rng(0)
a = rng.normal(size=(200, 192)).astype("float32")
b = rng.normal(size=(192, 768)).astype("float32")
tf.matmul(a[:2], b)
assert xla_cpu.use_ynnpack_dots()
product = tf.function(lambda x, y: tf.matmul(x, y), jit_compile=True)(a, b).numpy()
np.testing.assert_allclose(product, a.astype("float64") @ b, rtol=1e-4, atol=1e-4)
"""


def test_tensorflow_compiles_with_the_flag_and_the_product_is_exact(tmp_path):
    env = dict(os.environ, XLA_FLAGS=f"--xla_dump_to={tmp_path}", CUDA_VISIBLE_DEVICES="")
    # An XLA_FLAGS name or value TensorFlow does not know stops the process, which fails here.
    subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, timeout=300)
    options = [p.read_text() for p in tmp_path.iterdir() if p.name.endswith(".debug_options")]
    assert options, sorted(p.name for p in tmp_path.iterdir())
    for text in options:
        assert "xla_cpu_experimental_ynn_fusion_type: LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT" in text, text


def test_training_asks_for_it_unless_told_not_to(tmp_path, monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    train(tmp_path / "off", "--noxla_ynnpack")
    assert "XLA_FLAGS" not in os.environ
    train(tmp_path / "on")
    assert os.environ["XLA_FLAGS"] == xla_cpu.YNNPACK_DOTS
