"""`keras-vit explain`: the attention overlays and model figures, from a saved model and image files."""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

import keras_vit
from keras_vit import cli, data, images, litert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["circle", "square", "stripe"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, save_tiny_classifier):
    root = tmp_path_factory.mktemp("explain")
    save_tiny_classifier(root / "tiny.keras", NAMES)
    rng = np.random.default_rng(1)
    for index in range(2):
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"photo{index}.png")
    return root


def assert_png(path, min_side=100):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= min_side


def test_explain_writes_every_figure_and_the_predictions(workspace):
    out = workspace / "out"
    photos = [str(workspace / "photo0.png"), str(workspace / "photo1.png")]
    status = cli.main(["keras-vit", "explain", *photos, "--weights", str(workspace / "tiny.keras"), "--out", str(out)])
    assert status == 0
    report = json.loads((out / "explain.json").read_text())
    model = keras.models.load_model(workspace / "tiny.keras")
    expected = model.predict(images.load_images(photos, 32), verbose=0).argmax(-1)
    assert [entry["prediction"] for entry in report["images"]] == [NAMES[i] for i in expected]
    for entry in report["images"]:
        assert_png(entry["attention"])
        assert_png(entry["heads"])
    assert sorted(report["model"]) == ["attention_distance", "embedding_filters", "position_embedding_similarity"]
    for path in report["model"].values():
        assert_png(path)
    assert not [name for name in os.listdir(out) if name.startswith(".tmp") or name.endswith(".tmp")]


def test_explain_a_feature_extractor_without_class_token(tmp_path):
    model = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3), include_top=False, classifier="gap", pooling="avg")
    photos = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    from keras_vit.cli_explain import explain

    report = explain(model, photos, ["a", "b"], str(tmp_path / "out"), components=4)
    assert all("prediction" not in entry for entry in report["images"])
    for entry in report["images"]:
        assert_png(entry["attention"])
    assert_png(report["model"]["embedding_filters"], min_side=50)


def test_bad_input_fails_clearly_and_writes_nothing(workspace, tmp_path, capsys):
    model_file = str(workspace / "tiny.keras")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    assert cli.main(["keras-vit", "explain", str(broken), "--weights", model_file, "--out", str(out)]) == 1
    assert "broken.png" in capsys.readouterr().err
    assert not out.exists()

    tflite = str(tmp_path / "tiny.tflite")
    litert.export_tflite(keras_vit.ViT(1, 8, 16, 1, 8, input_shape=(8, 8, 3), classes=2), tflite)
    assert cli.main(["keras-vit", "explain", str(workspace / "photo0.png"), "--weights", tflite, "--out", str(out)]) == 1
    assert "needs a Keras model" in capsys.readouterr().err
    assert not out.exists()

    assert cli.main(["keras-vit", "explain", str(workspace / "photo0.png"), "--weights", model_file]) == 1
    assert "--out" in capsys.readouterr().err


def test_shipped_model_recognises_the_documented_images(tmp_path):
    """The README's figures: the shipped Fashion-MNIST model on the real test images under docs/images."""
    folder = os.path.join(ROOT, "docs", "images")
    photos = sorted(os.path.join(folder, name) for name in os.listdir(folder))
    assert len(photos) == 6
    weights = os.path.join(ROOT, "weights", "vit_fashion_mnist.keras")
    assert cli.main(["keras-vit", "explain", *photos, "--weights", weights, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "explain.json").read_text())
    # File names carry the true class: docs/images/test<index>_<class>.png
    slug = {name.lower().replace("/", "-").replace(" ", "-"): name for name in data.FASHION_MNIST_CLASSES}
    truth = [slug[os.path.basename(p).split("_", 1)[1][:-4]] for p in photos]
    assert [entry["prediction"] for entry in report["images"]] == truth


def test_explain_a_hybrid_skips_the_filters_it_does_not_have(tmp_path):
    model = keras_vit.ViT(2, 32, 64, 2, 1, input_shape=(28, 28, 3), resnet=dict(num_layers=(1,), width=32), classes=3)
    photos = np.random.default_rng(2).uniform(0, 255, (1, 28, 28, 3)).astype("float32")
    from keras_vit.cli_explain import explain

    report = explain(model, photos, ["a"], str(tmp_path / "out"), class_names=NAMES)
    assert report["model"]["embedding_filters"] is None
    assert not (tmp_path / "out" / "embedding_filters.png").exists()
    for name in ("attention_distance", "position_embedding_similarity"):
        assert_png(report["model"][name])
    assert_png(report["images"][0]["attention"])
