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
    images, labels = data.eval_arrays(data.load("fashion_mnist", "test")[0], model.input.shape[1:3])
    predicted = model.predict(images, batch_size=1000, verbose=0).argmax(-1)
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


def _weights_ship():
    import importlib.util

    spec = importlib.util.spec_from_file_location("weights_ship", os.path.join(ROOT, "weights", "ship.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("size", [28, 56])
def test_ship_writes_the_model_without_optimizer_and_reports_what_it_measured(tmp_path, size):
    import keras
    import tensorflow as tf

    import keras_vit
    from keras_vit.download import sha256_of

    model = keras_vit.ViT(1, 32, 64, 2, 7, input_shape=(size, size, 3), classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    images, labels = data.load_fashion_mnist("test")
    # A model trained at 56x56 is scored on the test images resized as evaluation resizes them.
    images = tf.image.resize(np.repeat(images, 3, axis=-1).astype("float32"), (size, size), "bilinear").numpy()
    model.fit(images[:64], labels[:64], epochs=1, verbose=0)  # builds the optimizer's slots
    model.save(tmp_path / "run.keras")
    report = _weights_ship().ship(str(tmp_path / "run.keras"), str(tmp_path / "out" / "shipped.keras"))
    path = tmp_path / "out" / "shipped.keras"
    assert report["sha256"] == sha256_of(path) and report["parameters"] == model.count_params()
    assert os.path.getsize(path) < os.path.getsize(tmp_path / "run.keras") * 0.6  # no Adam moments
    shipped = keras.models.load_model(path)
    assert getattr(shipped, "optimizer", None) is None
    expected = np.mean(shipped.predict(images, batch_size=1000, verbose=0).argmax(-1) == labels)
    assert report["test_accuracy"] == pytest.approx(expected, abs=1e-4)
    assert (tmp_path / "out" / "shipped.keras.labels.txt").read_text().splitlines() == list(data.FASHION_MNIST_CLASSES)
    assert sorted(os.listdir(tmp_path / "out")) == ["shipped.keras", "shipped.keras.labels.txt"]
    three = keras_vit.ViT(1, 32, 64, 2, 7, input_shape=(28, 28, 3), classes=3)
    three.save(tmp_path / "three.keras")
    with pytest.raises(ValueError, match="Expected a 10-class Fashion-MNIST model"):
        _weights_ship().ship(str(tmp_path / "three.keras"), str(tmp_path / "never" / "x.keras"))
    assert not (tmp_path / "never").exists()
