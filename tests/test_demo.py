"""The README's main job, `keras-vit demo`, end to end on a small slice of the real Fashion-MNIST files."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_vit import cli, data, litert


@pytest.mark.slow
def test_demo_trains_evaluates_saves_exports_and_predicts(tmp_path, capsys):
    out = tmp_path / "demo"
    status = cli.main([
        "keras-vit", "demo", f"--output_dir={out}", "--epochs=3", "--max_train_examples=8192", "--warmup_epochs=0.5",
        "--max_eval_examples=1000", "--num_layers=2", "--hidden_size=32", "--mlp_dim=64", "--verbose=0",
        "--predict=3",
    ])
    assert status == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["test_images"] == 1000
    assert summary["test_accuracy"] > 0.5, summary  # 10 classes: chance is 0.1
    assert f"test accuracy {summary['test_accuracy']:.2%}" in printed
    assert "test[0]:" in printed

    # The saved model gives the accuracy the demo reported, on the same test images.
    images, labels = data.load_fashion_mnist("test")
    rgb = np.repeat(images[:1000], 3, axis=-1).astype("float32")
    model = keras.models.load_model(out / "model.keras")
    assert model.get_layer("resnet").num_layers == (1,)  # the demo's hybrid stem
    accuracy = np.mean(model.predict(rgb, verbose=0).argmax(-1) == labels[:1000])
    assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert (out / "model.keras.labels.txt").read_text().split("\n")[:10] == list(data.FASHION_MNIST_CLASSES)

    # The exports serve the same predictions.
    serving = tf.saved_model.load(str(out / "saved_model" / "1")).signatures["serving_default"]
    served = next(iter(serving(tf.constant(rgb[:16])).values())).numpy()
    np.testing.assert_allclose(served, model.predict(rgb[:16], verbose=0), atol=1e-5)
    lite = litert.LiteRTModel(str(out / "model.tflite"))(rgb[:16])
    np.testing.assert_allclose(lite, served, atol=1e-4)
    for figure in ("training_curves.png", "confusion_matrix.png"):
        with Image.open(out / figure) as image:
            assert image.format == "PNG" and min(image.size) > 200
    assert not [n for n in os.listdir(out) if ".tmp" in n]

    # `keras-vit predict` on a real test image prints Fashion-MNIST names.
    photo = tmp_path / "boot.png"
    Image.fromarray(images[0, :, :, 0]).save(photo)
    assert cli.main(["keras-vit", "predict", str(photo), "--weights", str(out / "model.keras"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["predictions"][0]["label"] in data.FASHION_MNIST_CLASSES
