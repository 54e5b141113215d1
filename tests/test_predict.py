"""`keras-vit predict` and `keras-vit export`, run through the installed entry point."""

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import keras_vit
from keras_vit import export as vit_export
from keras_vit import images as vit_images
from keras_vit import litert

NAMES = ["T-shirt/top", "Trouser", "Pullover"]


def keras_vit_command(*args):
    entry = shutil.which("keras-vit")
    command = [entry] if entry else [sys.executable, "-m", "keras_vit.cli"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, save_tiny_classifier):
    root = tmp_path_factory.mktemp("predict")
    model = save_tiny_classifier(root / "tiny.keras", NAMES)
    rng = np.random.default_rng(0)
    vit_export.export_saved_model(model, root / "serving", class_names=NAMES)
    litert.export_tflite(model, str(root / "tiny.tflite"), class_names=NAMES)
    images = root / "images"
    images.mkdir()
    picture = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    Image.fromarray(picture).save(images / "photo.jpg")
    Image.fromarray(picture[..., 0]).save(images / "gray.png")
    Image.fromarray(np.dstack([picture, picture[..., :1]]), "RGBA").save(images / "rgba.png")
    (images / "empty.png").write_bytes(b"")
    (images / "notes.txt").write_text("not an image")
    jpeg = io.BytesIO()
    Image.fromarray(picture).save(jpeg, "JPEG")
    (images / "cut.jpg").write_bytes(jpeg.getvalue()[:300])
    return root, model


GOOD = ("photo.jpg", "gray.png", "rgba.png")
BAD = {"empty.png": "empty image", "notes.txt": "not a JPEG, PNG, GIF or BMP", "cut.jpg": "corrupt or truncated"}


def expected_top(model, path, top):
    probs = model.predict(vit_images.load_image(path, 32)[None], verbose=0)[0]
    best = np.argsort(-probs)[:top]
    return [NAMES[i] for i in best], probs[best]


@pytest.mark.parametrize("weights", ["tiny.keras", "serving", "tiny.tflite"])
def test_predict_json_for_every_model_kind_with_bad_images_reported(workspace, weights):
    root, model = workspace
    paths = [root / "images" / name for name in GOOD + tuple(BAD)]
    result = keras_vit_command("predict", *paths, "--weights", root / weights, "--top", 2, "--json")
    assert result.returncode == 1, result.stderr  # some images failed
    document = json.loads(result.stdout)
    by_name = {os.path.basename(r["image"]): r for r in document["results"]}
    for name in GOOD:
        labels, scores = expected_top(model, root / "images" / name, 2)
        got = by_name[name]
        assert got["error"] is None
        assert [p["label"] for p in got["predictions"]] == labels
        np.testing.assert_allclose([p["score"] for p in got["predictions"]], scores, atol=1e-4)
    for name, message in BAD.items():
        assert message in by_name[name]["error"] and by_name[name]["predictions"] == []
        assert name in result.stderr


def test_predict_text_output(workspace):
    root, model = workspace
    photo = root / "images" / "photo.jpg"
    result = keras_vit_command("predict", photo, "--weights", root / "tiny.keras", "--top", 3)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    labels, scores = expected_top(model, photo, 3)
    assert lines[0] == str(photo)
    assert lines[1].split(None, 1) == [f"{scores[0]:.4f}", f"{labels[0]} ({NAMES.index(labels[0])})"]
    assert len(lines) == 4


def test_predict_errors_are_clear(workspace):
    root, _ = workspace
    result = keras_vit_command("predict", root / "images" / "photo.jpg")
    assert result.returncode == 1 and "--weights is required" in result.stderr
    result = keras_vit_command("predict", root / "images" / "photo.jpg", "--weights", root / "missing.keras")
    assert result.returncode == 1 and "does not exist" in result.stderr and "missing.keras" in result.stderr


def test_export_command_writes_every_format_and_reports_size_and_latency(workspace):
    root, _ = workspace
    out = root / "exported"
    result = keras_vit_command(
        "export", "--weights", root / "tiny.keras", "--format", "saved_model,tflite",
        "--quantize", "float32,int8", "--calibration", root / "images", "--runs", 2, "--output", out,
    )
    assert result.returncode == 0, result.stderr
    rows = {tuple(line.split()[:2]): line.split() for line in result.stdout.splitlines()[1:] if line.split()}
    assert set(rows) >= {("keras", "-"), ("saved_model", "float32"), ("tflite", "float32"), ("tflite", "int8")}
    assert float(rows[("keras", "-")][3]) > 0  # latency in ms
    assert float(rows[("tflite", "float32")][4]) <= 1e-4  # max |diff| against Keras
    assert sorted(os.listdir(out)) == [
        "1", "vit_float32.tflite", "vit_float32.tflite.labels.txt", "vit_int8.tflite", "vit_int8.tflite.labels.txt",
    ]
    assert vit_export.read_labels(out / "vit_int8.tflite") == NAMES
    assert "skipping" in result.stderr and "notes.txt" in result.stderr  # unreadable calibration files


def test_export_command_rejects_bad_flags(workspace):
    root, _ = workspace
    result = keras_vit_command("export", "--format", "tflite", "--quantize", "int3", "--output", root / "x")
    assert result.returncode == 1 and "--quantize must be among" in result.stderr
    assert not os.path.exists(root / "x")
