"""SavedModel export for TF Serving: signatures, parity, bad images, atomic writes."""

import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_vit
from keras_vit import export as vit_export
from keras_vit import images as vit_images

NAMES = ["cat", "dog", "fish"]


def tiny(classes=3, **kwargs):
    model = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3), classes=classes, **kwargs)
    # The head is zero-initialised; random weights make the outputs differ per image.
    rng = np.random.default_rng(0)
    for weight in model.get_layer("head").weights:
        weight.assign(rng.normal(0, 0.5, weight.shape).astype("float32"))
    return model


def encode(array, fmt, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return vit_export.export_saved_model(model, tmp_path_factory.mktemp("serving") / "vit", class_names=NAMES, top_k=2)


def rgb(height=40, width=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


_FRESH_PROCESS = """
import json, sys
import numpy as np, tensorflow as tf
path, images, blobs = sys.argv[1], np.load(sys.argv[2]), json.load(open(sys.argv[3]))
loaded = tf.saved_model.load(path)
out = {}
out["probabilities"] = loaded.signatures["serving_default"](images=tf.constant(images))["probabilities"].numpy()
out["features"] = loaded.signatures["features"](images=tf.constant(images))["features"].numpy()
raw = [bytes.fromhex(b) for b in blobs]
for key, value in loaded.signatures["serve_bytes"](image_bytes=tf.constant(raw)).items():
    value = value.numpy()
    out["bytes_" + key] = value.astype("S") if value.dtype == object else value
np.savez(sys.argv[4], **out)
"""


def test_every_signature_in_a_fresh_process_matches_keras(model, exported, tmp_path):
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    png = encode(rgb(), "PNG")
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "blobs.json").write_text(json.dumps([png.hex(), b"junk".hex()]))
    (tmp_path / "run.py").write_text(_FRESH_PROCESS)
    subprocess.run(
        [sys.executable, str(tmp_path / "run.py"), exported, str(tmp_path / "images.npy"),
         str(tmp_path / "blobs.json"), str(tmp_path / "out.npz")],
        check=True, capture_output=True,
    )
    out = np.load(tmp_path / "out.npz")
    assert np.max(np.abs(out["probabilities"] - model.predict(images, verbose=0))) <= 1e-5
    features = vit_export.feature_model(model).predict(images, verbose=0)
    assert out["features"].shape == (4, 32)
    assert np.max(np.abs(out["features"] - features)) <= 1e-5

    expected = model.predict(vit_images.load_image(png, 32)[None], verbose=0)[0]
    best = np.argsort(-expected)[:2]
    np.testing.assert_array_equal(out["bytes_classes"][0], best)
    np.testing.assert_allclose(out["bytes_scores"][0], expected[best], atol=1e-5)
    assert [s.decode() for s in out["bytes_labels"][0]] == [NAMES[i] for i in best]
    assert out["bytes_error"][0] == b""
    assert b"not a JPEG, PNG, GIF or BMP image" in out["bytes_error"][1]
    np.testing.assert_array_equal(out["bytes_classes"][1], [-1, -1])


def test_saved_model_cli_lists_the_signatures(exported):
    shown = subprocess.run(
        ["saved_model_cli", "show", "--dir", exported, "--tag_set", "serve"],
        check=True, capture_output=True, text=True,
    ).stdout
    for name in vit_export.SIGNATURES:
        assert f'"{name}"' in shown
    assert os.path.basename(exported) == "1"
    assert open(os.path.join(exported, "assets", "labels.txt")).read().split("\n")[:3] == NAMES


def test_serve_bytes_survives_every_kind_of_bad_image(model, exported):
    loaded = tf.saved_model.load(exported)
    picture = rgb(seed=2)
    jpeg = encode(picture, "JPEG")
    gray = picture[..., 0]
    huge = io.BytesIO()
    Image.new("L", (7000, 7000)).save(huge, "PNG")  # 49 MP > MAX_PIXELS, but a small file
    batch = [
        jpeg,
        b"",
        b"this is not an image",
        jpeg[: len(jpeg) // 2],
        encode(gray, "PNG"),
        encode(np.dstack([picture, picture[..., :1]]), "PNG", "RGBA"),
        huge.getvalue(),
        encode(picture, "PNG"),
    ]
    out = {k: v.numpy() for k, v in loaded.signatures["serve_bytes"](image_bytes=tf.constant(batch)).items()}
    errors = [e.decode() for e in out["error"]]
    assert errors[0] == errors[4] == errors[5] == errors[7] == ""
    assert errors[1] == "empty image (0 bytes)"
    assert "not a JPEG, PNG, GIF or BMP image" in errors[2]
    assert "corrupt or truncated" in errors[3]
    assert errors[6] == "image too large: 7000x7000 pixels is more than max_pixels=40,000,000"
    for i in (1, 2, 3, 6):
        np.testing.assert_array_equal(out["classes"][i], [-1, -1])
        assert list(out["labels"][i]) == [b"", b""]
    # Good images get what the Python path gives.
    for i in (0, 4, 5, 7):
        expected = model.predict(vit_images.load_image(batch[i], 32)[None], verbose=0)[0]
        np.testing.assert_array_equal(out["classes"][i], np.argsort(-expected)[:2])


def test_serve_bytes_with_only_bad_images_and_with_none(exported):
    serve = tf.saved_model.load(exported).signatures["serve_bytes"]
    out = serve(image_bytes=tf.constant([b"", b"x"]))
    assert out["classes"].shape == (2, 2) and np.all(out["classes"].numpy() == -1)
    out = serve(image_bytes=tf.constant([], tf.string))
    assert out["classes"].shape == (0, 2) and out["error"].shape == (0,)


def test_logits_model_serves_probabilities_and_imagenet_names(tmp_path):
    model = tiny(classes=1000, classifier_activation=None)
    path = vit_export.export_saved_model(model, tmp_path / "m", version=3, top_k=1)
    assert path.endswith(os.path.join("m", "3"))
    loaded = tf.saved_model.load(path)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    probs = loaded.signatures["serving_default"](images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(probs, keras.ops.softmax(model(images)).numpy(), atol=1e-5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert vit_export.load_saved_model_labels(path)[281] == "tabby"


def test_export_refuses_an_existing_version_and_leaves_nothing_half_written(model, tmp_path, monkeypatch):
    base = tmp_path / "vit"
    first = vit_export.export_saved_model(model, base, class_names=NAMES)
    with pytest.raises(FileExistsError, match="already exists"):
        vit_export.export_saved_model(model, base, class_names=NAMES)
    stamp = os.path.getmtime(os.path.join(first, "saved_model.pb"))
    vit_export.export_saved_model(model, base, class_names=NAMES, overwrite=True)
    assert os.listdir(base) == ["1"] and os.path.getmtime(os.path.join(first, "saved_model.pb")) >= stamp

    def broken_save(module, path, signatures=None):
        os.makedirs(os.path.join(path, "variables"))
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        vit_export.export_saved_model(model, base, version=2, class_names=NAMES)
    assert os.listdir(base) == ["1"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(version=0), "positive int"),
        (dict(class_names=["a", "b"]), "one name per class"),
        (dict(top_k=0), "top_k"),
    ],
)
def test_export_validates_its_arguments(model, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        vit_export.export_saved_model(model, tmp_path / "m", **kwargs)
    assert not os.path.exists(tmp_path / "m")


def test_export_needs_a_classifier(tmp_path):
    headless = keras_vit.ViT(1, 8, 16, 1, 8, input_shape=(8, 8, 3), include_top=False)
    with pytest.raises(ValueError, match=r"\(batch, classes\)"):
        vit_export.export_saved_model(headless, tmp_path / "m")


def test_images_are_converted_as_at_evaluation():
    picture = rgb(seed=3)
    gray = vit_images.load_image(encode(picture[..., 0], "PNG"), (20, 25))
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    np.testing.assert_allclose(gray[..., 0], tf.image.resize(picture[..., :1].astype("float32"), (20, 25))[..., 0])
    rgba = vit_images.load_image(encode(np.dstack([picture, np.zeros_like(picture[..., :1])]), "PNG", "RGBA"), (20, 25))
    np.testing.assert_allclose(rgba, vit_images.load_image(encode(picture, "PNG"), (20, 25)))
    # One-channel models (e.g. Fashion-MNIST's): grayscale kept exactly, colour converted, GIF too.
    exact = vit_images.load_image(encode(picture[..., 0], "PNG"), picture.shape[:2], channels=1)
    np.testing.assert_array_equal(exact[..., 0], picture[..., 0])
    for fmt in ("PNG", "GIF", "JPEG"):
        assert vit_images.load_image(encode(picture, fmt), (20, 25), channels=1).shape == (20, 25, 1)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty image"),
        (b"<html>not an image</html>", "not a JPEG, PNG, GIF or BMP image"),
        ("truncated", "corrupt or truncated"),
        ("huge", "image too large: 7000x8000"),
    ],
)
def test_load_image_errors_name_the_problem(data, message, tmp_path):
    if data == "truncated":
        jpeg = encode(rgb(), "JPEG")
        data = jpeg[: len(jpeg) // 2]
    elif data == "huge":
        buffer = io.BytesIO()
        Image.new("L", (8000, 7000)).save(buffer, "PNG")
        data = buffer.getvalue()
    path = tmp_path / "input.png"
    path.write_bytes(data)
    with pytest.raises(vit_images.ImageError, match=message) as error:
        vit_images.load_image(path, 32)
    assert "input.png" in str(error.value)
    with pytest.raises(vit_images.ImageError, match="No such image file"):
        vit_images.load_image(tmp_path / "missing.jpg", 32)
