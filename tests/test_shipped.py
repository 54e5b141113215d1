"""The model shipped in weights/: registered, checked by its sha256, usable offline by name."""

import json
import os
import shutil

import numpy as np
import pytest

from keras_vit import checkpoints, cli, data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_predict_by_name_prints_fashion_mnist_classes(capsys):
    photo = os.path.join(ROOT, "docs", "images", "test0_ankle-boot.png")
    assert cli.main(["keras-vit", "predict", photo, "--weights", "vit_fashion_mnist", "--top", "3", "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)["results"][0]["predictions"]
    assert [p["label"] for p in predictions][0] == "Ankle boot"
    assert all(p["label"] in data.FASHION_MNIST_CLASSES for p in predictions)


@pytest.mark.slow
def test_shipped_model_has_its_recorded_test_accuracy():
    import keras

    entry = checkpoints.SHIPPED["vit_fashion_mnist"]
    model = keras.models.load_model(checkpoints.shipped_path("vit_fashion_mnist"))
    assert model.count_params() == entry["parameters"]
    images, labels = data.load_fashion_mnist("test")
    predicted = model.predict(np.repeat(images, 3, axis=-1).astype("float32"), batch_size=1000, verbose=0).argmax(-1)
    assert np.mean(predicted == labels) == pytest.approx(entry["test_accuracy"], abs=1e-4)


def test_a_changed_or_missing_file_is_refused(tmp_path, monkeypatch, capsys):
    source = checkpoints.shipped_path("vit_fashion_mnist")
    changed = tmp_path / os.path.basename(source)
    shutil.copy(source, changed)
    with open(changed, "ab") as f:
        f.write(b"\0")
    monkeypatch.setenv("KERAS_VIT_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="was changed: sha256"):
        checkpoints.shipped_path("vit_fashion_mnist")
    monkeypatch.setenv("KERAS_VIT_WEIGHTS_DIR", str(tmp_path / "nowhere"))
    photo = os.path.join(ROOT, "docs", "images", "test0_ankle-boot.png")
    assert cli.main(["keras-vit", "predict", photo, "--weights", "vit_fashion_mnist"]) == 1
    assert "KERAS_VIT_WEIGHTS_DIR" in capsys.readouterr().err
