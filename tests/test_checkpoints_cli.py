"""`keras-vit convert`, weights/convert.py and the catalogue table of weights/README.md."""

import os
import sys

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import cli
from test_checkpoints import numpy_vit, official_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def ti16_npz(tmp_path_factory):
    """A random Ti/16 checkpoint at 224 in the official layout, with a 10-class head."""
    params = official_params(np.random.default_rng(0), grid=14, layers=12, width=192, mlp=768, heads=3,
                             patch=16, classes=10)
    path = tmp_path_factory.mktemp("ckpt") / "Ti_16.npz"
    np.savez(path, **params)
    return str(path), params


def test_convert_writes_weights_and_a_resized_keras_model(ti16_npz, tmp_path, capsys):
    path, params = ti16_npz
    out_h5 = str(tmp_path / "ti16.weights.h5")
    assert cli.main(["keras-vit", "convert", path, out_h5]) == 0  # variant and size read off the file
    assert "vit_ti16, input (224, 224, 3), output (10,)" in capsys.readouterr().out
    images = np.random.default_rng(1).uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    model = keras_vit.ViT_Ti16(weights=None, classes=10, classifier_activation=None, gelu_approximate=True)
    model.load_weights(out_h5)  # a plain Keras weights file of the same architecture
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images)), numpy_vit(params, images, patch=16), atol=1e-4)

    out_keras = str(tmp_path / "ti16_384.keras")
    assert cli.main(["keras-vit", "convert", path, out_keras, "--variant", "Ti/16", "--image_size", "384"]) == 0
    assert "resized (1, 197, 192) -> (1, 577, 192) (official)" in capsys.readouterr().out
    loaded = keras.models.load_model(out_keras, safe_mode=True)
    assert loaded.input_shape == (None, 384, 384, 3) and loaded.output_shape == (None, 10)
    assert loaded.get_layer("encoderblock_0").gelu_approximate is True
    assert sorted(os.listdir(tmp_path)) == ["ti16.weights.h5", "ti16_384.keras"]  # no temporary files left


def test_convert_errors_leave_no_output(ti16_npz, tmp_path, capsys):
    path, _ = ti16_npz
    assert cli.main(["keras-vit", "convert", path, str(tmp_path / "out.h5")]) == 1
    assert "OUTPUT must end with .weights.h5 or .keras" in capsys.readouterr().err
    assert cli.main(["keras-vit", "convert", path, str(tmp_path / "out.keras"), "--variant", "B/16"]) == 1
    assert "expected shape (16, 16, 3, 768), found (16, 16, 3, 192)" in capsys.readouterr().err
    assert cli.main(["keras-vit", "convert", str(tmp_path / "none.npz"), str(tmp_path / "o.keras")]) == 1
    assert os.listdir(tmp_path) == []
    assert cli.main(["keras-vit", "convert", path]) == 2


def test_weights_readme_table_matches_the_catalogue(capsys):
    assert cli.main(["keras-vit", "convert", "--list"]) == 0
    table = capsys.readouterr().out
    assert "| [`vit_b16_augreg_in21k_ft_in1k_224`](https://storage.googleapis.com/vit_models/augreg/" in table
    sys.path.insert(0, os.path.join(ROOT, "weights"))
    try:
        import convert as weights_convert
    finally:
        sys.path.pop(0)
    with open(os.path.join(ROOT, "weights", "README.md")) as handle:
        text = handle.read()
    assert weights_convert.render_readme(text) == text, "run: python weights/convert.py --readme"
    assert table in text
